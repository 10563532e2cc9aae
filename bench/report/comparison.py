"""Showing a Comparison: a rich terminal table and Markdown for a pull request or ``$GITHUB_STEP_SUMMARY``."""

from __future__ import annotations

import math

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from bench.track.gate_verdicts import (
    COMPARED,
    FAILED,
    FIXED,
    IMPROVEMENT,
    INSUFFICIENT,
    NOT_SIGNIFICANT,
    REGRESSION,
    UNCHANGED,
    CaseComparison,
    Comparison,
    MetricComparison,
)
from bench.track.settings import MEMORY_METRIC
from bench.units import MiB

_STYLE = {
    REGRESSION: "bold red",
    IMPROVEMENT: "green",
    INSUFFICIENT: "yellow",
    NOT_SIGNIFICANT: "yellow",
    UNCHANGED: "dim",
    FAILED: "bold red",
    FIXED: "green",
}
_ICON = {REGRESSION: "❌", IMPROVEMENT: "✅", INSUFFICIENT: "⚠️", NOT_SIGNIFICANT: "〰️"}
_COLUMNS = ("Case", "GPU", "Metric", "Baseline", "Current", "Change", "p", "CI of change", "Verdict")


def format_value(value: float, unit: str) -> str:
    """A metric value in display units: tokens/s, ms or s, MiB."""
    if value is None or not math.isfinite(value):
        return "–"
    if unit == "tokens/s":
        return f"{value:,.1f} tok/s" if value < 1000 else f"{value:,.0f} tok/s"
    if unit == "s":
        return f"{value * 1e3:,.2f} ms" if value < 1 else f"{value:,.3f} s"
    if unit == "bytes":
        return f"{value / MiB:,.0f} MiB"
    return f"{value:g}"


def _change(m: MetricComparison) -> str:
    if m.change is None or not math.isfinite(m.change):
        return "–"
    if m.metric == MEMORY_METRIC.name:
        return f"{(m.current - m.baseline) / MiB:+,.0f} MiB ({m.change:+.1%})"
    return f"{m.change:+.1%}"


def _p(m: MetricComparison) -> str:
    return "–" if m.p_value is None else f"{m.p_value:.2g}"


def _ci(m: MetricComparison) -> str:
    if m.ci_low is None or m.ci_high is None:
        return "–"
    return f"{m.ci_low - 1:+.1%} … {m.ci_high - 1:+.1%}"


def _metric_cells(case: CaseComparison, m: MetricComparison) -> list[str]:
    unit = m.info.unit
    why = "; ".join(x for x in (m.detail, m.test) if x)
    verdict = m.verdict if not why else f"{m.verdict} ({why})"
    return [
        case.label,
        case.device_name,
        m.info.label,
        format_value(m.baseline, unit),
        format_value(m.current, unit),
        _change(m),
        _p(m),
        _ci(m),
        verdict,
    ]


def _case_cells(case: CaseComparison) -> list[str]:
    notes = "; ".join(case.notes)
    verdict = case.verdict if not notes else f"{case.verdict} ({notes})"
    return [case.label, case.device_name, "–", "–", "–", "–", "–", "–", verdict]


def rows(comparison: Comparison, *, everything: bool = False) -> list[tuple[str, list[str]]]:
    """(verdict, cells) rows: each metric of each compared case, and one row per unmatched or failed case.

    Without ``everything``, metrics judged unchanged are left out (the summary counts them).
    """
    out = []
    for case in comparison.cases:
        if case.status == COMPARED:
            for m in case.metrics:
                if everything or m.verdict != UNCHANGED:
                    out.append((m.verdict, _metric_cells(case, m)))
        else:
            out.append((case.verdict, _case_cells(case)))
    return out


def case_notes(comparison: Comparison) -> list[tuple[str, str]]:
    """(case, notes) of compared cases that carry notes other than version changes (those are run warnings)."""
    out = []
    for case in comparison.cases:
        if case.status != COMPARED:
            continue  # unmatched and failed cases show their notes in their own row
        notes = [n for n in case.notes if not n.startswith("versions differ")]
        if notes:
            out.append((f"{case.label} [{case.device_name}]", "; ".join(notes)))
    return out


def summary_line(comparison: Comparison) -> str:
    """One line: how many cases got each verdict, regressions first."""
    counts = comparison.counts()
    order = [REGRESSION, IMPROVEMENT, INSUFFICIENT, NOT_SIGNIFICANT, UNCHANGED]
    keys = order + sorted(k for k in counts if k not in order)
    parts = [f"{k}: {counts[k]}" for k in keys if counts.get(k)]
    return " · ".join(parts) if parts else "no cases"


def settings_line(comparison: Comparison) -> str:
    """The gate's rules in one sentence."""
    s = comparison.settings
    extra = "".join(f"; {k} {v:.0%}" for k, v in s.metric_thresholds)
    return (
        f"Speed: change of medians beyond {s.threshold:.0%}{extra}, confirmed by a one-sided Mann-Whitney U test "
        f"of the raw samples against baseline x (1 ± threshold), p < {s.alpha:g} "
        f"(interval: {1 - s.alpha:.0%} bootstrap of the ratio of medians); against {s.min_baseline_runs} or more "
        "baseline runs, by the current median outside the range of their medians widened by the threshold. "
        f"Memory: peak growth beyond max({s.memory_tolerance:.0%}, {s.memory_tolerance_bytes / MiB:.0f} MiB)."
    )


