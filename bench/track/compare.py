"""The regression gate: two sets of records in, a frozen case-by-case verdict out.

Speed (decode and prefill tokens/s, TTFT, E2E latency, encode latency) counts as changed only when
the median moved past a threshold (default 5%) *and* a one-sided Mann-Whitney U test on the raw
samples finds them beyond baseline x (1 +/- threshold) with p < alpha (default 0.01). So a true
change no larger than the threshold fails a metric with probability at most alpha, and a rerun
with no change far less often: noise alone rarely trips the gate, even over many cases. A
bootstrap confidence interval of the ratio of medians is reported beside it. Where the sample
counts cannot reach p < alpha at all (the smallest exact p is ``1 / C(n + m, n)``, so 3
repetitions against 3 never can, 4 against 5 can), the verdict is "insufficient samples", and the
comparison as a whole is inconclusive (exit status 3 unless ``allow_inconclusive``): a gate that
cannot decide must not look like a pass.

Repetitions taken in one process understate run-to-run variance. A stored baseline may hold several
runs (``bench baseline save --append``); with ``min_baseline_runs`` (default 3) or more runs of a case,
its speed is judged by the spread of the run medians instead: the current median must be beyond the
threshold from the median of the run medians *and* outside their range widened by the threshold.
Fewer runs are pooled for the rank test. Every metric verdict names the test that decided it.
Peak memory is near-deterministic: growth beyond ``max(1%, 32 MiB)`` fails (against several runs,
growth beyond the largest of their peaks).

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
from collections.abc import Mapping, Sequence
from typing import Any

from bench.results.envelopes import PLATFORM_KEYS, envelope_for, version_differences
from bench.results.metrics import speed_samples
from bench.results.record import Record
from bench.track.settings import MEMORY_FIELDS, MEMORY_METRIC, SPEED_METRICS, CompareSettings, Metric
from bench.track.statistics import (
    beyond_run_range,
    margin_p_value,
    ratio_interval,
    repetitions_needed,
    smallest_p_value,
)
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


def _mann_whitney_name(n: int, m: int, runs: int) -> str:
    pooled = f", the baseline's pooled from {runs} runs" if runs > 1 else ""
    return f"Mann-Whitney U on {n}+{m} repetitions{pooled}"


def _not_measured(name: str, threshold: float, n: int, m: int, test: str, runs: int) -> MetricComparison:
    """The comparison of a metric that has no samples on one side."""
    return MetricComparison(
        name, math.nan, math.nan, math.nan, NOT_MEASURED, threshold, n, m,
        detail="no samples on one side", test=test, baseline_runs=runs,
    )


def compare_speed(
    metric: Metric, baseline: Sequence[float], current: Sequence[float], settings: CompareSettings, *, runs: int = 1
) -> MetricComparison:
    """Judge one speed metric on raw samples: the change of medians against the threshold, confirmed by a rank test.

    When the medians moved past the threshold, a one-sided Mann-Whitney U test asks whether the current
    samples lie beyond baseline x (1 +/- threshold); p < alpha makes it a regression (or improvement).
    ``runs`` says how many baseline runs the baseline samples were pooled from (named in the verdict).
    """
    threshold = settings.threshold_for(metric.name)
    n, m = len(baseline), len(current)
    test = _mann_whitney_name(n, m, runs)
    if not n or not m:
        return _not_measured(metric.name, threshold, n, m, test, runs)
    base_med, cur_med = statistics.median(baseline), statistics.median(current)
    change = cur_med / base_med - 1 if base_med else math.inf
    up, down = change > threshold, change < -threshold
    ci_low, ci_high = ratio_interval(
        baseline, current, resamples=settings.bootstrap_resamples, confidence=1 - settings.alpha, seed=settings.seed
    )
    found = dict(
        baseline=base_med,
        current=cur_med,
        change=change,
        threshold=threshold,
        n_baseline=n,
        n_current=m,
        ci_low=ci_low,
        ci_high=ci_high,
        test=test,
        baseline_runs=runs,
    )
    if not (up or down):
        return MetricComparison(metric.name, verdict=UNCHANGED, detail=f"within {threshold:.0%}", **found)
    worse = down if metric.higher_is_better else up
    min_p = smallest_p_value(n, m)
    if min_p >= settings.alpha:
        need = repetitions_needed(settings.alpha)
        detail = f"{n} vs {m} samples cannot reach p < {settings.alpha:g} (at best {min_p:.2g}); it needs {need}+{need}"
        return MetricComparison(metric.name, verdict=INSUFFICIENT, detail=detail, **found)
    factor, alternative = (1 + threshold, "greater") if up else (1 - threshold, "less")
    p_value = margin_p_value(baseline, current, factor, alternative)
    if p_value < settings.alpha:
        verdict = REGRESSION if worse else IMPROVEMENT
        detail = f"beyond {threshold:.0%} with p = {p_value:.2g}"
    else:
        verdict, detail = NOT_SIGNIFICANT, f"beyond {threshold:.0%} in the medians, but p = {p_value:.2g}"
    return MetricComparison(metric.name, verdict=verdict, detail=detail, p_value=p_value, **found)


def compare_run_medians(
    metric: Metric, run_medians: Sequence[float], current: Sequence[float], settings: CompareSettings
) -> MetricComparison:
    """Judge one speed metric against several baseline runs: by the spread of their medians, not their repetitions.

    The change is measured from the median of the run medians. Past the threshold, it counts when the current
    median also lies outside the range of the run medians widened by the threshold
    (:func:`bench.track.statistics.beyond_run_range`), as asv and Bencher judge against a history of runs.
    """
    threshold = settings.threshold_for(metric.name)
    k, m = len(run_medians), len(current)
    test = f"run medians of {k} baseline runs"
    if not k or not m:
        return _not_measured(metric.name, threshold, k, m, test, k)
    base_med, cur_med = statistics.median(run_medians), statistics.median(current)
    change = cur_med / base_med - 1 if base_med else math.inf
    up, down = change > threshold, change < -threshold
    found = dict(
        baseline=base_med,
        current=cur_med,
        change=change,
        threshold=threshold,
        n_baseline=k,
        n_current=m,
        test=test,
        baseline_runs=k,
    )
    if not (up or down):
        return MetricComparison(metric.name, verdict=UNCHANGED, detail=f"within {threshold:.0%}", **found)
    low, high = min(run_medians), max(run_medians)
    spread = f"the {k} baseline runs' medians span {high / low - 1:.1%}" if low > 0 else f"{k} baseline runs"
    if beyond_run_range(run_medians, cur_med, threshold) == ("up" if up else "down"):
        worse = down if metric.higher_is_better else up
        verdict = REGRESSION if worse else IMPROVEMENT
        detail = f"beyond {threshold:.0%} and outside their range widened by {threshold:.0%} ({spread})"
    else:
        verdict = NOT_SIGNIFICANT
        detail = f"beyond {threshold:.0%} in the medians, but within their range widened by {threshold:.0%} ({spread})"
    return MetricComparison(metric.name, verdict=verdict, detail=detail, **found)


def peak_memory(record: Record, field_name: str) -> int | None:
    """One peak-memory field of a record in bytes (None where not measured)."""
    return getattr(record.memory, field_name)


def compare_memory(baseline: Record | Sequence[Record], current: Record, settings: CompareSettings) -> MetricComparison:
    """Judge peak memory: growth beyond max(relative tolerance, absolute tolerance) is a regression.

    Against several baseline runs, growth counts from the largest of their peaks and shrinkage from the smallest.
    """
    bases = [baseline] if isinstance(baseline, Record) else list(baseline)
    for name in MEMORY_FIELDS:
        if name == "nvml_process_peak_bytes" and any(b.memory.nvml_method != current.memory.nvml_method for b in bases):
            continue  # per-process and device-used readings differ by the CUDA context: use the allocator peak
        values, c = [peak_memory(b, name) for b in bases], peak_memory(current, name)
        if c is not None and values and all(v is not None for v in values):
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
            baseline_runs=len(bases),
        )
    k = len(values)
    b = max(values) if c >= statistics.median(values) else min(values)
    tolerance = max(settings.memory_tolerance * b, settings.memory_tolerance_bytes)
    growth = c - b
    change = growth / b if b else (math.inf if growth else 0.0)
    if growth > tolerance:
        verdict = REGRESSION
    elif -growth > tolerance:
        verdict = IMPROVEMENT
    else:
        verdict = UNCHANGED
    against = "" if k == 1 else f" against the {'largest' if b == max(values) else 'smallest'} of {k} baseline runs"
    detail = f"{name}: {growth / MiB:+.1f} MiB{against} (tolerance {tolerance / MiB:.1f} MiB)"
    test = "peak of the baseline run" if k == 1 else f"range of {k} baseline runs' peaks"
    return MetricComparison(
        MEMORY_METRIC.name,
        float(b),
        float(c),
        change,
        verdict,
        float(tolerance),
        k,
        1,
        detail=detail,
        test=test,
        baseline_runs=k,
    )


def _by_identity(records: Sequence[Record]) -> dict[tuple[str, str], Record]:
    out: dict[tuple[str, str], Record] = {}
    for r in records:  # a later record of the same case (a resumed retry) supersedes an earlier one
        out[(r.device_name, r.spec.key)] = r
    return out


def _runs_by_identity(
    records: Sequence[Record], run_of: Mapping[str, str] | None
) -> dict[tuple[str, str], list[Record]]:
    """Per (GPU, case), one record per baseline run in the order the runs were saved (the latest last).

    ``run_of`` maps a record's run id to the saved baseline run it belongs to (a saved run may hold the run
    ids of shards and resumes); without it every record belongs to one run. Within a run a later record of
    a case supersedes an earlier one.
    """
    per_run: dict[tuple[str, str], dict[str, Record]] = {}
    for r in records:
        run = run_of.get(r.run_id, r.run_id) if run_of is not None else ""
        runs = per_run.setdefault((r.device_name, r.spec.key), {})
        runs.pop(run, None)  # re-inserted: the run's position follows its latest record
        runs[run] = r
    return {ident: list(runs.values()) for ident, runs in per_run.items()}


def _quality_notes(baseline: Record, current: Record) -> list[str]:
    notes = []
    for side, rec in (("baseline", baseline), ("current", current)):
        bad = [f for f in rec.flags if f in QUALITY_FLAGS]
        if bad:
            notes.append(f"{side} flagged {', '.join(bad)}")
    return notes


def _compare_speed_metrics(baselines: Sequence[Record], current: Record, settings: CompareSettings) -> list:
    """Every speed metric of the case's scenario: by run medians with enough baseline runs, else Mann-Whitney U."""
    results = []
    for metric in SPEED_METRICS:
        if metric.scenario != current.spec.scenario:
            continue
        runs = [x for x in (speed_samples(b, metric.name) for b in baselines) if x]
        cur = speed_samples(current, metric.name)
        if not (runs or cur):
            continue
        if len(runs) >= settings.min_baseline_runs:
            results.append(compare_run_medians(metric, [statistics.median(x) for x in runs], cur, settings))
        else:
            results.append(compare_speed(metric, [v for x in runs for v in x], cur, settings, runs=max(len(runs), 1)))
    return results


