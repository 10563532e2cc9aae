"""Run cases in worker processes: one per model x precision group (or per case), records appended as cases end.

A worker that crashes, hangs past the timeout or is killed costs only its current case: the case is
recorded (error / timeout) and a fresh worker takes the rest; so does a worker whose case failed with a
CUDA error other than out of memory (its CUDA context may be poisoned). Workers come from a forkserver
that has already imported torch and transformers (never CUDA), so isolation does not pay the import per
worker. A worker dies with its runner: killed without a chance to clean up (SIGKILL), the runner cannot
stop its workers, so each worker watches the runner itself (see :func:`die_with_runner`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.config.spec import CaseSpec, TimingPolicy
from bench.results.record import Memory, Record
from bench.results.run_folder import RunFolder

PRELOAD = ["torch", "transformers", "bench.measure.worker"]
# bitsandbytes takes seconds to import; preloading it is safe only where no CUDA device is used (its
# import may initialise CUDA, which a forked worker cannot inherit), so GPU workers import it lazily.
PRELOAD_CPU_QUANTIZED = ["bench.measure.bnb_preload"]  # bitsandbytes, imported quietly (bench.measure.bnb_runtime)
# What every worker imports on its first model load (transformers' modeling and generation code, with scipy
# under it): about 2.4 s per worker on a loaded 2-core host (python -X importtime), once per model x
# precision group. Preloaded for CPU-only runs, like bitsandbytes (GPU workers keep importing it lazily).
PRELOAD_CPU = ["transformers.modeling_layers", "transformers.masking_utils", "transformers.generation.utils"]
LOAD_ALLOWANCE_S = 900.0  # a group's first case may also build and cache a full-size random checkpoint
RUNNER_WATCH_PERIOD_S = 0.5  # how often a worker checks that its runner is still alive
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class RunOptions:
    """How cases are run: where records go, isolation, resume, a simulated smaller card or host."""

    out_dir: Path
    isolate: str = "model"  # "model": one worker per group; "case": one per case
    resume: bool = False
    memory_cap_bytes: int | None = None
    host_memory_headroom_bytes: int | None = None  # simulate a small host: address space a worker may add
    progress: bool = True
    # Shows progress: ``progress_factory(total)`` gives a context manager with start_case(spec) and
    # end_case(record). Injected by the command (measurement never draws on the terminal itself).
    progress_factory: Callable[[int], Any] | None = field(default=None, compare=False)
    run_id: str = ""
    # the hub stays offline for the run's workers (HF_HUB_OFFLINE=1) unless downloads were allowed (--allow-download)
    allow_download: bool = False
    in_process: bool = False  # run in this process (debugging; a crash takes the run down)
    on_record: Callable[[Record], None] | None = field(default=None, compare=False)
    # applied to each record before it is written (the quality pass's block: bench.measure.quality_stage)
    annotate: Callable[[Record], Record] | None = field(default=None, compare=False)


def hub_offline_for_workers(allow_download: bool) -> None:
    """Keep the Hugging Face Hub offline in this process and the workers it starts (``HF_HUB_OFFLINE=1``, read by
    huggingface_hub, transformers and kernels), unless downloads are allowed; an offline setting already in the
    environment is left as it is either way. Set before the forkserver starts: its workers inherit it."""
    if not allow_download:
        os.environ["HF_HUB_OFFLINE"] = "1"


def quiet_libraries() -> None:
    """No library progress bars or info logs in the middle of the run's own progress bar."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def _limit_address_space(headroom_bytes: int) -> None:
    """Let this process grow by at most ``headroom_bytes`` of address space (allocations beyond fail)."""
    import resource

    with open("/proc/self/status", encoding="utf-8") as fh:
        size = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (size + headroom_bytes, resource.RLIM_INFINITY))


def _runner_alive(pid: int, started: float | None) -> bool:
    """True while the process ``pid`` runs and is the one that started at ``started`` (not a zombie, not reused)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and (started is None or proc.create_time() == started)
    except psutil.Error:
        return False


def die_with_runner(runner_pid: int, period_s: float = RUNNER_WATCH_PERIOD_S) -> threading.Thread | None:
    """Make this worker process die when the runner ``runner_pid`` does, however the runner ends.

    A worker's parent is the forkserver, not the runner, and the forkserver outlives a killed runner as long
    as any worker does (each worker inherits the write end of the pipe whose end-of-file tells the forkserver
    to exit). So a daemon thread checks every ``period_s`` that the runner still runs (a zombie counts as
    dead, a reused pid too) and SIGKILLs this worker when it does not; then the forkserver exits as well.
    On Linux the parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``) also kills the worker at once
    if the forkserver dies first. Returns the thread; never returns when the runner is already gone.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still guards
    import psutil

    try:
        started: float | None = psutil.Process(runner_pid).create_time()
    except psutil.Error:
        started = None
    if started is None or not _runner_alive(runner_pid, started):
        os.kill(os.getpid(), signal.SIGKILL)
        return None

    def watch() -> None:
        while _runner_alive(runner_pid, started):
            time.sleep(period_s)
        os.kill(os.getpid(), signal.SIGKILL)  # nothing to clean up that the kernel does not: GPU memory included

    thread = threading.Thread(target=watch, name="bench-runner-watch", daemon=True)
    thread.start()
    return thread


