"""The statistics of the regression gate: a margin-shifted Mann-Whitney U test and a bootstrap ratio interval.

Pure functions of two samples; :mod:`bench.track.compare` decides what they mean for a case.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats


def smallest_p_value(n: int, m: int) -> float:
    """The smallest one-sided p a Mann-Whitney U test can give for samples of n and m (complete separation)."""
    if n < 1 or m < 1:
        return 1.0
    return min(1.0, 1.0 / math.comb(n + m, n))


def margin_p_value(baseline: Sequence[float], current: Sequence[float], factor: float, alternative: str) -> float:
    """One-sided Mann-Whitney U p that current lies beyond ``factor`` x baseline (``alternative``: greater | less).

    Scaling the baseline by the threshold before ranking tests "changed by more than the threshold",
    not merely "changed": a true change at or below the threshold is flagged with probability at most alpha.
    """
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
