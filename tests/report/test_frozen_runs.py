"""The frozen run folders in tests/data/runs still load, report and compare (and keep their schema)."""

from __future__ import annotations

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


def test_the_frozen_cpu_smoke_run_reports(tmp_path):
    folder = tmp_path / "cpu-smoke"
    shutil.copytree(RUNS / "cpu-smoke", folder)
    files = build_report(folder, make_plots=False)
    text = Path(files.markdown).read_text(encoding="utf-8")
    records = RunFolder(folder).load_records()
    assert len(records) == 6
    for model in {r.spec.model for r in records}:
        assert model in text
    assert "host" in text.lower()  # a CPU run is labelled as host memory, never as VRAM


def test_a_frozen_gpu_run_compared_with_itself_has_no_regression():
    records = RunFolder(RUNS / "synthetic-h200").load_records()
    comparison = compare_records(records, records)
    assert comparison.regressions == []
    assert comparison.exit_status == 0
    assert len(comparison.matched) == len(records)