def _worker_main(
    conn: Connection, memory_cap_bytes: int | None, host_headroom: int | None, runner_pid: int | None = None
) -> None:
    """Worker loop: receive (spec, policy, run_id), send back the record, the telemetry timeline and whether
    the process's CUDA context may be poisoned."""
    if runner_pid is not None:
        die_with_runner(runner_pid)
    quiet_libraries()
    if host_headroom:
        _limit_address_space(host_headroom)
    from bench.measure.worker import CaseRunner

    runner = CaseRunner(memory_cap_bytes=memory_cap_bytes)
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        spec, policy, run_id = message
        conn.send(("started", None))
        record = runner.run(CaseSpec.from_dict(spec), TimingPolicy.from_dict(policy), run_id)
        conn.send(("record", (record.to_dict(), list(runner.last_timeline), runner.context_poisoned)))


_CONTEXT: Any = None


def _mp_context(preload_quantization: bool = False, cpu_only: bool = False) -> Any:
    """The worker start context: a forkserver with torch and transformers imported (created once per process)."""
    global _CONTEXT
    if _CONTEXT is None:
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        _CONTEXT = mp.get_context(method)
        if method == "forkserver":
            extra = (PRELOAD_CPU_QUANTIZED if preload_quantization else []) + (PRELOAD_CPU if cpu_only else [])
            _CONTEXT.set_forkserver_preload(PRELOAD + extra)
    return _CONTEXT


class Worker:
    """One worker process and its pipe."""

    def __init__(self, options: RunOptions):
        ctx = _mp_context()
        self.conn, child = ctx.Pipe()
        args = (child, options.memory_cap_bytes, options.host_memory_headroom_bytes, os.getpid())
        self.process = ctx.Process(target=_worker_main, args=args, daemon=True)
        self.process.start()
        child.close()
        self.loaded_group: tuple[str, ...] | None = None

    def ask(self, spec: CaseSpec, policy: TimingPolicy, run_id: str, timeout_s: float) -> tuple[str, Any]:
        """Send a case and wait for its record: ('record', payload), ('timeout', None) or ('died', exitcode)."""
        try:
            self.conn.send((spec.to_dict(), policy.to_dict(), run_id))
        except OSError:
            return "died", self._exitcode()
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout", None
            try:
                if self.conn.poll(min(remaining, 0.5)):
                    kind, payload = self.conn.recv()
                    if kind == "record":
                        return kind, payload
                    continue
            except (EOFError, OSError):
                return "died", self._exitcode()
            if not self.process.is_alive():
                if self.conn.poll(0):
                    continue
                return "died", self._exitcode()

    def _exitcode(self) -> int | None:
        self.process.join(timeout=5)
        return self.process.exitcode

    def close(self, kill: bool = False) -> None:
        """Stop the worker: politely, or by SIGKILL."""
        if kill and self.process.is_alive():
            os.kill(self.process.pid, signal.SIGKILL)
        else:
            try:
                self.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.conn.close()


def _failed_record(spec: CaseSpec, policy: TimingPolicy, status: str, error: str, options: RunOptions) -> Record:
    from bench.units import utc_now

    return Record(
        spec=spec,
        status=status,
        error=error,
        run_id=options.run_id,
        policy=policy,
        device=spec.device,
        host=socket.gethostname(),
        started_utc=utc_now(),
        memory=Memory(memory_cap_bytes=options.memory_cap_bytes),
    )


def _died_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.Signals._value2member_map_ else str(-exitcode)
        hint = " (killed: the host may have run out of memory)" if name == "SIGKILL" else ""
        return f"worker process died with signal {name}{hint}"
    return f"worker process exited with status {exitcode}"


