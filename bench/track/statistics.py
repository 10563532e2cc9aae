"""The statistics of the regression gate: a margin-shifted Mann-Whitney U test, how many repetitions it needs,
a bootstrap ratio interval, and the range rule on the medians of several baseline runs.

Pure functions of samples; :mod:`bench.track.compare` decides what they mean for a case.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence


def smallest_p_value(n: int, m: int) -> float:
    """The smallest one-sided p a Mann-Whitney U test can give for samples of n and m (complete separation)."""
    if n < 1 or m < 1:
        return 1.0
    return min(1.0, 1.0 / math.comb(n + m, n))


def repetitions_needed(alpha: float, other: int | None = None) -> int:
    """The fewest repetitions with which the one-sided Mann-Whitney U test can reach p < ``alpha``.

    With ``other`` None, the same count on both sides (n with 1 / C(2n, n) < alpha: 5 for alpha 0.01,
    since 4 + 4 gives at best 1/70 and 5 + 5 gives 1/252); else the count one side needs against
    ``other`` repetitions on the other.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha {alpha!r} must lie between 0 and 1")
    n = 1
    while smallest_p_value(n, n if other is None else other) >= alpha:
        n += 1
    return n


def margin_p_value(baseline: Sequence[float], current: Sequence[float], factor: float, alternative: str) -> float:
    """One-sided Mann-Whitney U p that current lies beyond ``factor`` x baseline (``alternative``: greater | less).

    Scaling the baseline by the threshold before ranking tests "changed by more than the threshold",
    not merely "changed": a true change at or below the threshold is flagged with probability at most alpha.
    """
    import numpy as np  # numpy and scipy load only where a test runs: the CLI starts without them
    from scipy import stats

    scaled = np.asarray(baseline, float) * factor
    p = float(stats.mannwhitneyu(np.asarray(current, float), scaled, alternative=alternative).pvalue)
    return 1.0 if math.isnan(p) else p


def ratio_interval(
    baseline: Sequence[float], current: Sequence[float], *, resamples: int, confidence: float, seed: int
) -> tuple[float | None, float | None]:
    """Percentile-bootstrap interval of median(current) / median(baseline) at ``confidence``.

    ``(None, None)`` when ``resamples`` is 0 or a side has fewer than two samples; a bound that is
    not finite is None too. ``seed`` makes the interval reproducible.
    """
    if resamples == 0 or len(baseline) < 2 or len(current) < 2:
        return None, None
    import numpy as np
    from scipy import stats

    def ratio(cur: np.ndarray, base: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.median(cur, axis=axis) / np.median(base, axis=axis)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate (all-equal) resamples are fine: the interval collapses
        res = stats.bootstrap(
            (np.asarray(current, float), np.asarray(baseline, float)),
            ratio,
            vectorized=True,
            paired=False,
            n_resamples=resamples,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return (low if math.isfinite(low) else None), (high if math.isfinite(high) else None)


def beyond_run_range(run_medians: Sequence[float], current_median: float, threshold: float) -> str | None:
    """``"up"`` / ``"down"`` when ``current_median`` lies outside the baseline run medians' range widened by
    ``threshold`` (above max x (1 + threshold), below min x (1 - threshold)), else None.

    Repetitions in one process share its state (clocks, memory layout, neighbours), so their spread
    understates how much a rerun moves; the spread of whole runs' medians does not. With k baseline runs
    and no true change, the current median is above all k run medians with probability 1 / (k + 1)
    (every order of k + 1 exchangeable runs is equally likely); it must also clear the largest by the
    threshold, so noise alone trips the rule far less often than that.
    """
    if not run_medians:
        raise ValueError("the range rule needs at least one baseline run median")
    if current_median > max(run_medians) * (1 + threshold):
        return "up"
    if current_median < min(run_medians) * (1 - threshold):
        return "down"
    return None
