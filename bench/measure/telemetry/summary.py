"""The per-record summary of a telemetry timeline: energy, clocks, throttling, process memory, host use.

:func:`summarize` turns the sampler's rows into the JSON-ready summary a record carries (every key
in ``GPU_SUMMARY_KEYS`` plus host keys); :func:`add_per_unit` adds energy per token or sequence;
:func:`quality_flags` says which record flags the telemetry justifies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.errors import BadInputError
from bench.results.telemetry_fields import BENIGN_REASONS, GPU_SUMMARY_KEYS, reason_names

CLOCK_CHANGE_THRESHOLD = 0.10  # SM clock (max - min) / max over busy samples above this -> "clock_changed"


def _values(rows: Sequence[Mapping[str, Any]], key: str) -> list[Any]:
    return [r[key] for r in rows if r.get(key) is not None]


def _mean(values: Sequence[float]) -> float | None:
    if not values:
        return None
    import numpy as np  # imported here: the CLI's other paths need no numpy

    return float(np.mean(values))


def _max(values: Sequence[float]) -> Any:
    return max(values) if values else None


def _min(values: Sequence[float]) -> Any:
    return min(values) if values else None


def _energy(rows: Sequence[Mapping[str, Any]], unavailable: dict[str, str]) -> dict[str, Any]:
    """Energy over the window: the counter's difference when it advanced, else integrated power."""
    counter_j = None
    if rows and rows[0].get("energy_j") is not None and rows[-1].get("energy_j") is not None:
        diff = rows[-1]["energy_j"] - rows[0]["energy_j"]
        if diff >= 0:
            counter_j = diff
        else:
            unavailable["energy"] = "energy counter went backwards (driver reloaded?)"
    powered = [(r["t_s"], r["power_w"]) for r in rows if r.get("power_w") is not None]
    integrated_j = None
    if len(powered) >= 2:
        from scipy.integrate import trapezoid

        t, p = zip(*powered, strict=True)
        integrated_j = float(trapezoid(p, t))
    if counter_j is not None and (counter_j > 0 or integrated_j is None):
        energy, method = counter_j, "counter"
    elif integrated_j is not None:
        energy, method = integrated_j, "integrated"
        if counter_j == 0:
            unavailable.setdefault("energy_counter", "counter did not advance within the window; power integrated")
    else:
        energy, method = None, None
    return {
        "energy_j": energy,
        "energy_method": method,
        "energy_counter_j": counter_j,
        "energy_integrated_j": integrated_j,
    }


def _process_memory(
    rows: Sequence[Mapping[str, Any]], pid: int, baseline: int | None, unavailable: dict[str, str]
) -> dict[str, Any]:
    """This process's device memory peak, and which processes on the GPU were someone else's."""
    exact = _values(rows, "process_bytes")
    seen: dict[int, int | None] = {}
    for r in rows:
        for p, used in r.get("gpu_processes") or ():
            prev = seen.get(p)
            seen[p] = used if prev is None else (prev if used is None else max(prev, used))
    peak: int | None = None
    method: str | None = None
    match: str | None = None
    ours: set[int] = set()
    used_peak = _max(_values(rows, "device_used_bytes"))
    if exact:
        peak, method, match, ours = max(exact), "process", "pid", {pid}
    elif len(seen) == 1 and next(iter(seen.values())) is not None:
        # PID namespaces (containers) hide our host PID; a GPU with one process on it is running us.
        ((only_pid, only_used),) = seen.items()
        peak, method, match, ours = only_used, "process", "single_process", {only_pid}
    elif baseline is not None and used_peak is not None:
        peak, method, match = max(0, used_peak - baseline), "device_used", "none"
    else:
        match = "none" if seen else None
        if "processes" not in unavailable and "device_memory" not in unavailable:
            unavailable["nvml_process_bytes"] = (
                f"PID {pid} is not among the {len(seen)} process(es) NVML lists (a container's PID namespace?) "
                "and no baseline_used_bytes was given"
                if seen
                else "NVML listed no process on the device"
            )
    foreign = [{"pid": p, "max_used_bytes": b} for p, b in sorted(seen.items()) if p not in ours]
    return {
        "nvml_process_peak_bytes": peak,
        "nvml_method": method,
        "nvml_pid_match": match,
        "device_used_peak_bytes": used_peak,
        "device_baseline_used_bytes": baseline,
        "foreign_processes": foreign,
    }


