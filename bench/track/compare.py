"""The regression gate: two sets of records in, a frozen case-by-case verdict out.

Speed (decode and prefill tokens/s, TTFT, E2E latency, encode latency) counts as changed only when
the median moved past a threshold (default 5%) *and* a one-sided Mann-Whitney U test on the raw
samples finds them beyond baseline x (1 +/- threshold) with p < alpha (default 0.01). So a true
change no larger than the threshold fails a metric with probability at most alpha, and a rerun
with no change far less often: noise alone rarely trips the gate, even over many cases. A
bootstrap confidence interval of the ratio of medians is reported beside it. Where the sample
counts cannot reach p < alpha at all (the smallest exact p is ``1 / C(n + m, n)``, so 3
repetitions against 3 never can, 4 against 5 can), the verdict is "insufficient samples".
Peak memory is near-deterministic: growth beyond ``max(1%, 32 MiB)`` fails.

Cases are matched on ``(device_name, spec.key)``. A case measured on another GPU is "not
comparable", a case in one run only is reported as such, and library versions that differ are
named on every affected case (or make it not comparable with ``require_same_versions``).
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from bench.errors import BadInputError
from bench.results.envelopes import PLATFORM_KEYS, envelope_for, version_differences
from bench.results.record import Record
from bench.units import MiB

# Metric verdicts.
REGRESSION = "regression"
IMPROVEMENT = "improvement"
UNCHANGED = "unchanged"
NOT_SIGNIFICANT = "not significant"
INSUFFICIENT = "insufficient samples"
NOT_MEASURED = "not measured"

# Case statuses.
COMPARED = "compared"
FAILED = "failed"  # measured in the baseline, oom/error/timeout now: a regression
FIXED = "fixed"  # failed in the baseline, measured now
BOTH_FAILED = "not measured"
SKIPPED = "skipped"  # skipped on one side: reported, not judged
ONLY_BASELINE = "only in baseline"
ONLY_CURRENT = "only in current"
NOT_COMPARABLE = "not comparable"

_FAILURE_STATUSES = ("oom", "error", "timeout")
# Record flags that say a measurement may be disturbed; named on the case so a reader can weigh it.
QUALITY_FLAGS = ("noisy", "throttled", "clock_changed", "shared_gpu")


@dataclass(frozen=True)
class Metric:
    """A compared quantity: its name in records, how it reads, its canonical unit and its good direction."""

    name: str
    label: str
    unit: str  # "tokens/s" | "s" | "bytes"
    higher_is_better: bool
    scenario: str = ""  # "generate" | "encode" | "" (every scenario)


SPEED_METRICS = (
    Metric("decode_tokens_per_s", "decode tokens/s", "tokens/s", True, "generate"),
    Metric("prefill_tokens_per_s", "prefill tokens/s", "tokens/s", True, "generate"),
    Metric("ttft_s", "TTFT", "s", False, "generate"),
    Metric("e2e_s", "E2E latency", "s", False, "generate"),
    Metric("latency_s", "encode latency", "s", False, "encode"),
)
MEMORY_METRIC = Metric("peak_memory_bytes", "peak memory", "bytes", False)
METRICS = {m.name: m for m in (*SPEED_METRICS, MEMORY_METRIC)}

# The peak that is judged, in order of preference; the first field both records carry is used.
MEMORY_FIELDS = ("nvml_process_peak_bytes", "peak_reserved_bytes", "host_peak_rss_bytes")


@dataclass(frozen=True)
class CompareSettings:
    """Thresholds of the gate. Relative values are fractions (0.05 = 5%)."""

    threshold: float = 0.05
    metric_thresholds: tuple[tuple[str, float], ...] = ()
    alpha: float = 0.01
    memory_tolerance: float = 0.01
    memory_tolerance_bytes: int = 32 * MiB
    require_same_versions: bool = False
    bootstrap_resamples: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise BadInputError(f"threshold {self.threshold!r} must be a fraction between 0 and 1, e.g. 0.05 for 5%")
        for name, value in self.metric_thresholds:
            if name not in METRICS or name == MEMORY_METRIC.name:
                speed = ", ".join(m.name for m in SPEED_METRICS)
                raise BadInputError(f"no speed metric named {name!r} for a threshold; choose one of: {speed}")
            if not 0 < value < 1:
                raise BadInputError(f"threshold {value!r} for {name} must be a fraction between 0 and 1")
        if not 0 < self.alpha < 0.5:
            raise BadInputError(f"alpha {self.alpha!r} must lie between 0 and 0.5 (0.01 is the default)")
        if not 0 <= self.memory_tolerance < 1:
            raise BadInputError(f"memory tolerance {self.memory_tolerance!r} must be a fraction between 0 and 1")
        if self.memory_tolerance_bytes < 0:
            raise BadInputError(f"memory tolerance {self.memory_tolerance_bytes!r} bytes must not be negative")
        if self.bootstrap_resamples < 0:
            raise BadInputError("bootstrap resamples must not be negative (0 turns the interval off)")

    def threshold_for(self, metric: str) -> float:
        """The relative threshold of one speed metric (its own if set, else the default)."""
        return dict(self.metric_thresholds).get(metric, self.threshold)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return {
            "threshold": self.threshold,
            "metric_thresholds": dict(self.metric_thresholds),
            "alpha": self.alpha,
            "memory_tolerance": self.memory_tolerance,
            "memory_tolerance_bytes": self.memory_tolerance_bytes,
            "require_same_versions": self.require_same_versions,
            "test": "one-sided Mann-Whitney U of current vs baseline x (1 +/- threshold) on raw samples",
            "interval": f"percentile bootstrap of the ratio of medians, {1 - self.alpha:.0%}",
        }


@dataclass(frozen=True)
class MetricComparison:
    """One metric of one case: medians, relative change, test result and verdict."""

    metric: str
    baseline: float
    current: float
    change: float  # current / baseline - 1
    verdict: str
    threshold: float  # relative (speed) or absolute bytes (memory)
    n_baseline: int = 0
    n_current: int = 0
    p_value: float | None = None
    ci_low: float | None = None  # bounds of current / baseline
    ci_high: float | None = None
    detail: str = ""

    @property
    def info(self) -> Metric:
        """The metric's definition."""
        return METRICS[self.metric]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (non-finite numbers become None)."""
        out = {
            k: _finite(getattr(self, k))
            for k in (
                "metric",
                "baseline",
                "current",
                "change",
                "verdict",
                "threshold",
                "n_baseline",
                "n_current",
                "p_value",
                "ci_low",
                "ci_high",
                "detail",
            )
        }
        out.update(label=self.info.label, unit=self.info.unit, higher_is_better=self.info.higher_is_better)
        return out


@dataclass(frozen=True)
class CaseComparison:
    """One case: how it matched, its metric comparisons and notes (version changes, flags, why not compared)."""

    key: str
    device_name: str
    label: str
    status: str
    metrics: tuple[MetricComparison, ...] = ()
    notes: tuple[str, ...] = ()
    baseline_device_name: str | None = None

    @property
    def verdict(self) -> str:
        """The case's worst finding: regression, improvement, insufficient samples, not significant or unchanged."""
        if self.status == FAILED:
            return REGRESSION
        if self.status == FIXED:
            return IMPROVEMENT
        if self.status != COMPARED:
            return self.status
        found = {m.verdict for m in self.metrics}
        for verdict in (REGRESSION, IMPROVEMENT, INSUFFICIENT, NOT_SIGNIFICANT, UNCHANGED):
            if verdict in found:
                return verdict
        return NOT_MEASURED

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return {
            "key": self.key,
            "device_name": self.device_name,
            "baseline_device_name": self.baseline_device_name,
            "label": self.label,
            "status": self.status,
            "verdict": self.verdict,
            "notes": list(self.notes),
            "metrics": [m.to_dict() for m in self.metrics],
        }