def _compare_pair(
    baselines: Sequence[Record], current: Record, settings: CompareSettings, notes: list[str]
) -> CaseComparison:
    """One case in both runs: a failure on either side, or every metric judged (``baselines``: one per run)."""
    baseline = baselines[-1]  # the latest baseline run decides whether the case worked before
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
    worked = [b for b in baselines if b.ok]
    results = _compare_speed_metrics(worked, current, settings)
    results.append(compare_memory(worked, current, settings))
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
    baselines: Sequence[Record],
    current: Record,
    settings: CompareSettings,
    envelopes: tuple[dict[str, Any] | None, dict[str, Any] | None],
    warn: _RunWarnings,
) -> CaseComparison:
    """A case in both runs on the same GPU: library versions checked (and named), then the case compared.

    ``envelopes`` are those of the latest baseline run's record and of the current record.
    """
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
    return dataclasses.replace(_compare_pair(baselines, current, settings, notes), baseline_device_name=dev)


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
    line = repetitions_line(cases, settings)
    if line:
        warn(line)


def repetitions_line(cases: Sequence[CaseComparison], settings: CompareSettings) -> str | None:
    """One line on the changes the test could not decide and how many repetitions it needs (None if none).

    The count comes from the test itself: the one-sided Mann-Whitney U test of n against n repetitions
    can give at best p = 1 / C(2n, n), so it needs the smallest n with that below alpha.
    """
    untested = [m for c in cases for m in c.metrics if m.verdict == INSUFFICIENT]
    if not untested:
        return None
    n_cases = sum(1 for c in cases if any(m.verdict == INSUFFICIENT for m in c.metrics))
    need = repetitions_needed(settings.alpha)
    have = ", ".join(sorted({f"{m.n_baseline}+{m.n_current}" for m in untested}))
    best = min(smallest_p_value(m.n_baseline, m.n_current) for m in untested)
    return (
        f"inconclusive: {len(untested)} change(s) beyond the threshold in {n_cases} case(s) could not be tested: "
        f"the one-sided Mann-Whitney U test needs at least {need} repetitions per side for p < {settings.alpha:g} "
        f"({need}+{need} can reach p = {smallest_p_value(need, need):.2g}; these have {have}, at best p = "
        f"{best:.2g}); record {need} or more per case (bench run --repetitions {need}) or save "
        f"{settings.min_baseline_runs} baseline runs (bench baseline save --append)"
    )


