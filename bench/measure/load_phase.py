"""Measure a model load as a user's script meets it: wall time, allocator peak, reserved after, NVML, host RSS.

:class:`LoadMeter` wraps the load call. Before it: the host's VmHWM and (on a GPU) torch's allocator peak
statistics are reset, and an NVML sampler thread starts. :meth:`LoadMeter.loaded`, called as soon as the
load returns and before anything frees memory, reads the :class:`~bench.results.load_phase.LoadPhase`. The
worker then runs the user view (:mod:`bench.measure.user_view`) on the same meter, and only then empties
the allocator's cache for the clean steady-state measurement.

Torch reads used (torch 2.x ``torch.cuda``; checked against torch 2.14): ``reset_peak_memory_stats``,
``max_memory_allocated`` / ``max_memory_reserved`` (peaks since the reset), ``memory_allocated`` /
``memory_reserved`` (now). The torch module and the sampler factory are injected, so the CUDA and NVML
paths run under fakes on a CPU. An engine that allocates device memory outside torch (llama.cpp: ggml's own
CUDA buffers) measures with ``torch_allocator=False``: the allocator fields stay None, NVML and host RSS remain.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.measure.memory import host_peak_rss_bytes, host_rss_bytes, reset_host_peak
from bench.results.load_phase import LoadPhase

SamplerFactory = Callable[..., Any]  # (device, background=True) -> a started-on-demand TelemetrySampler


def nvml_reading(make_sampler: SamplerFactory, device: str) -> tuple[int | None, str | None]:
    """This process's device memory per NVML now (one sample, no thread), and how it was read."""
    sampler = make_sampler(device, background=False)
    sampler.start()
    tel = sampler.stop()
    return tel.nvml_process_peak_bytes, tel.nvml_method


def larger(*values: int | None) -> int | None:
    """The largest of the readings that exist; None when none does."""
    known = [v for v in values if v is not None]
    return max(known) if known else None


class LoadMeter:
    """Measures one load: use as ``with LoadMeter(...) as meter: load(); phase = meter.loaded(key)``.

    ``make_sampler(device, background=...)``: the worker's telemetry sampler factory (NVML with the
    injected handle); used on a GPU only: a CPU's host peak comes from the kernel's VmHWM, exact without
    sampling. ``clock``: seconds. ``torch_module``: injected for tests (default: torch). ``torch_allocator``:
    False where the load does not allocate through torch (its allocator fields then stay None, torch untouched).
    """

    def __init__(
        self,
        device: str,
        make_sampler: SamplerFactory,
        clock: Callable[[], float] = time.perf_counter,
        torch_module: Any = None,
        torch_allocator: bool = True,
    ) -> None:
        self.device = device
        self.make_sampler = make_sampler
        self.clock = clock
        self.cuda = device.startswith("cuda")
        self.torch_allocator = torch_allocator and self.cuda
        self._torch = torch_module
        self._sampler: Any = None
        self._t0 = 0.0
        self.phase: LoadPhase | None = None

    @property
    def torch_cuda(self) -> Any:
        """``torch.cuda`` (or the injected module's)."""
        if self._torch is None:
            import torch

            self._torch = torch
        return self._torch.cuda

    def sync(self) -> None:
        """Wait for the device's queued work, so the readings that follow include it (no-op on a CPU)."""
        if self.torch_allocator:
            self.torch_cuda.synchronize(self.device)

    def __enter__(self) -> LoadMeter:
        self._host_before = host_rss_bytes()
        reset_host_peak()
        if self.cuda:
            self.sync()
            if self.torch_allocator:
                self.torch_cuda.reset_peak_memory_stats(self.device)
            self._sampler = self.make_sampler(self.device)
            self._sampler.start()
        self._t0 = self.clock()
        return self

    def loaded(self, key: str) -> LoadPhase:
        """The load's readings, taken now (right after the load returned; nothing freed yet)."""
        self.sync()
        load_s = self.clock() - self._t0
        host_peak, host_after = host_peak_rss_bytes(), host_rss_bytes()
        device: dict[str, Any] = {}
        if self.torch_allocator:
            cuda = self.torch_cuda
            device = {
                "load_peak_allocated_bytes": int(cuda.max_memory_allocated(self.device)),
                "load_allocated_after_bytes": int(cuda.memory_allocated(self.device)),
                "load_reserved_after_bytes": int(cuda.memory_reserved(self.device)),
            }
        if self.cuda:
            tel = self.stop_sampler()
            now, method = nvml_reading(self.make_sampler, self.device)
            device.update(
                load_nvml_process_bytes=now,
                load_nvml_process_peak_bytes=larger(tel.nvml_process_peak_bytes if tel else None, now),
                nvml_method=method or (tel.nvml_method if tel else None),
            )
        self.phase = LoadPhase(
            load_s=load_s,
            load_host_rss_before_bytes=self._host_before,
            load_host_peak_rss_bytes=host_peak,
            load_host_rss_after_bytes=host_after,
            loaded_for_key=key,
            **device,
        )
        return self.phase

    def stop_sampler(self) -> Any:
        """Stop the running sampler thread, if any; its telemetry (None when none ran)."""
        sampler, self._sampler = self._sampler, None
        return sampler.stop() if sampler is not None else None

    def __exit__(self, *exc: object) -> None:
        self.stop_sampler()  # a failed load must not leave a sampler thread running