def pending_cases(cases: Sequence[CaseSpec], options: RunOptions) -> list[CaseSpec]:
    """The cases still to run: all of them, or with ``resume`` those without a record; no duplicates."""
    done = RunFolder(options.out_dir).completed_keys() if options.resume else set()
    seen: set[str] = set()
    todo = []
    for case in cases:
        if case.key in done or case.key in seen:
            continue
        seen.add(case.key)
        todo.append(case)
    return todo


def order_for_groups(cases: Sequence[CaseSpec]) -> list[CaseSpec]:
    """Cases ordered so each group's cases run together (groups in first-seen order, cases kept in order)."""
    groups: dict[tuple[str, ...], list[CaseSpec]] = {}
    for case in cases:
        groups.setdefault((*case.group, case.attn_implementation), []).append(case)
    return [c for members in groups.values() for c in members]


class _InProcess:
    """Runs cases in this process (debugging: a crash takes the run down)."""

    def __init__(self, options: RunOptions):
        from bench.measure.worker import CaseRunner

        self.runner = CaseRunner(memory_cap_bytes=options.memory_cap_bytes)
        self.run_id = options.run_id

    def run(self, spec: CaseSpec, policy: TimingPolicy) -> tuple[Record, list[dict[str, Any]]]:
        record = self.runner.run(spec, policy, self.run_id)
        return record, list(self.runner.last_timeline)

    def close(self) -> None:
        self.runner.release()


class _Isolated:
    """Runs cases in worker processes: one per group (or per case), replaced after a crash or a timeout."""

    def __init__(self, options: RunOptions):
        self.options = options
        self.worker: Worker | None = None
        self.group: tuple[str, ...] | None = None

    def run(self, spec: CaseSpec, policy: TimingPolicy) -> tuple[Record, list[dict[str, Any]]]:
        group = (*spec.group, spec.attn_implementation)
        if self.worker is not None and (self.options.isolate == "case" or group != self.group):
            self.close()
        if self.worker is None:
            self.worker, self.group = Worker(self.options), group
        worker = self.worker
        timeout = policy.timeout_s + (LOAD_ALLOWANCE_S if worker.loaded_group != group else 0)
        kind, payload = worker.ask(spec, policy, self.options.run_id, timeout)
        if kind == "record":
            record, timeline, poisoned = Record.from_dict(payload[0]), payload[1], payload[2]
            if poisoned:  # a sticky CUDA error poisons the context: no later case may run in this process
                worker.close(kill=True)
                self.worker = None
                note = "\n(a CUDA error other than out of memory: the worker was replaced before the next case)"
                return record.replace(error=(record.error or "") + note), timeline
            # after an OOM the worker dropped its model: the next case reloads it and gets the load allowance
            worker.loaded_group = group if record.status != "oom" else None
            return record, timeline
        worker.close(kill=True)
        self.worker = None
        if kind == "timeout":
            status, error = "timeout", f"case did not finish within {timeout:.0f} s; the worker was killed"
        else:
            status, error = "error", _died_message(payload)
        return _failed_record(spec, policy, status, error, self.options), []

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None


class _SilentProgress:
    """The progress reporter of a run nobody watches: does nothing."""

    def __init__(self, total: int):
        self.total = total

    def __enter__(self) -> _SilentProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start_case(self, spec: CaseSpec) -> None:
        """Nothing to show."""

    def end_case(self, record: Record) -> None:
        """Nothing to show."""


def run_cases(cases: Sequence[CaseSpec], policy: TimingPolicy, options: RunOptions) -> list[Record]:
    """Run every pending case, appending each record to the run folder ``out_dir`` as it ends."""
    folder = RunFolder(options.out_dir).create()
    todo = order_for_groups(pending_cases(cases, options))
    hub_offline_for_workers(options.allow_download)
    if not options.in_process:
        from bench.config.precision import bitsandbytes_available, get_precision

        _mp_context(
            preload_quantization=bitsandbytes_available()
            and all(c.device == "cpu" for c in todo)
            and any(get_precision(c.precision).quantized for c in todo),
            cpu_only=all(c.device == "cpu" for c in todo),
        )
    records: list[Record] = []
    if options.in_process:
        quiet_libraries()
    executor = _InProcess(options) if options.in_process else _Isolated(options)
    factory = options.progress_factory if options.progress and options.progress_factory else _SilentProgress
    with factory(len(todo)) as progress:
        try:
            for spec in todo:
                progress.start_case(spec)
                record, timeline = executor.run(spec, policy)
                if options.annotate is not None:
                    record = options.annotate(record)
                folder.append(record)
                if timeline:
                    folder.append_timeline(record.spec.key, timeline)
                records.append(record)
                if options.on_record is not None:
                    options.on_record(record)
                progress.end_case(record)
        finally:
            executor.close()
    return records