def compare_records(
    baseline: Sequence[Record],
    current: Sequence[Record],
    settings: CompareSettings | None = None,
    *,
    baseline_envelopes: Sequence[dict[str, Any]] = (),
    current_envelopes: Sequence[dict[str, Any]] = (),
    baseline_run_of: Mapping[str, str] | None = None,
) -> Comparison:
    """Compare two runs case by case on (GPU name, case key); see the module docstring for the rules.

    ``baseline`` may hold several runs of each case (a stored baseline saved with ``--append``);
    ``baseline_run_of`` then maps each record's run id to its saved run (:attr:`Baseline.run_of`).
    Without it the baseline is one run.
    """
    settings = settings or CompareSettings()
    base_runs, cur_by = _runs_by_identity(baseline, baseline_run_of), _by_identity(current)
    base_by = {ident: runs[-1] for ident, runs in base_runs.items()}
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
        cases.append(_matched_case(base_runs[(dev, key)], cur, settings, envs, warn))
    for (dev, key), base in sorted(base_by.items()):
        if (dev, key) not in cur_by and (dev, key) not in covered:
            cases.append(CaseComparison(key, dev, base.spec.label, ONLY_BASELINE, baseline_device_name=dev))
    _closing_warnings(cases, settings, (baseline_envelopes, current_envelopes), missing_env, warn)
    return Comparison(tuple(cases), settings, warn.texts())
