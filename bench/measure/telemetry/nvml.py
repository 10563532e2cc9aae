"""One GPU's NVML readings for the telemetry sampler, and the device naming both sides agree on.

:class:`NvmlReader` reads one sample (power, energy, utilisation, clocks, temperature, clock
event reasons, device memory, processes) from an injected pynvml-like module and device handle;
:func:`open_reader` finds that handle for a CUDA device. A failed query leaves its field out of
the sample and is logged in a :class:`~bench.measure.telemetry.failures.FailureLog`; it never raises.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from bench.errors import BadInputError
from bench.measure.telemetry import gpu_state
from bench.measure.telemetry.failures import FailureLog

# Clock event ("throttle") reason queries, newest name first; older drivers have only the second.
THROTTLE_QUERIES = ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons")


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


def resolve_handle(nvml: Any, identity: Mapping[str, Any], visible: str | None) -> tuple[Any, str]:
    """The NVML handle of the CUDA device ``identity`` describes: ``(handle, how_matched)`` or ``(None, reason)``."""
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
        handle, _ = resolve_handle(lib, ident, os.environ.get("CUDA_VISIBLE_DEVICES"))
        if handle is None:
            return None
        mem, _ = gpu_state.call(lib, "nvmlDeviceGetMemoryInfo", handle)
        return int(mem.used) if mem is not None else None
    finally:
        gpu_state.close_nvml(lib)


class NvmlReader:
    """Reads one GPU through an open NVML module and device handle, one sample at a time.

    ``pid`` is the process whose device memory is picked out of the process list; ``failures``
    collects the queries that failed (shared with the sampler, so one log covers every reading).
    """

    def __init__(
        self, nvml: Any, handle: Any, *, pid: int, failures: FailureLog | None = None, match: str = ""
    ) -> None:
        self.nvml = nvml
        self.handle = handle
        self.pid = pid
        self.match = match
        self.failures = failures if failures is not None else FailureLog()
        self._energy0_mj: int | None = None
        self._last_procs: list[tuple[int, int | None]] | None = None
        self._throttle_fns: list[str] = list(THROTTLE_QUERIES)

    def static_fields(self) -> tuple[dict[str, Any], dict[str, str]]:
        """Facts read once: how the device was matched, its UUID, NVML index, power limit; and why any is missing."""
        static: dict[str, Any] = {"nvml_device_match": self.match}
        unavailable: dict[str, str] = {}
        for key, fn, convert in (
            ("gpu_uuid", "nvmlDeviceGetUUID", gpu_state.text),
            ("nvml_index", "nvmlDeviceGetIndex", int),
            ("power_limit_w", "nvmlDeviceGetEnforcedPowerLimit", lambda v: v / 1000.0),
        ):
            value, why = gpu_state.call(self.nvml, fn, self.handle)
            static[key] = convert(value) if value is not None else None
            if value is None and why:
                unavailable[key] = why
        return static, unavailable

    def close(self) -> None:
        """Shut NVML down (pairs the init of :func:`open_reader`)."""
        gpu_state.close_nvml(self.nvml)

    def read(self, row: dict[str, Any]) -> None:
        """Add one sample's GPU readings to ``row`` (keys with units: ``power_w``, ``sm_clock_mhz``, ...)."""
        self._read_power(row)
        self._read_activity(row)
        self._read_memory(row)

    def _query(self, field: str, fn: str, *args: Any) -> Any:
        """One NVML reading; None (and the reason noted) when it fails. Unsupported fields are not asked again."""
        if self.failures.skip(field):
            return None
        func = getattr(self.nvml, fn, None)
        if func is None:
            self.failures.fail(field, f"{fn} is not in this NVML binding", permanent=True)
            return None
        try:
            return func(self.handle, *args)
        except Exception as exc:
            self.failures.fail(field, gpu_state.describe_error(exc), permanent=gpu_state.is_permanent(exc))
            return None

    def _throttle_mask(self) -> int | None:
        while self._throttle_fns:
            fn = self._throttle_fns[0]
            func = getattr(self.nvml, fn, None)
            if func is None:
                self._throttle_fns.pop(0)
                continue
            try:
                return int(func(self.handle))
            except Exception as exc:
                reason = gpu_state.describe_error(exc)
                if gpu_state.is_permanent(exc) and len(self._throttle_fns) > 1:
                    self._throttle_fns.pop(0)  # an older driver: try the older name
                    continue
                self.failures.fail("throttle_reasons", reason, permanent=gpu_state.is_permanent(exc))
                if gpu_state.is_permanent(exc):
                    self._throttle_fns.clear()
                return None
        if "throttle_reasons" not in self.failures:
            self.failures.fail("throttle_reasons", "no clock event reason query in this NVML binding", permanent=True)
        else:
            self.failures.count_again("throttle_reasons")
        return None

    def _read_power(self, row: dict[str, Any]) -> None:
        power = self._query("power", "nvmlDeviceGetPowerUsage")
        if power is not None:
            row["power_w"] = power / 1000.0
        energy = self._query("energy", "nvmlDeviceGetTotalEnergyConsumption")
        if energy is not None:
            if self._energy0_mj is None:
                self._energy0_mj = int(energy)
            row["energy_j"] = (int(energy) - self._energy0_mj) / 1000.0

    def _read_activity(self, row: dict[str, Any]) -> None:
        nvml = self.nvml
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

    def _read_memory(self, row: dict[str, Any]) -> None:
        mem = self._query("device_memory", "nvmlDeviceGetMemoryInfo")
        if mem is not None:
            row["device_used_bytes"] = int(mem.used)
        procs = self._query("processes", "nvmlDeviceGetComputeRunningProcesses")
        if procs is not None:
            listed = [(int(p.pid), None if p.usedGpuMemory is None else int(p.usedGpuMemory)) for p in procs]
            if listed != self._last_procs:  # the side file stores the process list only when it changes
                row["gpu_processes"] = [[pid, used] for pid, used in listed]
                self._last_procs = listed
            ours = [used for pid, used in listed if pid == self.pid and used is not None]
            if ours:
                row["process_bytes"] = sum(ours)


def open_reader(
    device: str,
    index: int | None,
    *,
    pid: int,
    nvml: Any = None,
    identity: Mapping[str, Any] | None = None,
    visible: str | None = None,
    failures: FailureLog | None = None,
) -> tuple[NvmlReader | None, str | None]:
    """Open NVML and find the handle of CUDA device ``device`` (index ``index``): ``(reader, None)`` or ``(None, why)``.

    ``nvml``: a pynvml-like module (None imports pynvml); ``identity``: the device's index/uuid/
    pci_bus_id (default from torch, if imported); ``visible``: CUDA_VISIBLE_DEVICES. The reason
    reads as the sampler's ``unavailable["gpu"]``.
    """
    lib, reason = gpu_state.open_nvml(nvml)
    if lib is None:
        return None, f"NVML unavailable: {reason}"
    ident = dict(identity) if identity is not None else cuda_identity(index)
    if index is not None:
        ident.setdefault("index", index)
    handle, how = resolve_handle(lib, ident, visible)
    if handle is None:
        gpu_state.close_nvml(lib)
        return None, f"no NVML device for {device}: {how}"
    return NvmlReader(lib, handle, pid=pid, failures=failures, match=how), None
