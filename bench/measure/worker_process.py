"""A worker process (:class:`Worker`): a :class:`~bench.measure.case_runner.CaseRunner` in its own process, fed
cases through a pipe, started from a forkserver that has already imported torch and transformers (never CUDA).

A worker dies with its runner: killed without a chance to clean up (SIGKILL), the runner cannot stop its
workers, so each worker watches the runner itself (see :func:`die_with_runner`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from bench.config.spec import CaseSpec, TimingPolicy
from bench.measure.run_options import RunOptions

PRELOAD = ["torch", "transformers", "bench.measure.case_runner"]
# bitsandbytes takes seconds to import; preloading it is safe only where no CUDA device is used (its
# import may initialise CUDA, which a forked worker cannot inherit), so GPU workers import it lazily.
PRELOAD_CPU_QUANTIZED = ["bench.measure.bnb_preload"]  # bitsandbytes, imported quietly (bench.measure.bnb_runtime)
# What every worker imports on its first model load (transformers' modeling and generation code, with scipy
# under it): about 2.4 s per worker on a loaded 2-core host (python -X importtime), once per model x
# precision group. Preloaded for CPU-only runs, like bitsandbytes (GPU workers keep importing it lazily).
PRELOAD_CPU = ["transformers.modeling_layers", "transformers.masking_utils", "transformers.generation.utils"]
RUNNER_WATCH_PERIOD_S = 0.5  # how often a worker checks that its runner is still alive
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


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


# Settings a worker takes from its runner when it starts, not from the forkserver (which keeps the environment
# of the moment it started: a process that runs twice, e.g. with another hub cache, would otherwise hand the
# first run's settings to the second run's workers).
RUNNER_ENV_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "BENCH_", "XDG_CACHE_HOME")


def runner_environment() -> dict[str, str]:
    """The runner's settings its workers follow (:data:`RUNNER_ENV_PREFIXES`)."""
    return {k: v for k, v in os.environ.items() if k.startswith(RUNNER_ENV_PREFIXES)}


def adopt_environment(env: dict[str, str]) -> None:
    """Make this process's runner settings exactly ``env``: set those given, drop the others."""
    for key in [k for k in os.environ if k.startswith(RUNNER_ENV_PREFIXES) and k not in env]:
        del os.environ[key]
    os.environ.update(env)


def _worker_main(
    conn: Connection,
    memory_cap_bytes: int | None,
    host_headroom: int | None,
    runner_pid: int | None = None,
    runner_env: dict[str, str] | None = None,
) -> None:
    """Worker loop: receive (spec, policy, run_id), send back the record, the telemetry timeline and whether
    the process's CUDA context may be poisoned."""
    if runner_pid is not None:
        die_with_runner(runner_pid)
    if runner_env is not None:
        adopt_environment(runner_env)
    quiet_libraries()
    if host_headroom:
        _limit_address_space(host_headroom)
    from bench.measure.case_runner import CaseRunner

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


def mp_context(preload_quantization: bool = False, cpu_only: bool = False) -> Any:
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
        ctx = mp_context()
        self.conn, child = ctx.Pipe()
        args = (child, options.memory_cap_bytes, options.host_memory_headroom_bytes, os.getpid(), runner_environment())
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
