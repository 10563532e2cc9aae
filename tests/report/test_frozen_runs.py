"""The frozen run folders in tests/data/runs still load, report and compare (and keep their schema)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from bench.report.build import build_report
from bench.results.record import Record
from bench.results.run_folder import RunFolder
from bench.track.compare import compare_records

RUNS = Path(__file__).resolve().parents[1] / "data" / "runs"


def _keys(data: object, prefix: str = "") -> set[str]:
    """Every nested key path of a JSON object ("memory.kv_cache_bytes")."""
    if not isinstance(data, dict):
        return set()
    out = set()
    for k, v in data.items():
        out.add(prefix + k)
        out |= _keys(v, prefix + k + ".")
    return out


@pytest.mark.parametrize("run", ["cpu-smoke", "synthetic-h200"])
def test_a_frozen_record_round_trips_with_the_same_fields(run):
    lines = (RUNS / run / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines
    for line in lines:
        stored = json.loads(line)
        again = Record.from_dict(stored).to_dict()
        assert _keys(stored) <= _keys(again), sorted(_keys(stored) - _keys(again))


def _table_row(text: str, header_cell: str, *row_start: str) -> dict[str, str]:
    """The Markdown table row of ``text`` whose first cells are ``row_start``, keyed by the cells of the header
    of the first table that has a column ``header_cell``."""
    lines = text.splitlines()
    top = next(i for i, line in enumerate(lines) if line.startswith("|") and f"| {header_cell} |" in line)
    header = [c.strip() for c in lines[top].strip("|").split("|")]
    for line in lines[top + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[: len(row_start)] == list(row_start):
            return dict(zip(header, cells, strict=True))
    raise AssertionError(f"no row {row_start} in the table with {header_cell!r}")


def test_the_frozen_cpu_smoke_run_reports_its_own_figures_in_their_columns(tmp_path):
    """Figures of the frozen CPU run (results.jsonl) rendered in the right column, with the right unit."""
    folder = tmp_path / "cpu-smoke"
    shutil.copytree(RUNS / "cpu-smoke", folder)
    files = build_report(folder, make_plots=False)
    text = Path(files.markdown).read_text(encoding="utf-8")
    assert len(RunFolder(folder).load_records()) == 6
    # phi-3-tiny fp32 in results.jsonl: host_peak_rss_bytes 449,880,064 (0.419 GiB), weights_bytes 70,915,328
    # (0.066 GiB), tpot_s 0.0228918, ttft_s 0.0794205, decode 43.684 tokens/s
    fp32 = _table_row(text, "TPOT (ms)", "phi-3-tiny", "fp32", "1", "32", "16")
    assert fp32["Peak host RSS (GiB)"] == "0.42" and fp32["Weights (GiB)"] == "0.07"
    assert (fp32["TPOT (ms)"], fp32["TTFT (ms)"], fp32["Decode (tokens/s)"]) == ("22.9", "79.4", "43.7")
    assert fp32["Status"] == "ok" and "noisy" in fp32["Flags"]  # its e2e CV is 0.207, above 0.15
    nf4 = _table_row(text, "TPOT (ms)", "phi-3-tiny", "nf4", "1", "32", "16")
    assert (nf4["TPOT (ms)"], nf4["Decode (tokens/s)"], nf4["Peak host RSS (GiB)"]) == ("127", "7.9", "0.40")
    assert "noisy" not in nf4["Flags"]  # CV 0.106
    # bert-tiny fp32 batch 4: latency_s 0.0157147, 254.54 sequences/s, 8,145.2 tokens/s
    bert = _table_row(text, "Sequences/s", "bert-tiny", "fp32", "4", "32")
    assert (bert["Latency (ms)"], bert["Sequences/s"], bert["Tokens/s"]) == ("15.7", "254.5", "8,145")
    # the claim table against a T4 labels a CPU run's figure as host RSS in MiB (449,880,064 B = 429 MiB) and
    # leaves the GPU peak empty: a CPU run is never shown as VRAM
    rss = "Host peak RSS, loading or generation (MiB)"
    t4 = _table_row(text, rss, "phi-3-tiny", "fp32", "1", "32", "16")
    assert t4[rss] == "429" and t4["Fit: live peak + context (MiB)"] == "—"
    assert t4["Verdict"] == "⚠️ not measured on a GPU"


def _with_peak(record: Record, factor: float, extra_bytes: int) -> Record:
    """``record`` with its NVML process peak (the gate's memory reading for GPU records) raised."""
    peak = record.memory.nvml_process_peak_bytes
    memory = dataclasses.replace(record.memory, nvml_process_peak_bytes=int(peak * factor) + extra_bytes)
    return record.replace(memory=memory)


def test_a_frozen_gpu_run_against_a_copy_with_one_peak_raised():
    """The gate finds the one case whose peak grew past max(1%, 32 MiB), and only it; a smaller growth passes."""
    records = RunFolder(RUNS / "synthetic-h200").load_records()
    target = records[0]  # phi-3-mini fp16 at 128 tokens: nvml_process_peak_bytes 8,365,676,544 (1% = 79.8 MiB)
    assert target.memory.nvml_process_peak_bytes == 8_365_676_544
    assert compare_records(records, records).exit_status == 0  # the control: nothing changed, nothing found
    grown = [_with_peak(r, 1.0, 100 * 2**20) if r is target else r for r in records]  # +100 MiB: past 1%
    comparison = compare_records(records, grown)
    assert [c.key for c in comparison.regressions] == [target.spec.key]
    assert comparison.exit_status == 1 and len(comparison.matched) == len(records)
    within = [_with_peak(r, 1.0, 64 * 2**20) if r is target else r for r in records]  # +64 MiB: under 1%
    assert compare_records(records, within).regressions == []