@dataclass(frozen=True)
class Comparison:
    """The whole comparison: every case, run-level warnings and the settings used."""

    cases: tuple[CaseComparison, ...]
    settings: CompareSettings = field(default_factory=CompareSettings)
    warnings: tuple[str, ...] = ()

    @property
    def regressions(self) -> list[CaseComparison]:
        """Cases that fail the gate."""
        return [c for c in self.cases if c.verdict == REGRESSION]

    @property
    def matched(self) -> list[CaseComparison]:
        """Cases found in both runs on the same GPU (judged or not)."""
        return [c for c in self.cases if c.status in (COMPARED, FAILED, FIXED, BOTH_FAILED, SKIPPED)]

    @property
    def exit_status(self) -> int:
        """1 on a regression; 2 when nothing could be compared (no case in common on the same GPU); else 0."""
        if self.regressions:
            return 1
        return 0 if self.matched else 2

    def counts(self) -> dict[str, int]:
        """How many cases got each verdict (or unmatched status)."""
        out: dict[str, int] = {}
        for case in self.cases:
            out[case.verdict] = out.get(case.verdict, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON: settings, summary counts, warnings and every case."""
        return {
            "exit_status": self.exit_status,
            "summary": self.counts(),
            "settings": self.settings.to_dict(),
            "warnings": list(self.warnings),
            "cases": [c.to_dict() for c in self.cases],
        }


def speed_samples(record: Record, metric: str) -> list[float]:
    """Per-repetition values of a speed metric, derived from the raw samples with the metrics.py formulas."""
    s, smp = record.spec, record.samples
    if metric == "ttft_s":
        return list(smp.ttft_s)
    if metric == "e2e_s":
        return list(smp.e2e_s)
    if metric == "latency_s":
        return list(smp.latency_s)
    if metric == "prefill_tokens_per_s":
        return [s.batch_size * s.context_tokens / t for t in smp.ttft_s if t > 0]
    if metric == "decode_tokens_per_s":
        if s.new_tokens < 2:
            return []
        pairs = zip(smp.ttft_s, smp.e2e_s, strict=False)
        return [s.batch_size * (s.new_tokens - 1) / (e - t) for t, e in pairs if e > t]
    raise ValueError(f"{metric!r} is not a speed metric")


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


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _ratio_interval(
    baseline: Sequence[float], current: Sequence[float], settings: CompareSettings
) -> tuple[float | None, float | None]:
    """Percentile-bootstrap interval of median(current) / median(baseline) at confidence 1 - alpha."""
    if settings.bootstrap_resamples == 0 or len(baseline) < 2 or len(current) < 2:
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
            n_resamples=settings.bootstrap_resamples,
            confidence_level=1 - settings.alpha,
            method="percentile",
            rng=np.random.default_rng(settings.seed),
        )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return (low if math.isfinite(low) else None), (high if math.isfinite(high) else None)


def compare_speed(
    metric: Metric, baseline: Sequence[float], current: Sequence[float], settings: CompareSettings
) -> MetricComparison:
    """Judge one speed metric on raw samples: the change of medians against the threshold, confirmed by a rank test.

    When the medians moved past the threshold, a one-sided Mann-Whitney U test asks whether the current
    samples lie beyond baseline x (1 +/- threshold); p < alpha makes it a regression (or improvement).
    """
    threshold = settings.threshold_for(metric.name)
    n, m = len(baseline), len(current)
    if not n or not m:
        return MetricComparison(
            metric.name, math.nan, math.nan, math.nan, NOT_MEASURED, threshold, n, m, detail="no samples on one side"
        )
    base_med, cur_med = statistics.median(baseline), statistics.median(current)
    change = cur_med / base_med - 1 if base_med else math.inf
    up, down = change > threshold, change < -threshold
    ci_low, ci_high = _ratio_interval(baseline, current, settings)
    if not (up or down):
        return MetricComparison(
            metric.name,
            base_med,
            cur_med,
            change,
            UNCHANGED,
            threshold,
            n,
            m,
            None,
            ci_low,
            ci_high,
            f"within {threshold:.0%}",
        )
    worse = down if metric.higher_is_better else up
    min_p = smallest_p_value(n, m)
    if min_p >= settings.alpha:
        detail = f"{n} vs {m} samples cannot reach p < {settings.alpha:g} (smallest p {min_p:.3g}); repeat more"
        return MetricComparison(
            metric.name, base_med, cur_med, change, INSUFFICIENT, threshold, n, m, None, ci_low, ci_high, detail
        )
    factor, alternative = (1 + threshold, "greater") if up else (1 - threshold, "less")
    p_value = margin_p_value(baseline, current, factor, alternative)
    if p_value < settings.alpha:
        verdict = REGRESSION if worse else IMPROVEMENT
        detail = f"beyond {threshold:.0%} with p = {p_value:.2g}"
    else:
        verdict, detail = NOT_SIGNIFICANT, f"beyond {threshold:.0%} in the medians, but p = {p_value:.2g}"
    return MetricComparison(
        metric.name, base_med, cur_med, change, verdict, threshold, n, m, p_value, ci_low, ci_high, detail
    )


def peak_memory(record: Record, field_name: str) -> int | None:
    """One peak-memory field of a record in bytes (None where not measured)."""
    return getattr(record.memory, field_name)


def compare_memory(baseline: Record, current: Record, settings: CompareSettings) -> MetricComparison:
    """Judge peak memory: growth beyond max(relative tolerance, absolute tolerance) is a regression."""
    for name in MEMORY_FIELDS:
        b, c = peak_memory(baseline, name), peak_memory(current, name)
        if name == "nvml_process_peak_bytes" and baseline.memory.nvml_method != current.memory.nvml_method:
            continue  # per-process and device-used readings differ by the CUDA context: use the allocator peak
        if b is not None and c is not None:
            break
    else:
        return MetricComparison(
            MEMORY_METRIC.name,
            math.nan,
            math.nan,
            math.nan,
            NOT_MEASURED,
            0,
            detail="no peak-memory field measured on both sides",
        )
    tolerance = max(settings.memory_tolerance * b, settings.memory_tolerance_bytes)
    growth = c - b
    change = growth / b if b else (math.inf if growth else 0.0)
    if growth > tolerance:
        verdict = REGRESSION
    elif -growth > tolerance:
        verdict = IMPROVEMENT
    else:
        verdict = UNCHANGED
    detail = f"{name}: {growth / MiB:+.1f} MiB (tolerance {tolerance / MiB:.1f} MiB)"
    return MetricComparison(
        MEMORY_METRIC.name, float(b), float(c), change, verdict, float(tolerance), 1, 1, detail=detail
    )


def _by_identity(records: Sequence[Record]) -> dict[tuple[str, str], Record]:
    out: dict[tuple[str, str], Record] = {}
    for r in records:  # a later record of the same case (a resumed retry) supersedes an earlier one
        out[(r.device_name, r.spec.key)] = r
    return out


def _quality_notes(baseline: Record, current: Record) -> list[str]:
    notes = []
    for side, rec in (("baseline", baseline), ("current", current)):
        bad = [f for f in rec.flags if f in QUALITY_FLAGS]
        if bad:
            notes.append(f"{side} flagged {', '.join(bad)}")
    return notes


def _compare_pair(baseline: Record, current: Record, settings: CompareSettings, notes: list[str]) -> CaseComparison:
    key, label = current.spec.key, current.spec.label
    if baseline.status in _FAILURE_STATUSES and current.ok:
        return CaseComparison(key, current.device_name, label, FIXED, (), (*notes, f"baseline {baseline.status}"))
    if baseline.ok and current.status in _FAILURE_STATUSES:
        first_line = (current.error or "").strip().splitlines()[:1]
        why = f"now {current.status}" + (f": {first_line[0][:200]}" if first_line else "")
        return CaseComparison(key, current.device_name, label, FAILED, (), (*notes, why))
    if not (baseline.ok and current.ok):
        status = SKIPPED if SKIPPED in (baseline.status, current.status) else BOTH_FAILED
        why = f"baseline {baseline.status}, current {current.status}"
        return CaseComparison(key, current.device_name, label, status, (), (*notes, why))
    results = []
    for metric in SPEED_METRICS:
        if metric.scenario != current.spec.scenario:
            continue
        base, cur = speed_samples(baseline, metric.name), speed_samples(current, metric.name)
        if base or cur:
            results.append(compare_speed(metric, base, cur, settings))
    results.append(compare_memory(baseline, current, settings))
    notes += _quality_notes(baseline, current)
    return CaseComparison(key, current.device_name, label, COMPARED, tuple(results), tuple(notes))


def _fmt_versions(diffs: dict[str, tuple[str | None, str | None]]) -> str:
    return ", ".join(f"{k} {b or '?'} -> {c or '?'}" for k, (b, c) in sorted(diffs.items()))


def compare_records(
    baseline: Sequence[Record],
    current: Sequence[Record],
    settings: CompareSettings | None = None,
    *,
    baseline_envelopes: Sequence[dict[str, Any]] = (),
    current_envelopes: Sequence[dict[str, Any]] = (),
) -> Comparison:
    """Compare two runs case by case on (GPU name, case key); see the module docstring for the rules."""
    settings = settings or CompareSettings()
    base_by, cur_by = _by_identity(baseline), _by_identity(current)
    base_devices: dict[str, list[str]] = {}
    for dev, key in base_by:
        base_devices.setdefault(key, []).append(dev)
    covered: set[tuple[str, str]] = set()  # baseline cases already reported against another device
    cases: list[CaseComparison] = []
    run_warnings: dict[str, int] = {}
    missing_env = False

    def warn(text: str) -> None:
        run_warnings[text] = run_warnings.get(text, 0) + 1

    for (dev, key), cur in sorted(cur_by.items()):
        base = base_by.get((dev, key))
        label = cur.spec.label
        if base is None:
            others = base_devices.get(key, [])
            if others:
                covered.update((o, key) for o in others)
                why = f"baseline measured on {', '.join(sorted(others))}, current on {dev or 'an unnamed device'}"
                cases.append(CaseComparison(key, dev, label, NOT_COMPARABLE, (), (why,), ", ".join(sorted(others))))
                warn(f"different GPUs: baseline {', '.join(sorted(others))} vs current {dev}; not compared")
            else:
                cases.append(CaseComparison(key, dev, label, ONLY_CURRENT))
            continue
        b_env, c_env = envelope_for(base, baseline_envelopes), envelope_for(cur, current_envelopes)
        missing_env = missing_env or b_env is None or c_env is None
        diffs = version_differences(b_env, c_env)
        notes: list[str] = []
        if diffs:
            text = _fmt_versions(diffs)
            if settings.require_same_versions:
                warn(f"library versions differ ({text}); not compared (--require-same-versions)")
                cases.append(CaseComparison(key, dev, label, NOT_COMPARABLE, (), (f"versions differ: {text}",), dev))
                continue
            warn(f"library versions differ ({text}); changes below may come from the upgrade")
            notes.append(f"versions differ: {text}")
        platform = version_differences(b_env, c_env, PLATFORM_KEYS)
        if platform:
            notes.append(f"platform differs: {_fmt_versions(platform)}")
        case = _compare_pair(base, cur, settings, notes)
        cases.append(CaseComparison(case.key, case.device_name, case.label, case.status, case.metrics, case.notes, dev))
    for (dev, key), base in sorted(base_by.items()):
        if (dev, key) not in cur_by and (dev, key) not in covered:
            cases.append(CaseComparison(key, dev, base.spec.label, ONLY_BASELINE, baseline_device_name=dev))
    if not baseline_envelopes or not current_envelopes:
        side = (
            "both sides"
            if not (baseline_envelopes or current_envelopes)
            else ("the baseline" if not baseline_envelopes else "the current run")
        )
        warn(f"no environment.json for {side}; library versions were not checked")
    elif missing_env:
        warn("some records have no matching environment.json envelope; their library versions were not checked")
    insufficient = sum(1 for c in cases for m in c.metrics if m.verdict == INSUFFICIENT)
    if insufficient:
        warn(
            f"{insufficient} metric change(s) beyond the threshold could not be tested: too few repetitions "
            f"for p < {settings.alpha:g} (use at least 5 per case, 10 or more on a shared runner)"
        )
    texts = tuple(f"{t} ({n} cases)" if n > 1 else t for t, n in run_warnings.items())
    return Comparison(tuple(cases), settings, texts)
