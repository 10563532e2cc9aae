"""The table printed at the end of ``bench run``: one row per case, display units."""

from __future__ import annotations

from collections.abc import Sequence

from bench.results.record import Record
from bench.units import MiB as MIB


def _fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value * scale:,.{digits}f}"


def summary_row(r: Record) -> tuple[str, ...]:
    """Display cells for one record: case, status, latency, throughput, weights, peak memory, flags."""
    s = r.spec
    shape = f"B{s.batch_size} L{s.context_tokens}" + (f"+{s.new_tokens}" if s.new_tokens else "")
    m = r.metrics
    if s.scenario == "generate":
        latency = _fmt(m.get("ttft_s"), 1e3, 1)
        rate = _fmt(m.get("decode_tokens_per_s"))
    else:
        latency = _fmt(m.get("latency_s"), 1e3, 2)
        rate = _fmt(m.get("sequences_per_s"))
    if not r.ok:
        latency, rate = "", ""
    if r.memory.nvml_process_peak_bytes:
        peak = _fmt(r.memory.nvml_process_peak_bytes, 1 / MIB, 0)
    elif r.memory.host_peak_rss_bytes:
        peak = f"{_fmt(r.memory.host_peak_rss_bytes, 1 / MIB, 0)}*"
    else:
        peak = "-"
    status = r.status if r.ok else f"[red]{r.status}[/]"
    flags = ",".join(f for f in r.flags if f not in ("random_weights", "int8_outliers_unrepresentative"))
    engine = getattr(s, "engine", "eager")
    return (
        s.model,
        s.precision if engine == "eager" else f"{s.precision} {engine}",
        shape,
        status,
        latency,
        rate,
        _fmt(r.memory.weights_bytes, 1 / MIB, 1),
        peak,
        flags,
    )


def print_summary(records: Sequence[Record]) -> None:
    """Print a rich table of the run's records (status, speed, latency, memory)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not records:
        console.print("No cases were run (every case already has a record).")
        return
    table = Table(
        title="Results: ms = TTFT (generate) or forward latency (encode); per s = decode tokens/s or "
        "sequences/s; weights and peak in MiB (peak: NVML process peak; * host peak RSS)",
        show_lines=False,
    )
    for col, justify in (
        ("model", "left"),
        ("prec", "left"),
        ("shape", "left"),
        ("status", "left"),
        ("ms", "right"),
        ("per s", "right"),
        ("weights", "right"),
        ("peak", "right"),
        ("flags", "left"),
    ):
        table.add_column(col, justify=justify, no_wrap=col in ("model", "prec", "shape"))  # type: ignore[arg-type]
    for r in records:
        table.add_row(*summary_row(r))
    console.print(table)
    if any("random_weights" in r.flags for r in records):
        console.print("Random weights: the real checkpoint's memory and speed (int8's outlier path aside).")