def _gpu_readings(rows: Sequence[Mapping[str, Any]], nvml: Any) -> dict[str, Any]:
    """Power, clocks (all samples and busy ones), utilisation, temperature and clock event reasons."""
    power = _values(rows, "power_w")
    sm = _values(rows, "sm_clock_mhz")
    busy = [
        r["sm_clock_mhz"]
        for r in rows
        if r.get("sm_clock_mhz") is not None
        and (r.get("gpu_util_pct") or 0) > 0
        and "gpu_idle" not in reason_names(r.get("throttle_mask", 0), nvml)
    ]
    masks = _values(rows, "throttle_mask")
    seen_mask = 0
    for m in masks:
        seen_mask |= int(m)
    names = reason_names(seen_mask, nvml)
    throttled_rows = sum(1 for m in masks if set(reason_names(int(m), nvml)) - BENIGN_REASONS)
    return {
        "power_mean_w": _mean(power),
        "power_max_w": _max(power),
        "sm_clock_min_mhz": _min(sm),
        "sm_clock_max_mhz": _max(sm),
        "sm_clock_busy_min_mhz": _min(busy),
        "sm_clock_busy_max_mhz": _max(busy),
        "mem_clock_min_mhz": _min(_values(rows, "mem_clock_mhz")),
        "mem_clock_max_mhz": _max(_values(rows, "mem_clock_mhz")),
        "gpu_util_mean_pct": _mean(_values(rows, "gpu_util_pct")),
        "gpu_util_max_pct": _max(_values(rows, "gpu_util_pct")),
        "mem_util_mean_pct": _mean(_values(rows, "mem_util_pct")),
        "temperature_max_c": _max(_values(rows, "temperature_c")),
        "throttle_reasons": names if masks else None,
        "throttled": bool(set(names) - BENIGN_REASONS) if masks else None,
        "throttled_fraction": throttled_rows / len(masks) if masks else None,
    }


def summarize(
    rows: Sequence[Mapping[str, Any]],
    *,
    period_s: float,
    device: str,
    gpu: bool,
    pid: int,
    baseline_used_bytes: int | None = None,
    unavailable: Mapping[str, str] | None = None,
    nvml: Any = None,
) -> dict[str, Any]:
    """The per-record summary of a timeline (every key in GPU_SUMMARY_KEYS plus host keys).

    ``gpu``: whether NVML was read (else every GPU key is None); ``pid`` and
    ``baseline_used_bytes`` pick this process's device memory (see ``TelemetrySampler``);
    ``unavailable`` are the reasons already known, to which the summary adds its own; ``nvml``
    is the binding whose clock event reason constants name the throttle bits.
    """
    unavailable = dict(unavailable or {})
    duration = rows[-1]["t_s"] - rows[0]["t_s"] if rows else 0.0
    summary: dict[str, Any] = {"device": device, "period_s": period_s, "samples": len(rows), "duration_s": duration}
    summary.update(dict.fromkeys(GPU_SUMMARY_KEYS))
    summary["foreign_processes"] = []
    if gpu:
        summary.update(_gpu_readings(rows, nvml))
        summary.update(_energy(rows, unavailable))
        summary.update(_process_memory(rows, pid, baseline_used_bytes, unavailable))
    cpu_times = _values(rows, "cpu_time_s")
    summary["cpu_util_mean_pct"] = (
        100.0 * (cpu_times[-1] - cpu_times[0]) / duration if len(cpu_times) >= 2 and duration > 0 else None
    )
    summary["cpu_util_max_pct"] = _max(_values(rows, "cpu_util_pct"))
    summary["host_peak_rss_bytes"] = _max(_values(rows, "rss_bytes"))
    summary["unavailable"] = unavailable
    return summary


def add_per_unit(summary: Mapping[str, Any], units: int, unit: str) -> dict[str, Any]:
    """A copy of ``summary`` with ``joules_per_<unit>`` (e.g. unit="token": J per generated token).

    ``units`` counts what was produced while the sampler ran (every generated token of every
    repetition, or every encoded sequence); the energy is the whole board's over that window.
    """
    if not unit.isidentifier():
        raise BadInputError(f"unit {unit!r} must be a word such as 'token' or 'sequence'")
    if units < 0:
        raise BadInputError(f"unit count {units} must not be negative")
    out = dict(summary)
    energy = summary.get("energy_j")
    out[f"joules_per_{unit}"] = energy / units if energy is not None and units > 0 else None
    out[f"{unit}s_during_telemetry"] = units
    return out


def quality_flags(
    summary: Mapping[str, Any], *, clock_change_threshold: float = CLOCK_CHANGE_THRESHOLD
) -> tuple[str, ...]:
    """Record flags the telemetry justifies: "throttled", "shared_gpu", "clock_changed".

    throttled: a clock event reason other than idle / application or display clock settings;
    shared_gpu: another process used the GPU; clock_changed: the SM clock range over busy samples
    (all samples when none was busy) exceeds ``clock_change_threshold`` of its maximum.
    """
    flags = []
    if summary.get("throttled"):
        flags.append("throttled")
    if summary.get("foreign_processes"):
        flags.append("shared_gpu")
    lo, hi = summary.get("sm_clock_busy_min_mhz"), summary.get("sm_clock_busy_max_mhz")
    if lo is None or hi is None:
        lo, hi = summary.get("sm_clock_min_mhz"), summary.get("sm_clock_max_mhz")
    if lo is not None and hi and (hi - lo) / hi > clock_change_threshold:
        flags.append("clock_changed")
    return tuple(flags)
