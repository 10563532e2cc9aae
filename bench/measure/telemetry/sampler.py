"""Hardware telemetry sampled while a case runs: NVML on a GPU, psutil for this process on every device.

A :class:`TelemetrySampler` reads the hardware on its own daemon thread every ``period_s``
(one sample at start and one at stop, so even a short case has two) and returns a
:class:`Telemetry`: a JSON-ready summary for the record and the raw timeline for a side file.
Any NVML failure (no driver, NotSupported, no permission) leaves that field ``None`` with its
reason in ``summary["unavailable"]``; telemetry never fails a case. The GPU readings themselves
are :class:`~bench.measure.telemetry.nvml.NvmlReader`'s; the summary is
:func:`~bench.measure.telemetry.summary.summarize`'s.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bench.errors import BadInputError
from bench.measure.telemetry import gpu_state
from bench.measure.telemetry.failures import FailureLog
from bench.measure.telemetry.nvml import NvmlReader, open_reader, parse_device
from bench.measure.telemetry.summary import summarize
from bench.results.telemetry_fields import GPU_SUMMARY_KEYS

DEFAULT_PERIOD_S = 0.02


@dataclass(frozen=True)
class Telemetry:
    """What a sampler saw: a JSON-ready summary (units in key names) and the raw timeline."""

    summary: dict[str, Any]
    timeline: tuple[dict[str, Any], ...]
    nvml_process_peak_bytes: int | None = None
    nvml_method: str | None = None
    host_peak_rss_bytes: int | None = None


class TelemetrySampler:
    """Samples hardware counters on a daemon thread while a case runs; a context manager too.

    ``device``: ``"cpu"`` samples only this process (CPU time, RSS); ``"cuda"``/``"cuda:N"`` also
    reads NVML for that device (power, energy, utilization, clocks, temperature, clock event
    reasons, device memory, processes). ``nvml``: a pynvml-like module (None imports pynvml and
    calls nvmlInit/nvmlShutdown). ``clock``: seconds, monotonic. ``pid``: the process whose GPU
    memory and host usage are tracked (default this one); ``process``: a psutil-like process
    object to read instead. ``baseline_used_bytes``: device used memory before this process
    touched CUDA (see :func:`~bench.measure.telemetry.nvml.device_used_bytes`). ``identity``: the
    CUDA device's index/uuid/pci_bus_id (default from torch, if imported). ``visible``:
    CUDA_VISIBLE_DEVICES (default from the environment). ``background``: False starts no thread: samples
    are taken at start, at stop and wherever :meth:`sample` is called (between timed repetitions, where a
    sampling thread would take CPU time and the GIL from the work being timed); ``period_s`` is then only
    recorded.
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
        background: bool = True,
    ) -> None:
        if not period_s > 0:
            raise BadInputError(f"telemetry period {period_s!r} s must be a positive number of seconds, e.g. 0.02")
        self.device = device
        self.period_s = float(period_s)
        self.background = bool(background)
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
        self._started = False
        self._rows: list[dict[str, Any]] = []
        self._failures = FailureLog()
        self._gpu: NvmlReader | None = None
        self._static: dict[str, Any] = {}
        self._unavailable: dict[str, str] = {}
        self._t0 = 0.0
        self._cpu0: float | None = None
        self._last_cpu: tuple[float, float] | None = None
        self._result: Telemetry | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Open NVML and psutil, take the first sample and start the sampling thread."""
        if self._started or self._result is not None:
            raise RuntimeError("this TelemetrySampler was already started; make a new one per case")
        self._open_process()
        if self._kind == "cuda":
            self._open_gpu()
        else:
            self._unavailable["gpu"] = f"device is {self.device}: no GPU telemetry"
        self._t0 = self._clock()
        self._started = True
        self.sample()
        if self.background:
            self._thread = threading.Thread(target=self._run, name=f"telemetry-{self.device}", daemon=True)
            self._thread.start()

    def stop(self) -> Telemetry:
        """Stop the thread (promptly), take a last sample, close NVML and return the telemetry."""
        if self._result is not None:
            return self._result
        if not self._started:
            raise RuntimeError("TelemetrySampler.stop() called before start()")
        self._stop_event.set()
        wait_s = max(5.0, 10 * self.period_s)
        if self._thread is not None:
            self._thread.join(timeout=wait_s)
        # an NVML call hung (a lost GPU): keep what was sampled
        if self._thread is not None and self._thread.is_alive():
            self._failures.fail("sampler", f"sampling thread did not stop within {wait_s:g} s", permanent=True)
            self._result = self._build()
            return self._result
        self.sample()
        if self._gpu is not None:
            self._gpu.close()
            self._gpu = None
        self._result = self._build()
        return self._result

    @property
    def started_at(self) -> float:
        """The sampler clock's reading at :meth:`start` (timeline rows' ``t_s`` count from it)."""
        return self._t0

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
                if self._gpu is not None:
                    self._gpu.read(row)
                if self._process is not None:
                    self._read_host(row, now)
            except Exception as exc:  # a bug in a reader must not kill the case
                self._failures.fail("sampler", gpu_state.describe_error(exc), permanent=False)
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
        reader, why = open_reader(
            self.device,
            self._index,
            pid=self._pid,
            nvml=self._nvml_arg,
            identity=self._identity,
            visible=self._visible,
            failures=self._failures,
        )
        if reader is None:
            self._unavailable["gpu"] = why or "unknown"
            return
        self._gpu = reader
        static, unavailable = reader.static_fields()
        self._static.update(static)
        self._unavailable.update(unavailable)

    # ------------------------------------------------------------------ reading

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
            self._failures.fail("cpu", gpu_state.describe_error(exc), permanent=False)
        try:
            row["rss_bytes"] = int(self._process.memory_info().rss)
        except Exception as exc:
            self._failures.fail("rss", gpu_state.describe_error(exc), permanent=False)

    # ------------------------------------------------------------------ summary

    def _build(self) -> Telemetry:
        rows = tuple(self._rows)
        unavailable = dict(self._unavailable)
        unavailable.update(self._failures.reasons(len(rows)))
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
