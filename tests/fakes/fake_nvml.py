"""A scripted stand-in for the pynvml module: the same function names, readings given per call.

Each reading is a list consumed one element per call (the last repeats); an element that is an
exception is raised instead, one that is callable is called for the reading (a reading that follows
a simulated allocator, see :class:`FakeCudaAllocator`). Calls are counted per function name.
"""

from __future__ import annotations

import collections
from types import SimpleNamespace
from typing import Any

GIB = 1024**3


class FakeNVMLError(Exception):
    """Like pynvml.NVMLError: carries the NVML return code in ``value``."""

    _TEXT = {
        2: "Invalid Argument",
        3: "Not Supported",
        4: "Insufficient Permissions",
        6: "Not Found",
        9: "Driver Not Loaded",
        12: "NVML Shared Library Not Found",
        13: "Function Not Found",
        15: "GPU is lost",
    }

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return self._TEXT.get(self.value, f"NVML error {self.value}")


def not_supported() -> FakeNVMLError:
    return FakeNVMLError(3)


def no_permission() -> FakeNVMLError:
    return FakeNVMLError(4)


def proc(pid: int, used: int | None) -> SimpleNamespace:
    return SimpleNamespace(pid=pid, usedGpuMemory=used)


class FakeGPU:
    """One device: fixed facts plus scripted readings (field -> list of values or exceptions)."""

    def __init__(
        self,
        *,
        name: str = "NVIDIA H200",
        uuid: str = "GPU-8d1f3c2a-0000-4000-8000-000000000001",
        bus_id: str = "00000000:3B:00.0",
        memory_bytes: int = 150_754_820_096,
        **readings: Any,
    ) -> None:
        self.name, self.uuid, self.bus_id, self.memory_bytes = name, uuid, bus_id, memory_bytes
        defaults: dict[str, list[Any]] = {
            "power_mw": [300_000],
            "energy_mj": [not_supported()],
            "util": [(90, 40)],
            "sm_clock": [1980],
            "mem_clock": [2619],
            "temperature": [55],
            "throttle": [0],
            "used_bytes": [2 * GIB],
            "processes": [[]],
            "graphics_processes": [[]],
            "persistence": [1],
            "compute_mode": [0],
            "power_limit_mw": [700_000],
            "default_power_limit_mw": [700_000],
            "mig": [[0, 0]],
            "ecc": [0],
        }
        defaults.update({k: list(v) for k, v in readings.items()})
        self.readings = defaults
        self.calls: collections.Counter[str] = collections.Counter()

    def next(self, field: str) -> Any:
        self.calls[field] += 1
        script = self.readings[field]
        value = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(value, BaseException):
            raise value
        if callable(value):  # a live reading: e.g. the process's bytes from a simulated allocator, now
            value = value()
        return value


