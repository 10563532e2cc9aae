"""The run's summary table never cuts a number or a header: at 80 columns it drops or wraps columns, says
which it dropped, and every number it shows reads back as the record's value in the column's unit."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from rich.console import Console

from bench.report.terminal import COLUMNS, print_summary, summary_table
from bench.results.record import Memory, Record
from bench.results.run_folder import RunFolder
from bench.units import MiB

RUNS = Path(__file__).resolve().parents[1] / "data" / "runs"
NUMBER_COLUMNS = ("ms", "per s", "weights", "peak")


def _frozen(name: str) -> list[Record]:
    return RunFolder(RUNS / name).load_records()


def _hard_cases() -> list[Record]:
    """Real smoke records made as wide as a run can make them: long flags, a compiled engine, big numbers,
    a timeout and an oom without speed figures."""
    base = _frozen("cpu-smoke")
    slow = base[1]
    wide = dataclasses.replace(
        slow,
        spec=dataclasses.replace(slow.spec, precision="nf4-dq", engine="compiled", context_tokens=131072),
        flags=("random_weights", "noisy", "throttled", "full_cache", "clock_changed"),
        memory=dataclasses.replace(slow.memory, nvml_process_peak_bytes=81_559 * MiB, weights_bytes=74_123 * MiB),
        samples=dataclasses.replace(
            slow.samples,
            ttft_s=tuple(t * 1000 for t in slow.samples.ttft_s),
            e2e_s=tuple(t * 1000 for t in slow.samples.e2e_s),
        ),
    )
    timeout = base[0].replace(
        status="timeout", error="TimeoutError", spec=dataclasses.replace(base[0].spec, context_tokens=4000)
    )
    oom = base[2].replace(
        status="oom", error="OutOfMemoryError", memory=Memory(), spec=dataclasses.replace(base[2].spec, batch_size=64)
    )
    return [*base, wide, timeout, oom]


def _render(records: list[Record], width: int) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    print_summary(records, console)
    return console.export_text().splitlines()


def _shown_value(record: Record, column: str) -> float | None:
    """The record's value in the column's display unit, computed here from the record's own fields."""
    m = record.metrics
    generate = record.spec.scenario == "generate"
    if column == "ms":
        value = m.get("ttft_s") if generate else m.get("latency_s")
        return None if value is None else value * 1e3
    if column == "per s":
        return m.get("decode_tokens_per_s") if generate else m.get("sequences_per_s")
    if column == "weights":
        return None if record.memory.weights_bytes is None else record.memory.weights_bytes / MiB
    peak = record.memory.nvml_process_peak_bytes or record.memory.host_peak_rss_bytes
    return None if peak is None else peak / MiB


def _check(records: list[Record], width: int) -> tuple[list[str], tuple[str, ...]]:
    lines = _render(records, width)
    text = "\n".join(lines)
    assert max(len(line) for line in lines) <= width
    assert "…" not in text and "..." not in text
    header = next(line for line in lines if line.startswith("model"))
    shown = re.split(r"\s{2,}", header.strip())
    known = [c.header for c in COLUMNS]
    assert shown == [h for h in known if h in shown]  # every header whole, in order
    dropped = summary_table(records, width).dropped
    if dropped:
        assert f"Left out to fit {width} columns: {', '.join(dropped)}" in " ".join(text.split())
    checked = 0
    for r in records:
        label = f"{r.spec.model}  "
        prec = r.spec.precision if r.spec.engine == "eager" else f"{r.spec.precision} {r.spec.engine}"
        shape = f"B{r.spec.batch_size} L{r.spec.context_tokens}" + (
            f"+{r.spec.new_tokens}" if r.spec.new_tokens else ""
        )
        row = next(line for line in lines if line.startswith(label) and f" {prec} " in line and f" {shape} " in line)
        cells = dict(zip(shown, re.split(r"\s{2,}", row.strip()), strict=False))  # a failed case has no speed
        assert cells["status"] == r.status
        if not r.ok:
            continue
        for column in NUMBER_COLUMNS:
            if column not in cells:
                continue
            cell = cells[column]
            expected = _shown_value(r, column)
            if expected is None:
                assert cell == "-"
                continue
            digits = len(cell.rstrip("*").partition(".")[2])
            assert abs(float(cell.rstrip("*").replace(",", "")) - expected) <= 0.5 * 10**-digits + 1e-9, (column, cell)
            checked += 1
    return lines, dropped


@pytest.mark.parametrize("run", ["cpu-smoke", "synthetic-h200"])
def test_a_frozen_run_at_80_columns_shows_whole_numbers_that_read_back(run):
    records = _frozen(run)
    lines, dropped = _check(records, 80)
    assert dropped == ()  # these runs fit: nothing left out, flags wrapped instead
    assert any("noisy" in line or "built" in line for line in lines)


def test_the_widest_cases_drop_columns_and_say_so_instead_of_cutting():
    records = _hard_cases()
    lines, dropped = _check(records, 80)
    assert dropped and dropped[0] == "flags"
    text = " ".join(" ".join(lines).split())
    assert "the full table is in the run's report" in text
    assert "131,072" not in text or "L131072" in text  # the shape is whole
    assert "81,559" in text  # the 80 GB peak in MiB, whole


def test_a_wide_terminal_shows_every_column():
    records = _hard_cases()
    lines, dropped = _check(records, 200)
    assert dropped == ()
    assert "noisy, throttled, full cache, clock changed" in " ".join(lines)


def test_a_terminal_too_narrow_for_a_table_gets_one_wrapped_line_per_case_with_every_value():
    records = _hard_cases()
    lines = _render(records, 40)
    text = "\n".join(lines)
    assert max(len(line) for line in lines) <= 40 and "…" not in text
    words = {w.rstrip(",") for w in text.split()}
    for r in records:
        assert f"L{r.spec.context_tokens}" in text
        if r.ok:
            assert f"{_shown_value(r, 'ms'):,.1f}" in words or f"{_shown_value(r, 'ms'):,.2f}" in words
            assert f"{_shown_value(r, 'weights'):,.1f}" in words  # no column is left out here
