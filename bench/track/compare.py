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

The metrics and thresholds are :mod:`bench.track.settings`', the tests :mod:`bench.track.statistics`',
the findings :mod:`bench.track.verdicts`'; the per-repetition series are
:func:`bench.results.metrics.speed_samples`'.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from typing import Any

from bench.results.envelopes import PLATFORM_KEYS, envelope_for, version_differences
from bench.results.metrics import speed_samples
from bench.results.record import Record
from bench.track.settings import MEMORY_FIELDS, MEMORY_METRIC, SPEED_METRICS, CompareSettings, Metric
from bench.track.statistics import margin_p_value, ratio_interval, smallest_p_value
from bench.track.verdicts import (
    BOTH_FAILED,
    COMPARED,
    FAILED,
    FIXED,
    IMPROVEMENT,
    INSUFFICIENT,
    NOT_COMPARABLE,
    NOT_MEASURED,
    NOT_SIGNIFICANT,
    ONLY_BASELINE,
    ONLY_CURRENT,
    REGRESSION,
    SKIPPED,
    UNCHANGED,
    CaseComparison,
    Comparison,
    MetricComparison,
)
from bench.units import MiB

_FAILURE_STATUSES = ("oom", "error", "timeout")
# Record flags that say a measurement may be disturbed; named on the case so a reader can weigh it.
QUALITY_FLAGS = ("noisy", "throttled", "clock_changed", "shared_gpu")


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
    ci_low, ci_high = ratio_interval(
        baseline, current, resamples=settings.bootstrap_resamples, confidence=1 - settings.alpha, seed=settings.seed
    )
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


class _RunWarnings:
    """Run-level warnings in first-seen order, each counted once per case it applies to."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def __call__(self, text: str) -> None:
        self._counts[text] = self._counts.get(text, 0) + 1

    def texts(self) -> tuple[str, ...]:
        """Each warning once, with "(n cases)" where it applied to more than one."""
        return tuple(f"{t} ({n} cases)" if n > 1 else t for t, n in self._counts.items())


def _unmatched_current(
    current: Record, base_devices: dict[str, list[str]], covered: set[tuple[str, str]], warn: _RunWarnings
) -> CaseComparison:
    """A current case the baseline lacks on its GPU: not comparable if measured on another GPU, else only current."""
    dev, key, label = current.device_name, current.spec.key, current.spec.label
    others = base_devices.get(key, [])
    if not others:
        return CaseComparison(key, dev, label, ONLY_CURRENT)
    covered.update((o, key) for o in others)
    why = f"baseline measured on {', '.join(sorted(others))}, current on {dev or 'an unnamed device'}"
    warn(f"different GPUs: baseline {', '.join(sorted(others))} vs current {dev}; not compared")
    return CaseComparison(key, dev, label, NOT_COMPARABLE, (), (why,), ", ".join(sorted(others)))


def _matched_case(
    baseline: Record,
    current: Record,
    settings: CompareSettings,
    envelopes: tuple[dict[str, Any] | None, dict[str, Any] | None],
    warn: _RunWarnings,
) -> CaseComparison:
    """A case in both runs on the same GPU: library versions checked (and named), then the case compared."""
    dev, key, label = current.device_name, current.spec.key, current.spec.label
    b_env, c_env = envelopes
    diffs = version_differences(b_env, c_env)
    notes: list[str] = []
    if diffs:
        text = _fmt_versions(diffs)
        if settings.require_same_versions:
            warn(f"library versions differ ({text}); not compared (--require-same-versions)")
            return CaseComparison(key, dev, label, NOT_COMPARABLE, (), (f"versions differ: {text}",), dev)
        warn(f"library versions differ ({text}); changes below may come from the upgrade")
        notes.append(f"versions differ: {text}")
    platform = version_differences(b_env, c_env, PLATFORM_KEYS)
    if platform:
        notes.append(f"platform differs: {_fmt_versions(platform)}")
    return dataclasses.replace(_compare_pair(baseline, current, settings, notes), baseline_device_name=dev)


def _closing_warnings(
    cases: Sequence[CaseComparison],
    settings: CompareSettings,
    envelopes: tuple[Sequence[dict[str, Any]], Sequence[dict[str, Any]]],
    missing_env: bool,
    warn: _RunWarnings,
) -> None:
    """Warnings about the whole run: versions not checked, changes too few repetitions could test."""
    baseline_envelopes, current_envelopes = envelopes
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
    warn = _RunWarnings()
    missing_env = False
    for (dev, key), cur in sorted(cur_by.items()):
        base = base_by.get((dev, key))
        if base is None:
            cases.append(_unmatched_current(cur, base_devices, covered, warn))
            continue
        envs = envelope_for(base, baseline_envelopes), envelope_for(cur, current_envelopes)
        missing_env = missing_env or None in envs
        cases.append(_matched_case(base, cur, settings, envs, warn))
    for (dev, key), base in sorted(base_by.items()):
        if (dev, key) not in cur_by and (dev, key) not in covered:
            cases.append(CaseComparison(key, dev, base.spec.label, ONLY_BASELINE, baseline_device_name=dev))
    _closing_warnings(cases, settings, (baseline_envelopes, current_envelopes), missing_env, warn)
    return Comparison(tuple(cases), settings, warn.texts())
