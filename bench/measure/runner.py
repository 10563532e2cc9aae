"""Run cases in worker processes: one per model x precision group (or per case), records appended as cases end.

A worker that crashes, hangs past the timeout or is killed costs only its current case: the case is
recorded (error / timeout) and a fresh worker takes the rest; so does a worker whose case failed with a
CUDA error other than out of memory (its CUDA context may be poisoned). Workers
(:mod:`bench.measure.worker_process`) come from a forkserver that has already imported torch and transformers
(never CUDA), so isolation does not pay the import per worker.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Sequence
from typing import Any

from bench.config.spec import CaseSpec, TimingPolicy
from bench.measure.run_options import RunOptions
from bench.measure.worker_process import Worker, hub_offline_for_workers, mp_context, quiet_libraries
from bench.results.record import Memory, Record
from bench.results.run_folder import RunFolder

LOAD_ALLOWANCE_S = 900.0  # a group's first case may also build and cache a full-size random checkpoint


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
        from bench.measure.case_runner import CaseRunner

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

        mp_context(
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