class FakeNVML:
    """Module-like object with pynvml's names. ``init_error``: raised by nvmlInit."""

    NVMLError = FakeNVMLError
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0
    NVML_VOLATILE_ECC = 0
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
    nvmlClocksEventReasonGpuIdle = 0x1
    nvmlClocksEventReasonApplicationsClocksSetting = 0x2
    nvmlClocksEventReasonSwPowerCap = 0x4
    nvmlClocksEventReasonHwSlowdown = 0x8
    nvmlClocksEventReasonSwThermalSlowdown = 0x20
    nvmlClocksEventReasonHwThermalSlowdown = 0x40

    def __init__(
        self,
        gpus: list[FakeGPU] | None = None,
        *,
        init_error: BaseException | None = None,
        driver_version: str = "550.54.15",
        cuda_driver_version: int | BaseException = 12040,
    ) -> None:
        self.gpus = [FakeGPU()] if gpus is None else gpus
        self.init_error = init_error
        self.driver_version = driver_version
        self.cuda_driver_version = cuda_driver_version  # nvmlSystemGetCudaDriverVersion: 12040 is CUDA 12.4
        self.init_calls = 0
        self.shutdown_calls = 0

    # library
    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver_version

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        if isinstance(self.cuda_driver_version, BaseException):
            raise self.cuda_driver_version
        return self.cuda_driver_version

    # handles
    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGPU:
        if not 0 <= index < len(self.gpus):
            raise FakeNVMLError(2)
        return self.gpus[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeGPU:
        for g in self.gpus:
            if g.uuid == uuid:
                return g
        raise FakeNVMLError(6)

    def nvmlDeviceGetHandleByPciBusId(self, bus_id: str) -> FakeGPU:
        for g in self.gpus:
            if g.bus_id == bus_id:
                return g
        raise FakeNVMLError(6)

    # facts
    def nvmlDeviceGetIndex(self, h: FakeGPU) -> int:
        return self.gpus.index(h)

    def nvmlDeviceGetName(self, h: FakeGPU) -> str:
        return h.name

    def nvmlDeviceGetUUID(self, h: FakeGPU) -> str:
        return h.uuid

    def nvmlDeviceGetPciInfo(self, h: FakeGPU) -> SimpleNamespace:
        return SimpleNamespace(busId=h.bus_id.encode())

    def nvmlDeviceGetMemoryInfo(self, h: FakeGPU) -> SimpleNamespace:
        used = h.next("used_bytes")
        return SimpleNamespace(total=h.memory_bytes, used=used, free=h.memory_bytes - used)

    def nvmlDeviceGetPersistenceMode(self, h: FakeGPU) -> int:
        return h.next("persistence")

    def nvmlDeviceGetComputeMode(self, h: FakeGPU) -> int:
        return h.next("compute_mode")

    def nvmlDeviceGetEnforcedPowerLimit(self, h: FakeGPU) -> int:
        return h.next("power_limit_mw")

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h: FakeGPU) -> int:
        return h.next("default_power_limit_mw")

    def nvmlDeviceGetMigMode(self, h: FakeGPU) -> list[int]:
        return h.next("mig")

    def nvmlDeviceGetTotalEccErrors(self, h: FakeGPU, error_type: int, counter_type: int) -> int:
        assert (error_type, counter_type) == (1, 0), "asked for something other than volatile uncorrected"
        return h.next("ecc")

    # readings
    def nvmlDeviceGetPowerUsage(self, h: FakeGPU) -> int:
        return h.next("power_mw")

    def nvmlDeviceGetTotalEnergyConsumption(self, h: FakeGPU) -> int:
        return h.next("energy_mj")

    def nvmlDeviceGetUtilizationRates(self, h: FakeGPU) -> SimpleNamespace:
        gpu, memory = h.next("util")
        return SimpleNamespace(gpu=gpu, memory=memory)

    def nvmlDeviceGetClockInfo(self, h: FakeGPU, clock_type: int) -> int:
        return h.next({1: "sm_clock", 2: "mem_clock"}[clock_type])

    def nvmlDeviceGetTemperature(self, h: FakeGPU, sensor: int) -> int:
        return h.next("temperature")

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: FakeGPU) -> int:
        return h.next("throttle")

    def nvmlDeviceGetComputeRunningProcesses(self, h: FakeGPU) -> list[SimpleNamespace]:
        return [proc(pid, used) for pid, used in h.next("processes")]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: FakeGPU) -> list[SimpleNamespace]:
        return [proc(pid, used) for pid, used in h.next("graphics_processes")]


class FakeClock:
    """Returns the scripted times in order (the last repeats)."""

    def __init__(self, times: list[float]) -> None:
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]


class FakeProcess:
    """psutil.Process stand-in: scripted (user+system) CPU seconds and RSS bytes per call."""

    def __init__(self, cpu_s: list[float], rss: list[int]) -> None:
        self.cpu_s, self.rss = list(cpu_s), list(rss)

    def cpu_times(self) -> SimpleNamespace:
        value = self.cpu_s.pop(0) if len(self.cpu_s) > 1 else self.cpu_s[0]
        return SimpleNamespace(user=value, system=0.0)

    def memory_info(self) -> SimpleNamespace:
        return SimpleNamespace(rss=self.rss.pop(0) if len(self.rss) > 1 else self.rss[0])


class FakeCudaAllocator:
    """A ``torch.cuda`` stand-in with a caching allocator's bookkeeping, for code that reads torch's memory
    statistics: ``alloc``/``free`` move the live bytes; a free keeps its block in the pool (reserved stays)
    until ``empty_cache``; an allocation takes cached bytes first and reserves only the rest. Peaks follow
    torch's semantics: since the last ``reset_peak_memory_stats``. ``process_bytes()``: what NVML would list
    for the process (``context_bytes`` plus the pool), for :class:`FakeGPU`'s callable readings."""

    def __init__(self, context_bytes: int = 500 * 1024**2) -> None:
        self.context_bytes = context_bytes
        self.allocated = self.reserved = self.peak_allocated = self.peak_reserved = 0
        self.calls: list[str] = []

    def alloc(self, n: int) -> None:
        self.allocated += n
        self.reserved = max(self.reserved, self.allocated)
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        self.peak_reserved = max(self.peak_reserved, self.reserved)

    def free(self, n: int) -> None:
        self.allocated -= n

    def empty_cache(self) -> None:
        self.calls.append("empty_cache")
        self.reserved = self.allocated

    def process_bytes(self) -> int:
        return self.context_bytes + self.reserved

    # torch.cuda's names
    def synchronize(self, device: str | None = None) -> None:
        self.calls.append("synchronize")

    def reset_peak_memory_stats(self, device: str | None = None) -> None:
        self.calls.append("reset_peak_memory_stats")
        self.peak_allocated, self.peak_reserved = self.allocated, self.reserved

    def max_memory_allocated(self, device: str | None = None) -> int:
        return self.peak_allocated

    def max_memory_reserved(self, device: str | None = None) -> int:
        return self.peak_reserved

    def memory_allocated(self, device: str | None = None) -> int:
        return self.allocated

    def memory_reserved(self, device: str | None = None) -> int:
        return self.reserved
