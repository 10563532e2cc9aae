"""The loading-phase section and the nvidia-smi column of the claims tables."""

from __future__ import annotations

import dataclasses

from report_records import CONTEXT_BYTES, GiB, MiB, cpu_generate, envelope, gpu_generate, write_run

from bench.report.build import build_report
from bench.report.document import Table
from bench.report.load_section import loading_section
from bench.results.load_phase import LoadPhase, UserView


def _group_with_view():
    """An nf4 group of two cases on a GPU: one load, the user view on the first case."""
    first, second = gpu_generate("nf4", 128), gpu_generate("nf4", 1024)
    load = dataclasses.replace(
        first.load,
        load_s=12.5,
        load_peak_allocated_bytes=2 * GiB + 300 * MiB,
        load_reserved_after_bytes=3 * GiB,
        load_nvml_process_bytes=CONTEXT_BYTES + 3 * GiB,
        loaded_for_key=first.spec.key,
    )
    view = UserView(
        generate_s=0.8,
        peak_allocated_bytes=2 * GiB + 300 * MiB,
        reserved_high_water_bytes=3 * GiB,
        reserved_after_bytes=3 * GiB,
        nvml_process_after_bytes=CONTEXT_BYTES + 3 * GiB,
        nvml_process_peak_bytes=CONTEXT_BYTES + 3 * GiB,
        host_peak_rss_bytes=4 * GiB,
    )
    return [first.replace(load=load, user_view=view), second.replace(load=load)]


def test_one_row_per_load_with_each_reading_named():
    blocks = loading_section(_group_with_view())
    gpu, host = (b for b in blocks if isinstance(b, Table))
    assert len(gpu.rows) == len(host.rows) == 1  # two cases, one load
    row = dict(zip(gpu.headers, gpu.rows[0], strict=True))
    assert row["Load of (first case)"] == "phi-3-mini nf4 b1 L128 n64"
    assert row["Load (s)"] == "12.50"
    assert row["Load: allocator live peak (MiB)"] == "2,348"
    assert row["After load: allocator reserved (MiB)"] == "3,072"
    assert row["User view: NVML process after generation = nvidia-smi (MiB)"] == "3,584"
    assert dict(zip(host.headers, host.rows[0], strict=True))["User view: host peak RSS, load + generation (MiB)"] == (
        "4,096"
    )
    assert not any("llama.cpp" in getattr(b, "text", "") for b in blocks)  # its note: only beside llama.cpp rows


def test_records_without_a_loading_phase_give_no_section():
    assert loading_section([gpu_generate("nf4", 128).replace(load=LoadPhase())]) == []


def test_a_cpu_run_has_only_the_host_table():
    record = cpu_generate("nf4", 16).replace(
        load=LoadPhase(load_s=3.0, load_host_peak_rss_bytes=900 * MiB, loaded_for_key="k"),
        user_view=UserView(generate_s=0.2, host_peak_rss_bytes=950 * MiB),
    )
    tables = [b for b in loading_section([record]) if isinstance(b, Table)]
    assert len(tables) == 1 and "host" in tables[0].caption.lower()
    assert "950" in tables[0].rows[0][5]


def test_the_report_puts_nvidia_smi_beside_each_verdict(tmp_path):
    folder = write_run(tmp_path / "run", _group_with_view(), envelope("r1", gpus=[]))
    files = build_report(folder, predict=None, smi_predict=lambda spec: 4 * GiB, make_plots=False)
    md = files.markdown.read_text(encoding="utf-8")
    assert "## Loading phase and the user view" in md
    assert "nvidia-smi would show (MiB)" in md
    assert "| 3,584 (measured) |" in md  # the first case: its user view
    assert "| 4,096 (predicted) |" in md  # the second: no user view of its own
    assert "nvidia-smi showed 3,584 MiB (measured)" in md and "cached blocks freed while loading" in md