# The terminal layout fits 80 columns: per case a heading line, then one row per metric with short cells
# (fixed widths, so the rows of every case line up), and each verdict's details on indented lines below.
_TERMINAL_COLUMNS = (
    ("metric", 16, "left"),
    ("baseline", 15, "right"),
    ("current", 15, "right"),
    ("change", 8, "right"),
    ("verdict", 15, "left"),
)
_SHORT = {INSUFFICIENT: "inconclusive", NOT_SIGNIFICANT: "not significant"}


def short_verdict(verdict: str) -> str:
    """The verdict in at most 15 characters, for the terminal table ("insufficient samples" -> "inconclusive")."""
    return _SHORT.get(verdict, verdict)


def _terminal_table(show_header: bool) -> Table:
    table = Table(box=None, show_header=show_header, header_style="bold", pad_edge=False, padding=(0, 1))
    for name, width, justify in _TERMINAL_COLUMNS:
        table.add_column(name, width=width, justify=justify, no_wrap=True, overflow="ellipsis")
    return table


def _detail_line(m: MetricComparison) -> str:
    parts = [p for p in (m.detail, m.test) if p]
    if m.ci_low is not None and m.ci_high is not None:
        parts.append(f"CI of change {_ci(m)}")
    return f"{m.info.label}: {'; '.join(parts)}"


def _print_indented(console: Console, text: str) -> None:
    """Dim text indented by 4 columns, wrapped lines included."""
    console.print(Padding(Text(text, style="dim"), (0, 0, 0, 4)))


def _print_case(console: Console, case: CaseComparison, metrics: list[MetricComparison], first: bool) -> None:
    console.print(f"[bold]{case.label}[/bold] · {case.device_name}", highlight=False)
    table = _terminal_table(show_header=first)
    for m in metrics:
        cells = (m.info.label, format_value(m.baseline, m.info.unit), format_value(m.current, m.info.unit))
        change = "–" if m.change is None or not math.isfinite(m.change) else f"{m.change:+.1%}"
        table.add_row(*cells, change, short_verdict(m.verdict), style=_STYLE.get(m.verdict))
    console.print(table)
    for m in metrics:
        if m.verdict != UNCHANGED:
            _print_indented(console, _detail_line(m))


def render_terminal(comparison: Comparison, console: Console | None = None, *, everything: bool = False) -> None:
    """Print the comparison for a terminal of 80 columns or more: per case its metrics, then warnings and summary.

    Without ``everything``, metrics judged unchanged (and cases with nothing else) are left out.
    """
    console = console or Console()
    console.print("[bold]Benchmark comparison (current vs baseline)[/bold]", highlight=False)
    first = True
    others = []
    for case in comparison.cases:
        if case.status != COMPARED:
            others.append(case)
            continue
        shown = [m for m in case.metrics if everything or m.verdict != UNCHANGED]
        if shown:
            _print_case(console, case, shown, first)
            first = False
    for case in others:
        notes = "; ".join(case.notes)
        style = _STYLE.get(case.verdict, "")
        head = f"[{style}]{case.verdict}[/{style}]" if style else case.verdict
        console.print(f"{case.label} · {case.device_name or case.baseline_device_name}: {head}", highlight=False)
        if notes:
            _print_indented(console, notes)
    for label, notes in case_notes(comparison):
        console.print(f"[dim]note:[/dim] {label}: {notes}", highlight=False)
    for text in comparison.warnings:
        console.print(f"[yellow]warning:[/yellow] {text}", highlight=False)
    style = "bold red" if comparison.regressions else ("bold yellow" if comparison.inconclusive else "bold green")
    console.print(f"[{style}]{summary_line(comparison)}[/{style}]", highlight=False)
    console.print(settings_line(comparison), style="dim", highlight=False)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(body: list[tuple[str, list[str]]]) -> list[str]:
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for verdict, cells in body:
        cells = [*cells[:-1], f"{_ICON.get(verdict, '')} {cells[-1]}".strip()]
        lines.append("| " + " | ".join(_md_escape(c) for c in cells) + " |")
    return lines


def render_markdown(comparison: Comparison, *, title: str = "Benchmark comparison") -> str:
    """Markdown for a pull-request comment or ``$GITHUB_STEP_SUMMARY``: verdict, warnings, notable rows, all rows."""
    n_reg = len(comparison.regressions)
    head = f"❌ {n_reg} regression{'s' if n_reg != 1 else ''}" if n_reg else "✅ no regression"
    n_open = len(comparison.inconclusive)
    if not comparison.matched:
        head = "⚠️ nothing comparable"
    elif n_open and not n_reg:
        allowed = ", allowed" if comparison.settings.allow_inconclusive else ""
        head = f"⚠️ inconclusive ({n_open} case{'s' if n_open != 1 else ''} could not be tested{allowed})"
    lines = [f"## {title}: {head}", "", f"**{summary_line(comparison)}**", "", f"_{settings_line(comparison)}_", ""]
    if comparison.warnings:
        lines += ["> [!WARNING]"] + [f"> - {_md_escape(w)}" for w in comparison.warnings] + [""]
    all_rows = rows(comparison, everything=True)
    for verdict, heading in ((REGRESSION, "Regressions"), (IMPROVEMENT, "Improvements")):
        picked = [r for r in all_rows if r[0] == verdict]
        if picked:
            lines += [f"### {heading}", "", *_md_table(picked), ""]
    notes = case_notes(comparison)
    if notes:
        lines += ["### Notes", "", *(f"- {_md_escape(label)}: {_md_escape(text)}" for label, text in notes), ""]
    lines += [f"<details><summary>All rows ({len(all_rows)})</summary>", "", *_md_table(all_rows), "", "</details>", ""]
    return "\n".join(lines)
