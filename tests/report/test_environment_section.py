"""The report's environment table shows torch's CUDA and the driver's CUDA side by side."""

from __future__ import annotations

from types import SimpleNamespace

from bench.report.document import Table
from bench.report.sections import environment_section


def _rows(envelopes):
    table = next(b for b in environment_section(SimpleNamespace(envelopes=envelopes), []) if isinstance(b, Table))
    return {row[0]: row[1:] for row in table.rows}


def test_both_cuda_versions_are_shown_next_to_each_other():
    rows = _rows([{"run_id": "a", "torch": "2.6.0+cu124", "cuda": "12.4", "cuda_driver": "12.8", "driver": "570.1"}])
    assert rows["CUDA (torch built for)"] == ("12.4",)
    assert rows["CUDA (driver supports)"] == ("12.8",)
    labels = list(rows)
    assert labels.index("CUDA (driver supports)") == labels.index("CUDA (torch built for)") + 1


def test_an_envelope_from_before_the_driver_cuda_was_recorded_shows_a_dash():
    rows = _rows([{"run_id": "a", "cuda": "12.4"}])
    assert rows["CUDA (driver supports)"] == ("—",)


def test_runs_side_by_side_each_show_their_own():
    rows = _rows([{"run_id": "a", "cuda": "12.4", "cuda_driver": "12.4"}, {"run_id": "b", "cuda": None}])
    assert rows["CUDA (driver supports)"] == ("12.4", "—")


def test_the_machine_row_shows_the_digest_and_the_cpu_extensions():
    machine = {"digest": "0123456789ab", "isa": ["avx2", "avx512f", "avx512_bf16"], "arch": "x86_64", "logical_cpus": 2}
    rows = _rows([{"run_id": "a", "cpu": "AMD EPYC", "machine": machine}])
    assert rows["Machine fingerprint (CPU ISA)"] == ("0123456789ab: avx2 avx512f avx512_bf16 (x86_64, 2 logical CPUs)",)
    labels = list(rows)
    assert labels.index("Machine fingerprint (CPU ISA)") == labels.index("CPU") + 1
    assert _rows([{"run_id": "a", "cpu": "AMD EPYC"}]).get("Machine fingerprint (CPU ISA)") is None  # older runs
