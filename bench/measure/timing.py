"""A case's repetitions: the compiling call, the timed repetitions, and the telemetry repetitions apart from them.

No sampling thread runs beside a timed call: on a small machine a thread that wakes every 20 ms takes CPU
time and the GIL from the call being timed (measured: 1.02-1.09x the bare call's E2E on 2 cores). The timed
repetitions are sampled only between calls (clocks, throttle reasons, device memory, the energy counter),
then :attr:`TimingPolicy.telemetry_repetitions` more repetitions run with the sampler's thread at its
period; their timing samples are dropped, their telemetry (power, integrated energy, utilisation, the
NVML memory peak) is the record's, and energy per token is theirs: the energy of the telemetry repetitions
over the tokens they produced (``telemetry_window`` in the summary says which repetitions it covers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.config.spec import DEFAULT_ENGINE, TimingPolicy
from bench.measure.scenarios import Clock, repeat_until
from bench.measure.telemetry.summary import add_per_unit
from bench.measure.telemetry.summary import quality_flags as telemetry_flags
from bench.results.record import Samples

TIMED_WINDOW = "timed repetitions (sampled between calls)"
TELEMETRY_WINDOW = "telemetry repetitions (sampled every period, after the timed ones)"


@dataclass(frozen=True)
class Phases:
    """What a case's repetitions gave: the timed samples and the two phases' telemetry."""

    samples: Samples
    timed: Any  # Telemetry of the timed repetitions (samples between calls only)
    telemetry: Any | None  # Telemetry of the telemetry repetitions; None when the policy asks for none
    telemetry_repetitions: int
    recompiled: bool  # the compiled engine compiled a graph during the timed repetitions


@dataclass(frozen=True)
class CaseTelemetry:
    """The record's telemetry of a case: summary, flags, the timeline of both phases, and the NVML peak."""

    summary: dict[str, Any]
    flags: tuple[str, ...]
    timeline: tuple[dict[str, Any], ...]
    nvml_process_peak_bytes: int | None
    nvml_method: str | None


def compile_call(case: Any, clock: Clock = time.perf_counter) -> float | None:
    """The compiled engine's first call of a case, timed on its own (compilation plus one generation) and
    never kept as a sample; None for eager. Raises when the call did not run compiled."""
    if case.engine.name == DEFAULT_ENGINE:
        return None
    start = clock()
    case.run_once()
    elapsed = clock() - start
    case.engine.verify()
    case.clear()
    return elapsed


def run_phases(case: Any, policy: TimingPolicy, make_sampler: Callable[..., Any], clock: Clock) -> Phases:
    """The timed repetitions (sampled between calls), then the telemetry repetitions (sampler thread on)."""
    timed_sampler = make_sampler(case.device, background=False)
    graphs = case.engine.graphs()

    def timed_once() -> float:
        value = case.run_once()
        timed_sampler.sample()  # between calls: never beside the work being timed
        return value

    timed_sampler.start()
    try:
        repeat_until(timed_once, policy.min_repetitions, policy.max_repetitions, policy.min_duration_s, clock)
    finally:
        timed = timed_sampler.stop()
    recompiled = case.engine.graphs() != graphs
    samples = case.samples()
    telemetry, count = None, 0
    if policy.telemetry_repetitions > 0:
        sampler = make_sampler(case.device)
        sampler.start()
        try:
            count = repeat_until(
                case.run_once,
                policy.telemetry_repetitions,
                max(policy.telemetry_repetitions, policy.max_repetitions),
                policy.telemetry_min_duration_s,
                clock,
            )
        finally:
            telemetry = sampler.stop()
        # the telemetry repetitions ran beside the sampler's thread: their timing is not kept as samples
        telemetry = _with_offset(telemetry, sampler.started_at - timed_sampler.started_at)
    return Phases(samples, timed, telemetry, count, recompiled)


def _with_offset(telemetry: Any, offset_s: float) -> Any:
    """The telemetry with its timeline's times counted from the timed phase's start."""
    import dataclasses

    rows = tuple(dict(row, t_s=round(row["t_s"] + offset_s, 6)) for row in telemetry.timeline)
    return dataclasses.replace(telemetry, timeline=rows)


def case_telemetry(phases: Phases, scenario: str, batch_size: int, new_tokens: int) -> CaseTelemetry:
    """Merge the phases into the record's telemetry: the summary of the telemetry repetitions (of the timed
    ones when there are none), energy per token or sequence over the repetitions that summary covers, the
    quality flags of both phases, both timelines (each row with its ``phase``) and the larger NVML peak."""
    unit, per_repetition = ("token", batch_size * new_tokens) if scenario == "generate" else ("sequence", batch_size)
    if phases.telemetry is not None:
        base, repetitions, window = phases.telemetry, phases.telemetry_repetitions, TELEMETRY_WINDOW
    else:
        base, repetitions, window = phases.timed, len(phases.samples.e2e_s or phases.samples.latency_s), TIMED_WINDOW
    summary = add_per_unit(base.summary, repetitions * per_repetition, unit)
    summary["telemetry_window"] = window
    summary["telemetry_repetitions"] = phases.telemetry_repetitions
    flags = list(telemetry_flags(summary))
    if phases.telemetry is not None:
        flags.extend(telemetry_flags(phases.timed.summary))
    timeline = tuple(dict(row, phase="timed") for row in phases.timed.timeline)
    if phases.telemetry is not None:
        timeline += tuple(dict(row, phase="telemetry") for row in phases.telemetry.timeline)
    measured = [t for t in (phases.timed, phases.telemetry) if t is not None and t.nvml_process_peak_bytes is not None]
    peak = max(measured, key=lambda t: t.nvml_process_peak_bytes) if measured else None
    return CaseTelemetry(
        summary=summary,
        flags=tuple(dict.fromkeys(flags)),
        timeline=timeline,
        nvml_process_peak_bytes=peak.nvml_process_peak_bytes if peak else None,
        nvml_method=peak.nvml_method if peak else base.nvml_method,
    )
