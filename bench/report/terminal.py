"""The table printed at the end of ``bench run``: one row per case, display units, never a cut number.

A terminal is often 80 columns wide and a cut number (``2,4…``) is worse than none, so no number and no
header is ever shortened: the table drops whole columns instead (flags first, then weights, rate, peak;
:data:`DROP_ORDER`), says under it which it dropped, and points to the report, which keeps the full table.
Text cells (the model name, the flags) may wrap at a space; numbers never wrap. A terminal too narrow for
the case, status and latency columns gets one line per case instead, wrapped at spaces, with every value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.results.record import Record
from bench.units import MiB as MIB

DEFAULT_WIDTH = 80


@dataclass(frozen=True)
class Column:
    """One column of the summary: header, alignment, and whether its cells may wrap (text) or never (numbers)."""

    header: str
    justify: str  # "left" | "right"
    wraps: bool = False  # True: a text column, wrapped at spaces; False: one line, never cut


COLUMNS = (
    Column("model", "left", wraps=True),
    Column("prec", "left"),
    Column("shape", "left"),
    Column("status", "left"),
    Column("ms", "right"),
    Column("per s", "right"),
    Column("weights", "right"),
    Column("peak", "right"),
    Column("flags", "left", wraps=True),
)
# Dropped in this order while the table is wider than the terminal; the case (model, precision, shape), its
# status and its latency always stay. A terminal too narrow even for those gets one wrapped line per case.
DROP_ORDER = ("flags", "weights", "per s", "peak")
# Flags that say one thing for the whole run: said once under the table, not on every row.
RUN_WIDE_FLAGS = ("random_weights", "int8_outliers_unrepresentative")
TITLE = (
    "Results: ms = TTFT (generate) or forward latency (encode); per s = decode tokens/s or sequences/s; "
    "weights and peak in MiB (peak: NVML process peak; * host peak RSS)"
)


def _fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value * scale:,.{digits}f}"


def common_flags(records: Sequence[Record]) -> tuple[str, ...]:
    """The flags every record carries (said once under the table, not on each row), in the first's order."""
    if not records:
        return ()
    shared = set(records[0].flags).intersection(*(set(r.flags) for r in records[1:]))
    return tuple(f for f in records[0].flags if f in shared)


def summary_row(r: Record, hidden_flags: Sequence[str] = RUN_WIDE_FLAGS) -> tuple[str, ...]:
    """Display cells for one record, in :data:`COLUMNS` order: case, status, latency, throughput, weights,
    peak memory, flags (less ``hidden_flags``, which are said once for the run)."""
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
    flags = ", ".join(f.replace("_", " ") for f in r.flags if f not in hidden_flags)  # wraps at a space
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


def _cell_width(text: str, wraps: bool) -> int:
    """The narrowest a cell can be drawn without cutting: its longest word when it wraps, else all of it."""
    from rich.text import Text

    plain = Text.from_markup(text).plain
    if wraps:
        return max((len(w) for w in plain.split()), default=0)
    return len(plain)


def _table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    widths: Sequence[int],
    title: str | None,
    narrowest: bool = False,
) -> Any:
    """A rich table of these columns; ``narrowest``: text columns held to their longest word (for measuring)."""
    from rich import box
    from rich.table import Table

    table = Table(
        title=title, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True, title_justify="left"
    )
    for col, width in zip(columns, widths, strict=True):
        table.add_column(
            col.header,
            justify=col.justify,  # type: ignore[arg-type]
            no_wrap=not col.wraps,
            min_width=width,
            max_width=width if narrowest and col.wraps else None,
            overflow="fold",  # never "ellipsis": a cell that cannot fit is folded, never cut
        )
    for row in rows:
        table.add_row(*row)
    return table


def _drawn_width(table: Any) -> int:
    """How wide rich draws ``table`` when nothing constrains it (the widest line)."""
    from rich.console import Console

    console = Console(width=10_000, record=True, color_system=None, file=_Null())
    console.print(table)
    return max((len(line) for line in console.export_text().splitlines()), default=0)


class _Null:
    """A file that discards what is written (rich measures by rendering)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        return None


@dataclass(frozen=True)
class Summary:
    """The summary table as drawn for one width, and the columns it left out to fit."""

    table: Any  # a rich Table, or the lines of the one-line-per-case layout
    dropped: tuple[str, ...]
    common_flags: tuple[str, ...] = ()  # flags of every case, left off the rows


def summary_table(records: Sequence[Record], width: int = DEFAULT_WIDTH) -> Summary:
    """The summary table of ``records`` that fits ``width`` columns without cutting a number or a header.

    Every column first gets the width of its widest header or number (a text column: its longest word); while
    the table is still wider than ``width``, columns are dropped in :data:`DROP_ORDER`. A column whose cells
    are all empty (no flags in the run) is left out too, without being counted as dropped.
    """
    common = common_flags(records)
    full_rows = [summary_row(r, (*RUN_WIDE_FLAGS, *common)) for r in records]
    keep = [i for i, col in enumerate(COLUMNS) if col.header != "flags" or any(row[i] for row in full_rows)]
    dropped: list[str] = []
    while True:
        columns = [COLUMNS[i] for i in keep]
        rows = [tuple(row[i] for i in keep) for row in full_rows]
        widths = [
            max([_cell_width(col.header, False), *(_cell_width(row[j], col.wraps) for row in rows)])
            for j, col in enumerate(columns)
        ]
        table = _table(columns, rows, widths, None, narrowest=True)
        candidates = [name for name in DROP_ORDER if name in {c.header for c in columns}]
        if _drawn_width(table) <= width:
            break
        if not candidates:  # too narrow for a table: one wrapped line per case, every value named
            return Summary(_case_lines(records, full_rows), (), common)
        name = candidates[0]
        dropped.append(name)
        keep = [i for i in keep if COLUMNS[i].header != name]
    return Summary(_table(columns, rows, widths, None), tuple(dropped), common)


def _case_lines(records: Sequence[Record], rows: Sequence[Sequence[str]]) -> Any:
    """One line per case, "label: status, ms 12.3, per s 4.5, ...", wrapped at spaces by the console."""
    from rich.text import Text

    lines = []
    for row in rows:
        cells = dict(zip((c.header for c in COLUMNS), row, strict=True))
        values = [cells["status"]] + [
            f"{name} {cells[name]}" for name in ("ms", "per s", "weights", "peak", "flags") if cells[name]
        ]
        lines.append(Text.from_markup(f"{cells['model']} {cells['prec']} {cells['shape']}: {', '.join(values)}"))
    return Text("\n").join(lines)


def print_summary(records: Sequence[Record], console: Any = None, report: str | None = None) -> None:
    """Print the run's summary table at the console's width (80 columns when it cannot tell), saying which
    columns were left out to fit and where the full table is (``report``, else "the report")."""
    from rich.console import Console

    console = console or Console()
    if not records:
        console.print("No cases were run (every case already has a record).")
        return
    summary = summary_table(records, console.width or DEFAULT_WIDTH)
    console.print(TITLE)
    console.print(summary.table)
    said = [f.replace("_", " ") for f in summary.common_flags if f not in RUN_WIDE_FLAGS]
    if said:
        console.print(f"Every case is flagged: {', '.join(said)}.")
    if summary.dropped:
        where = report or "the run's report"
        console.print(
            f"Left out to fit {console.width} columns: {', '.join(summary.dropped)}; the full table is in {where}."
        )
    if any("random_weights" in r.flags for r in records):
        console.print("Random weights: the real checkpoint's memory and speed (int8's outlier path aside).")
