"""The report's loading-phase section: each worker group's load and user view beside the clean steady state.

One row per load (every case of a worker group carries the same load; the row is the group's first case,
which also carries the user view: load, then one generation at its shape, no clean-up). Each column names
its reading: the torch allocator's live peak or its reservation, the NVML process reading (what nvidia-smi
shows for the process), or the host's resident set (VmHWM peak or current). GPU readings and host readings
are separate tables; a CPU run has only the host one.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.report.document import Block, Heading, Para, Table
from bench.results.record import Record
from bench.units import fmt_mib, fmt_num

LLAMACPP_NOTE = (
    " A llama.cpp case loads its own model (one row per case) and has no allocator readings: ggml allocates its"
    " buffers outside torch; its host RSS after the load includes the GGUF file's mapped pages."
)


def _loads(records: Sequence[Record]) -> list[tuple[Record, Record | None]]:
    """One (first record of the load, record with its user view or None) per distinct load, in run order."""
    firsts: dict[tuple[str, str, str], Record] = {}
    views: dict[tuple[str, str, str], Record] = {}
    for r in records:
        if not r.load.recorded:
            continue
        key = (r.host, r.device, r.load.loaded_for_key or r.spec.key)
        firsts.setdefault(key, r)
        if r.user_view.recorded or r.user_view.error or r.user_view.skipped:
            views.setdefault(key, r)
    return [(first, views.get(key)) for key, first in firsts.items()]


def _case(r: Record) -> str:
    s = r.spec
    return f"{s.model} {s.precision} b{s.batch_size} L{s.context_tokens}" + (
        f" n{s.new_tokens}" if s.scenario == "generate" else ""
    )


def _view_note(view: Record | None) -> str:
    if view is None:
        return "no user view"
    if view.user_view.error:
        return f"failed: {view.user_view.error}"
    if view.user_view.skipped:
        return f"skipped: {view.user_view.skipped}"
    return ""


def _gpu_table(loads: list[tuple[Record, Record | None]]) -> Table:
    rows = []
    for first, view in loads:
        ld, uv = first.load, (view.user_view if view else None)
        note = _view_note(view)
        rows.append(
            (
                _case(view or first),
                fmt_num(ld.load_s, 2),
                fmt_mib(ld.load_peak_allocated_bytes),
                fmt_mib(ld.load_reserved_after_bytes),
                fmt_mib(ld.load_nvml_process_bytes),
                fmt_mib(uv.peak_allocated_bytes if uv else None),
                fmt_mib(uv.nvml_process_after_bytes if uv else None) + (f" ({note})" if note else ""),
                fmt_mib((view or first).memory.peak_allocated_bytes),
                fmt_mib((view or first).memory.nvml_process_peak_bytes),
            )
        )
    return Table(
        (
            "Load of (first case)",
            "Load (s)",
            "Load: allocator live peak (MiB)",
            "After load: allocator reserved (MiB)",
            "After load: NVML process (MiB)",
            "User view: allocator live peak (MiB)",
            "User view: NVML process after generation = nvidia-smi (MiB)",
            "Steady state: allocator live peak (MiB)",
            "Steady state: NVML process peak, cache emptied (MiB)",
        ),
        tuple(rows),
        "lrrrrrrrr",
        caption="GPU: the load, the user view (load + one generation, no clean-up) and the clean steady state",
    )


def _host_table(loads: list[tuple[Record, Record | None]]) -> Table:
    rows = []
    for first, view in loads:
        ld, uv = first.load, (view.user_view if view else None)
        note = _view_note(view)
        rows.append(
            (
                _case(view or first),
                fmt_num(ld.load_s, 2),
                fmt_mib(ld.load_host_rss_before_bytes),
                fmt_mib(ld.load_host_peak_rss_bytes),
                fmt_mib(ld.load_host_rss_after_bytes),
                fmt_mib(uv.host_peak_rss_bytes if uv else None) + (f" ({note})" if note else ""),
                fmt_num(uv.generate_s if uv else None, 2),
                fmt_mib((view or first).memory.host_peak_rss_bytes),
            )
        )
    return Table(
        (
            "Load of (first case)",
            "Load (s)",
            "Host RSS before load (MiB)",
            "Load: host peak RSS (MiB)",
            "Host RSS after load (MiB)",
            "User view: host peak RSS, load + generation (MiB)",
            "User view generation (s)",
            "Steady state: host peak RSS, timed region (MiB)",
        ),
        tuple(rows),
        "lrrrrrrr",
        caption="Host memory of the worker process (resident set, VmHWM peaks; not GPU memory)",
    )


def loading_section(records: Sequence[Record]) -> list[Block]:
    """The "Loading phase" section: a GPU table where any load ran on a GPU, a host table always; nothing
    when no record has a loading phase (records of older harnesses)."""
    loads = _loads(records)
    if not loads:
        return []
    blocks: list[Block] = [Heading("Loading phase and the user view", 2)]
    blocks.append(
        Para(
            "Each worker loads a model once per group of cases. The load is measured: wall time, the torch "
            "allocator's live peak while loading (bitsandbytes quantizes each 16-bit weight on the device), what "
            "the allocator reserves right after loading before any empty_cache(), and the NVML process reading then. "
            "The user view is what a user's script holds: the same process generates once at the group's first "
            "case's shape right after the load, with no clean-up; its NVML reading after the generation is what "
            "nvidia-smi shows. The steady-state columns are the clean measurement of the case (the worker empties "
            "the allocator's cache before timing). Fit verdicts use the live peak over loading and generation."
            + LLAMACPP_NOTE
            * any(f.spec.engine == "llama.cpp" for f, _ in loads),
            "note",
        )
    )
    gpu = [(f, v) for f, v in loads if f.device.startswith("cuda")]
    if gpu:
        blocks.append(_gpu_table(gpu))
    blocks.append(_host_table(loads))
    return blocks
