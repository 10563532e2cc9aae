"""How a list of cases is run (:class:`RunOptions`): where records go, isolation, resume, a simulated card."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.results.record import Record


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
