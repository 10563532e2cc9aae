"""Hardware telemetry sampled while a case runs: NVML on a GPU, psutil for this process on every device.

A :class:`TelemetrySampler` reads the hardware on its own daemon thread every ``period_s``
(one sample at start and one at stop, so even a short case has two) and returns a
:class:`Telemetry`: a JSON-ready summary for the record and the raw timeline for a side file.
Any NVML failure (no driver, NotSupported, no permission) leaves that field ``None`` with its
reason in ``summary["unavailable"]``; telemetry never fails a case.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.integrate import trapezoid

from bench.errors import BadInputError
from bench.measure.telemetry import gpu_check as gpu_state
from bench.results.telemetry_fields import BENIGN_REASONS, GPU_SUMMARY_KEYS, reason_names

DEFAULT_PERIOD_S = 0.02
CLOCK_CHANGE_THRESHOLD = 0.10  # SM clock (max - min) / max over busy samples above this -> "clock_changed"

# Clock event ("throttle") reasons: (pynvml constant suffix, bit, name). Bits are read from the
# binding's nvmlClocksEventReason* / nvmlClocksThrottleReason* constants; these are the fallbacks.
@dataclass(frozen=True)
class Telemetry:
    """What a sampler saw: a JSON-ready summary (units in key names) and the raw timeline."""

    summary: dict[str, Any]
    timeline: tuple[dict[str, Any], ...]
    nvml_process_peak_bytes: int | None = None
    nvml_method: str | None = None
    host_peak_rss_bytes: int | None = None


def parse_device(device: str) -> tuple[str, int | None]:
    """``"cpu"`` -> ("cpu", None); ``"cuda"`` -> ("cuda", None: the current device); ``"cuda:N"`` -> ("cuda", N)."""
    if device == "cpu":
        return "cpu", None
    if device == "cuda":
        return "cuda", None
    if device.startswith("cuda:") and device[5:].isdigit():
        return "cuda", int(device[5:])
    raise BadInputError(f"telemetry device {device!r} is not 'cpu', 'cuda' or 'cuda:N' (N a device index)")


def cuda_identity(index: int | None) -> dict[str, Any]:
    """Index, UUID and PCI bus id torch reports for a CUDA device; {} when torch has no CUDA here.

    Uses torch only if the caller has imported it (the sampler never imports torch itself).
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return {} if index is None else {"index": index}
    try:
        if not torch.cuda.is_available():
            return {} if index is None else {"index": index}
        if index is None:
            index = int(torch.cuda.current_device())
        props = torch.cuda.get_device_properties(index)
    except Exception:
        return {} if index is None else {"index": index}
    out: dict[str, Any] = {"index": index}
    uuid = getattr(props, "uuid", None)
    if uuid is not None and str(uuid):
        out["uuid"] = str(uuid)
    bus, dev = getattr(props, "pci_bus_id", None), getattr(props, "pci_device_id", None)
    if bus is not None and dev is not None:
        out["pci_bus_id"] = f"{int(getattr(props, 'pci_domain_id', 0) or 0):08X}:{int(bus):02X}:{int(dev):02X}.0"
    return out


def _resolve(nvml: Any, identity: Mapping[str, Any], visible: str | None) -> tuple[Any, str]:
    index = int(identity.get("index") or 0)
    return gpu_state.handle_for_cuda_index(
        nvml, index, uuid=identity.get("uuid"), bus_id=identity.get("pci_bus_id"), visible=visible
    )


def device_used_bytes(
    device: str = "cuda", *, nvml: Any = None, identity: Mapping[str, Any] | None = None
) -> int | None:
    """Memory in use on the GPU right now per NVML (every process), or None when NVML cannot say.

    Call it in a worker before it touches CUDA and pass the result to
    ``TelemetrySampler(baseline_used_bytes=...)``: where NVML cannot match this process's PID (a
    container's PID namespace), the sampler then reports this process as device used minus it.
    """
    kind, index = parse_device(device)
    if kind != "cuda":
        return None
    lib, _ = gpu_state.open_nvml(nvml)
    if lib is None:
        return None
    try:
        ident = dict(identity) if identity is not None else cuda_identity(index)
        ident.setdefault("index", index or 0)
        handle, _ = _resolve(lib, ident, os.environ.get("CUDA_VISIBLE_DEVICES"))
        if handle is None:
            return None
        mem, _ = gpu_state.call(lib, "nvmlDeviceGetMemoryInfo", handle)
        return int(mem.used) if mem is not None else None
    finally:
        gpu_state.close_nvml(lib)


class TelemetrySampler:
    """Samples hardware counters on a daemon thread while a case runs; a context manager too.

    ``device``: ``"cpu"`` samples only this process (CPU time, RSS); ``"cuda"``/``"cuda:N"`` also
    reads NVML for that device (power, energy, utilization, clocks, temperature, clock event
    reasons, device memory, processes). ``nvml``: a pynvml-like module (None imports pynvml and
    calls nvmlInit/nvmlShutdown). ``clock``: seconds, monotonic. ``pid``: the process whose GPU
    memory and host usage are tracked (default this one); ``process``: a psutil-like process
    object to read instead. ``baseline_used_bytes``: device used memory before this process
    touched CUDA (see :func:`device_used_bytes`). ``identity``: the CUDA device's index/uuid/
    pci_bus_id (default from torch, if imported). ``visible``: CUDA_VISIBLE_DEVICES (default
    from the environment).
    """

    def __init__(
        self,
        device: str,
        *,
        period_s: float = DEFAULT_PERIOD_S,
        nvml: Any = None,
        clock: Callable[[], float] = time.monotonic,
        pid: int | None = None,
        process: Any = None,
        baseline_used_bytes: int | None = None,
        identity: Mapping[str, Any] | None = None,
        visible: str | None = None,
    ) -> None:
        if not period_s > 0:
            raise BadInputError(f"telemetry period {period_s!r} s must be a positive number of seconds, e.g. 0.02")
        self.device = device
        self.period_s = float(period_s)
        self._kind, self._index = parse_device(device)
        self._nvml_arg = nvml
        self._clock = clock
        self._pid = os.getpid() if pid is None else int(pid)
        self._process = process
        self._baseline = baseline_used_bytes
        self._identity = identity
        self._visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._rows: list[dict[str, Any]] = []
        self._failures: dict[str, list[Any]] = {}  # field -> [first reason, count]
        self._skip: set[str] = set()
        self._nvml: Any = None
        self._handle: Any = None
        self._static: dict[str, Any] = {}
        self._unavailable: dict[str, str] = {}
        self._t0 = 0.0
        self._energy0_mj: int | None = None
        self._cpu0: float | None = None
        self._last_cpu: tuple[float, float] | None = None
        self._last_procs: list[tuple[int, int | None]] | None = None
        self._throttle_fns: list[str] = [
            "nvmlDeviceGetCurrentClocksEventReasons",
            "nvmlDeviceGetCurrentClocksThrottleReasons",
        ]
        self._result: Telemetry | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Open NVML and psutil, take the first sample and start the sampling thread."""
        if self._thread is not None or self._result is not None:
            raise RuntimeError("this TelemetrySampler was already started; make a new one per case")
        self._open_process()
        if self._kind == "cuda":
            self._open_gpu()
        else:
            self._unavailable["gpu"] = f"device is {self.device}: no GPU telemetry"
        self._t0 = self._clock()
        self.sample()
        self._thread = threading.Thread(target=self._run, name=f"telemetry-{self.device}", daemon=True)
        self._thread.start()

    def stop(self) -> Telemetry:
        """Stop the thread (promptly), take a last sample, close NVML and return the telemetry."""
        if self._result is not None:
            return self._result
        if self._thread is None:
            raise RuntimeError("TelemetrySampler.stop() called before start()")
        self._stop_event.set()
        wait_s = max(5.0, 10 * self.period_s)
        self._thread.join(timeout=wait_s)
        if self._thread.is_alive():  # an NVML call hung (a lost GPU): keep what was sampled
            self._fail("sampler", f"sampling thread did not stop within {wait_s:g} s", permanent=True)
            self._result = self._build()
            return self._result
        self.sample()
        if self._nvml is not None:
            gpu_state.close_nvml(self._nvml)
            self._nvml = None
            self._handle = None
        self._result = self._build()
        return self._result

    @property
    def result(self) -> Telemetry | None:
        """The telemetry once stopped (for ``with`` blocks), else None."""
        return self._result

    def __enter__(self) -> TelemetrySampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def mark(self, label: str) -> None:
        """Take a sample now, tagged with ``label`` (e.g. "prefill_done"); the plot draws it."""
        self.sample(label)

    def sample(self, label: str | None = None) -> None:
        """Take one sample now, in addition to the periodic ones (waits for a sample in progress)."""
        with self._lock:
            now = self._clock()
            row: dict[str, Any] = {"t_s": round(now - self._t0, 6)}
            if label is not None:
                row["mark"] = str(label)
            try:
                if self._handle is not None:
                    self._read_gpu(row)
                if self._process is not None:
                    self._read_host(row, now)
            except Exception as exc:  # a bug in a reader must not kill the case
                self._fail("sampler", gpu_state.describe_error(exc), permanent=False)
            self._rows.append(row)

    def _run(self) -> None:
        while not self._stop_event.wait(self.period_s):
            self.sample()

    # ------------------------------------------------------------------ opening

    def _open_process(self) -> None:
        if self._process is not None:
            return
        try:
            import psutil

            self._process = psutil.Process(self._pid)
        except Exception as exc:
            self._unavailable["host"] = gpu_state.describe_error(exc)

    def _open_gpu(self) -> None:
        lib, reason = gpu_state.open_nvml(self._nvml_arg)
        if lib is None:
            self._unavailable["gpu"] = f"NVML unavailable: {reason}"
            return
        identity = dict(self._identity) if self._identity is not None else cuda_identity(self._index)
        if self._index is not None:
            identity.setdefault("index", self._index)
        handle, how = _resolve(lib, identity, self._visible)
        if handle is None:
            self._unavailable["gpu"] = f"no NVML device for {self.device}: {how}"
            gpu_state.close_nvml(lib)
            return
        self._nvml, self._handle = lib, handle
        self._static["nvml_device_match"] = how
        for key, fn, convert in (
            ("gpu_uuid", "nvmlDeviceGetUUID", gpu_state.text),
            ("nvml_index", "nvmlDeviceGetIndex", int),
            ("power_limit_w", "nvmlDeviceGetEnforcedPowerLimit", lambda v: v / 1000.0),
        ):
            value, why = gpu_state.call(lib, fn, handle)
            self._static[key] = convert(value) if value is not None else None
            if value is None and why:
                self._unavailable[key] = why

    # ------------------------------------------------------------------ reading

    def _fail(self, field: str, reason: str | None, *, permanent: bool) -> None:
        entry = self._failures.setdefault(field, [reason or "unknown", 0])
        entry[1] += 1
        if permanent:
            self._skip.add(field)

    def _query(self, field: str, fn: str, *args: Any) -> Any:
        """One NVML reading; None (and the reason noted) when it fails. Unsupported fields are not asked again."""
        if field in self._skip:
            self._failures[field][1] += 1
            return None
        func = getattr(self._nvml, fn, None)
        if func is None:
            self._fail(field, f"{fn} is not in this NVML binding", permanent=True)
            return None
        try:
            return func(self._handle, *args)
        except Exception as exc:
            self._fail(field, gpu_state.describe_error(exc), permanent=gpu_state.is_permanent(exc))
            return None

    def _throttle_mask(self) -> int | None:
        while self._throttle_fns:
            fn = self._throttle_fns[0]
            func = getattr(self._nvml, fn, None)
            if func is None:
                self._throttle_fns.pop(0)
                continue
            try:
                return int(func(self._handle))
            except Exception as exc:
                reason = gpu_state.describe_error(exc)
                if gpu_state.is_permanent(exc) and len(self._throttle_fns) > 1:
                    self._throttle_fns.pop(0)  # an older driver: try the older name
                    continue
                self._fail("throttle_reasons", reason, permanent=gpu_state.is_permanent(exc))
                if gpu_state.is_permanent(exc):
                    self._throttle_fns.clear()
                return None
        if "throttle_reasons" not in self._failures:
            self._fail("throttle_reasons", "no clock event reason query in this NVML binding", permanent=True)
        else:
            self._failures["throttle_reasons"][1] += 1
        return None

    def _read_gpu(self, row: dict[str, Any]) -> None:
        nvml = self._nvml
        power = self._query("power", "nvmlDeviceGetPowerUsage")
        if power is not None:
            row["power_w"] = power / 1000.0
        energy = self._query("energy", "nvmlDeviceGetTotalEnergyConsumption")
        if energy is not None:
            if self._energy0_mj is None:
                self._energy0_mj = int(energy)
            row["energy_j"] = (int(energy) - self._energy0_mj) / 1000.0
        util = self._query("utilization", "nvmlDeviceGetUtilizationRates")
        if util is not None:
            row["gpu_util_pct"] = float(util.gpu)
            row["mem_util_pct"] = float(util.memory)
        sm = self._query("sm_clock", "nvmlDeviceGetClockInfo", getattr(nvml, "NVML_CLOCK_SM", 1))
        if sm is not None:
            row["sm_clock_mhz"] = int(sm)
        mem_clock = self._query("mem_clock", "nvmlDeviceGetClockInfo", getattr(nvml, "NVML_CLOCK_MEM", 2))
        if mem_clock is not None:
            row["mem_clock_mhz"] = int(mem_clock)
        temp = self._query("temperature", "nvmlDeviceGetTemperature", getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
        if temp is not None:
            row["temperature_c"] = float(temp)
        mask = self._throttle_mask()
        if mask is not None:
            row["throttle_mask"] = mask
        mem = self._query("device_memory", "nvmlDeviceGetMemoryInfo")
        if mem is not None:
            row["device_used_bytes"] = int(mem.used)
        procs = self._query("processes", "nvmlDeviceGetComputeRunningProcesses")
        if procs is not None:
            listed = [(int(p.pid), None if p.usedGpuMemory is None else int(p.usedGpuMemory)) for p in procs]
            if listed != self._last_procs:  # the side file stores the process list only when it changes
                row["gpu_processes"] = [[pid, used] for pid, used in listed]
                self._last_procs = listed
            ours = [used for pid, used in listed if pid == self._pid and used is not None]
            if ours:
                row["process_bytes"] = sum(ours)

    def _read_host(self, row: dict[str, Any], t: float) -> None:
        try:
            times = self._process.cpu_times()
            cpu = float(times.user + times.system)
            if self._cpu0 is None:
                self._cpu0 = cpu
            row["cpu_time_s"] = cpu - self._cpu0
            if self._last_cpu is not None and t > self._last_cpu[0]:
                row["cpu_util_pct"] = 100.0 * (cpu - self._last_cpu[1]) / (t - self._last_cpu[0])
            self._last_cpu = (t, cpu)
        except Exception as exc:
            self._fail("cpu", gpu_state.describe_error(exc), permanent=False)
        try:
            row["rss_bytes"] = int(self._process.memory_info().rss)
        except Exception as exc:
            self._fail("rss", gpu_state.describe_error(exc), permanent=False)

    # ------------------------------------------------------------------ summary

    def _build(self) -> Telemetry:
        rows = tuple(self._rows)
        unavailable = dict(self._unavailable)
        for field, (reason, count) in self._failures.items():
            unavailable[field] = reason if count >= len(rows) else f"{reason} (in {count} of {len(rows)} samples)"
        summary = summarize(
            rows,
            period_s=self.period_s,
            device=self.device,
            gpu=self._kind == "cuda" and "gpu" not in self._unavailable,
            pid=self._pid,
            baseline_used_bytes=self._baseline,
            unavailable=unavailable,
            nvml=self._nvml_arg,
        )
        summary.update({k: v for k, v in self._static.items() if k in GPU_SUMMARY_KEYS})
        return Telemetry(
            summary=summary,
            timeline=rows,
            nvml_process_peak_bytes=summary["nvml_process_peak_bytes"],
            nvml_method=summary["nvml_method"],
            host_peak_rss_bytes=summary["host_peak_rss_bytes"],
        )


def _values(rows: Sequence[Mapping[str, Any]], key: str) -> list[Any]:
    return [r[key] for r in rows if r.get(key) is not None]


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _max(values: Sequence[float]) -> Any:
    return max(values) if values else None


def _min(values: Sequence[float]) -> Any:
    return min(values) if values else None


def _energy(rows: Sequence[Mapping[str, Any]], unavailable: dict[str, str]) -> dict[str, Any]:
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
    """The per-record summary of a timeline (every key in GPU_SUMMARY_KEYS plus host keys)."""
    unavailable = dict(unavailable or {})
    duration = rows[-1]["t_s"] - rows[0]["t_s"] if rows else 0.0
    summary: dict[str, Any] = {"device": device, "period_s": period_s, "samples": len(rows), "duration_s": duration}
    summary.update(dict.fromkeys(GPU_SUMMARY_KEYS))
    summary["foreign_processes"] = []
    if gpu:
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
        summary.update(
            {
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
        )
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
