"""The report: files written, tables, plots, device grouping, gaps, bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from report_records import (
    CONTEXT_BYTES,
    CPU_NAME,
    KV_PER_TOKEN,
    WEIGHTS,
    GiB,
    cpu_suite,
    envelope,
    gpu_generate,
    gpu_peak,
    gpu_suite,
    write_run,
)

from bench.cli import main
from bench.errors import BadInputError
from bench.report import plots
from bench.report.build import build_report
from bench.report.document import Heading, Para, Table, render_html, render_markdown
from bench.report.run_data import group_by_device, load_run
from bench.results.frame import records_to_frame
from bench.results.run_folder import RunFolder

PLOT_FILES = {"decode-throughput.png", "ttft.png", "peak-memory.png", "memory-breakdown.png", "bert-throughput.png",
              "bert-latency.png", "bert-peak-memory.png"}


@pytest.fixture(scope="module")
def gpu_report(tmp_path_factory):
    folder = write_run(tmp_path_factory.mktemp("gpu") / "run", gpu_suite(), envelope())
    return folder, build_report(folder)


@pytest.fixture(scope="module")
def cpu_report(tmp_path_factory):
    folder = write_run(tmp_path_factory.mktemp("cpu") / "run", cpu_suite(), envelope("c1", gpus=[], suite="smoke"))
    return folder, build_report(folder)


def test_gpu_report_writes_every_file(gpu_report):
    folder, files = gpu_report
    run = RunFolder(folder)
    assert files.markdown == run.report_md and files.html == run.report_html and files.csv == run.records_csv
    assert {p.name for p in files.plots} == PLOT_FILES
    for path in (run.report_md, run.report_html, run.records_csv, *(run.plot_file(name) for name in PLOT_FILES)):
        assert path.stat().st_size > 0, path
    csv = pd.read_csv(run.records_csv)
    assert len(csv) == len(gpu_suite()) and set(csv["record_source"]) == {"run"}
    assert csv["nvml_process_peak_bytes"].max() == gpu_peak("fp16", 4032)


def test_gpu_report_markdown_has_claims_environment_and_flags(gpu_report):
    folder, files = gpu_report
    md = files.markdown.read_text(encoding="utf-8")
    for heading in ("## Claims", "## Results on NVIDIA H200 (cuda:0)", "## Environment", "## Quality flags", "## Gaps"):
        assert heading in md
    assert "| Claim | Budget | Device | Verdict | Largest context that holds | Evidence | Capped check |" in md
    assert "⚠️ holds up to 128 tokens of context, fails from 1024" in md
    assert "✅ holds" in md  # the T4 claim
    # Per-context rows: peak, budget and margins in MiB and decimal GB side by side.
    fp16_128 = gpu_peak("fp16", 128)
    margin = 8 * GiB - fp16_128
    row = (f"| phi-3-mini | fp16 | 1 | 128 | 64 | {fp16_128 / 2**20:,.0f} | {fp16_128 / 1e9:.2f} | 8,192 | "
           f"{margin / 2**20:+,.0f} | {margin / 1e9:+.2f} | ✅ fits | GPU (live peak) |")
    assert row in md
    assert "8 GiB = 8,192 MiB = 8.59 GB" in md
    assert "| torch | 2.6.0 |" in md and "| driver | 550.54.15 |" in md and "| GPUs | 0: NVIDIA H200, 140.4 GiB |" in md
    assert "| Host RAM | 128.0 GiB |" in md
    for flag in ("| noisy |", "| throttled |", "| random weights |"):
        assert flag in md
    assert "Random weights" in md
    for name in PLOT_FILES:
        assert f"]({name})" in md
    # the synthetic run has every bitsandbytes case of the claims; the claim's GGUF side (llama.cpp) is the only gap
    gguf_gaps = tuple(
        f"claim 'phi3-quantized-6gb' on NVIDIA H200 (cuda:0): no record of phi-3-mini {p} generate at "
        "128, 1024, 2048, 3072, 4032 tokens"
        for p in ("q8_0", "q4_0")
    )
    assert files.gaps == gguf_gaps, files.gaps


def test_html_is_self_contained(gpu_report):
    folder, files = gpu_report
    html = files.html.read_text(encoding="utf-8")
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) == len(PLOT_FILES) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<table>" in html and "holds up to 128 tokens of context" in html


def test_cpu_report_never_calls_host_memory_vram(cpu_report):
    folder, files = cpu_report
    md = files.markdown.read_text(encoding="utf-8")
    assert {p.name for p in files.plots} == PLOT_FILES
    assert "| Claim | Budget | Device | Verdict | Largest context that holds | Evidence | Capped check |" in md
    assert "## Environment" in md and "| suite | smoke |" in md and "| GPUs | none |" in md
    assert "Peak VRAM" not in md and "peak VRAM" not in md and "NVML (GiB)" not in md
    assert "Peak host RSS (GiB)" in md and f"Results on {CPU_NAME} (cpu)" in md
    assert "not measured on a GPU" in md and "No GPU in this run" in md
    for v in files.verdicts:
        assert not v.measured_on_gpu and "not measured on a GPU" in v.text
    assert any("no record of phi-3-mini fp16 generate at 128, 1024, 2048, 3072, 4032 tokens" in g for g in files.gaps)
    assert "Partial report" in md


def test_plot_titles_name_what_where_and_random_weights():
    gpu, cpu = records_to_frame(gpu_suite()), records_to_frame(cpu_suite())
    mem = plots.peak_memory(gpu)
    title = mem.axes[0].get_title()
    assert "Peak VRAM" in title and "NVIDIA H200 (cuda:0)" in title and "random weights" in title
    assert "GiB" in mem.axes[0].get_ylabel() and "NVML" in mem.axes[0].get_ylabel()
    budget_lines = sorted(round(line.get_ydata()[0], 6) for line in mem.axes[0].lines if line.get_linestyle() == "--")
    assert budget_lines == [6.0, 8.0]
    cpu_mem = plots.peak_memory(cpu)
    assert "host RSS" in cpu_mem.axes[0].get_title() and "VRAM" not in cpu_mem.axes[0].get_title()
    assert CPU_NAME in cpu_mem.axes[0].get_title() and "host RSS" in cpu_mem.axes[0].get_ylabel()
    assert not [line for line in cpu_mem.axes[0].lines if line.get_linestyle() == "--"]  # no VRAM budgets
    for make in (plots.decode_throughput, plots.ttft, plots.bert_throughput, plots.bert_latency):
        ax = make(gpu).axes[0]
        assert ax.get_xlabel() and "(" in ax.get_ylabel() and ax.get_legend() is not None
    assert plots.bert_throughput(records_to_frame([gpu_generate("fp16", 128)])) is None


def test_colors_are_fixed_per_precision_across_plots():
    frame = records_to_frame(gpu_suite())
    for make in (plots.decode_throughput, plots.ttft, plots.peak_memory):
        lines = make(frame).axes[0].lines
        colors = {line.get_label(): line.get_color() for line in lines if not line.get_label().startswith("_")}
        assert colors["fp16"] == plots.PRECISION_COLORS["fp16"] == "#1f77b4"
        assert colors["int8"] == plots.PRECISION_COLORS["int8"]
    labels = {line.get_label(): line.get_color() for line in plots.bert_latency(frame).axes[0].lines}
    assert labels["fp16 · batch 8"] == labels["fp16 · batch 1"] == "#1f77b4"


def test_breakdown_segments_add_up_to_the_nvml_peak():
    rows = plots.breakdown_rows(records_to_frame(gpu_suite())).set_index("precision")
    fp16 = rows.loc["fp16"]
    assert fp16["context_tokens"] == 4032 and fp16["total_bytes"] == gpu_peak("fp16", 4032)
    assert fp16["CUDA context"] == CONTEXT_BYTES and fp16["weights"] == WEIGHTS["fp16"]
    assert fp16["KV cache"] == KV_PER_TOKEN * (4032 + 64)
    # rest = peak - context - weights - KV = 80 KiB x 4032 + 96 MiB, by construction of the synthetic peak.
    assert fp16["rest"] == 80 * 1024 * 4032 + 96 * 2**20 and fp16["rest_clipped_bytes"] == 0
    cpu_rows = plots.breakdown_rows(records_to_frame(cpu_suite()))
    assert "process before model load" in cpu_rows and "CUDA context" not in cpu_rows


def test_devices_are_grouped_never_mixed(tmp_path: Path):
    l4 = [gpu_generate("fp16", c, device_name="NVIDIA L4", host="other") for c in (128, 1024)]
    h200 = [gpu_generate("fp16", c) for c in (128, 1024)]
    folder = write_run(tmp_path / "run", h200 + l4 + cpu_suite()[:3], envelope())
    groups = group_by_device(load_run(folder).records)
    assert [g.label for g in groups] == ["NVIDIA H200 (cuda:0) on gpu-host", "NVIDIA L4 (cuda:0) on other",
                                         f"{CPU_NAME} (cpu) on ci-box"]
    assert [len(g.records) for g in groups] == [2, 2, 3]  # same case keys on H200 and L4 stay apart
    files = build_report(folder, make_plots=False)
    md = files.markdown.read_text(encoding="utf-8")
    assert md.count("## Results on ") == 3
    fp16 = [v for v in files.verdicts if v.claim.id == "phi3-fp16-8gb"]
    assert sorted(v.device_name for v in fp16) == ["NVIDIA H200", "NVIDIA L4"]
    # Plot files of several devices are prefixed with the device.
    two = write_run(tmp_path / "two", h200 + l4, envelope())
    names = {p.name for p in build_report(two).plots}
    assert "nvidia-h200-cuda-0-on-gpu-host--peak-memory.png" in names
    assert "nvidia-l4-cuda-0-on-other--peak-memory.png" in names


def test_a_failed_case_without_a_device_name_joins_its_gpu_group(tmp_path: Path):
    failed = gpu_generate("fp16", 4032, status="error").replace(device="cuda", device_name="")
    groups = group_by_device([gpu_generate("fp16", 128), failed])
    assert len(groups) == 1 and len(groups[0].records) == 2


def test_partial_data_makes_a_partial_report_with_gaps(tmp_path: Path):
    records = [gpu_generate("fp16", 128), gpu_generate("fp16", 1024, status="error")]
    folder = write_run(tmp_path / "run", records, env=None)
    files = build_report(folder)
    md = files.markdown.read_text(encoding="utf-8")
    assert "Partial report" in md
    assert any("environment.json is missing" in g for g in files.gaps)
    assert any("1024 tokens: error" in g for g in files.gaps)
    assert any("no record of phi-3-mini int8 generate at 128, 1024, 2048, 3072, 4032 tokens" in g for g in files.gaps)
    assert any("no record of phi-3-mini fp16 generate at 2048, 3072, 4032 tokens" in g for g in files.gaps)
    # Only the plots the data allows: no encoder in this run.
    assert {p.name for p in files.plots} == {"decode-throughput.png", "ttft.png", "peak-memory.png",
                                             "memory-breakdown.png"}


def test_corrupt_environment_is_a_gap_not_a_crash(tmp_path: Path):
    folder = write_run(tmp_path / "run", [gpu_generate("fp16", 128)], envelope())
    RunFolder(folder).environment_file.write_text("{not json", encoding="utf-8")
    files = build_report(folder, make_plots=False)
    assert any("environment.json is not valid JSON" in g for g in files.gaps)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "has no results.jsonl"),
        ("", "is empty"),
        ("\n\n", "is empty"),
        ("garbage\n", "no valid record"),
        ("garbage\n{\"also\": \"bad\"}\n", "is not a valid record"),
    ],
)
def test_unusable_input_exits_2_with_a_clear_message(tmp_path: Path, capsys, content, message):
    folder = tmp_path / "run"
    folder.mkdir()
    if content is not None:
        RunFolder(folder).results_file.write_text(content, encoding="utf-8")
    with pytest.raises(BadInputError, match=message):
        build_report(folder)
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error: ") and len(err.strip().splitlines()) == 1


def test_missing_folder_and_bad_claims_file_exit_2(tmp_path: Path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    folder = write_run(tmp_path / "run", [gpu_generate("fp16", 128)], envelope())
    assert main(["report", str(folder), "--claims", str(tmp_path / "none.toml")]) == 2
    assert "claims file" in capsys.readouterr().err


def test_cli_with_a_user_claims_file(tmp_path: Path, capsys):
    folder = write_run(tmp_path / "run", [gpu_generate(p, c) for p in ("fp16", "nf4") for c in (128, 1024)], envelope())
    claims = tmp_path / "claims.toml"
    claims.write_text("[[claim]]\nid='nf4-3gb'\ntitle='nf4 under 3 GiB'\nbudget='3 GiB'\nmodel='phi-3-mini'\n"
                      "precisions=['nf4']\nscenario='generate'\n", encoding="utf-8")
    assert main(["report", str(folder), "--claims", str(claims)]) == 0
    out = capsys.readouterr().out
    assert "nf4 under 3 GiB [NVIDIA H200]: holds up to 128 tokens of context, fails from 1024" in out
    md = RunFolder(folder).report_md.read_text(encoding="utf-8")
    assert "nf4 under 3 GiB" in md and "Phi-3-mini in fp16" not in md


def test_boundary_and_capped_records_are_reported(tmp_path: Path):
    folder = write_run(tmp_path / "run", [gpu_generate("fp16", c) for c in (128, 1024, 2048)], envelope())
    write_run(RunFolder(folder).boundary().root, [gpu_generate("fp16", c) for c in (576, 800)])
    cap = 8 * GiB
    write_run(RunFolder(folder).capped("phi3-fp16-8gb").root,
              [gpu_generate("fp16", 128, cap=cap), gpu_generate("fp16", 1024, status="oom", cap=cap)])
    files = build_report(folder, make_plots=False)
    fp16 = next(v for v in files.verdicts if v.claim.id == "phi3-fp16-8gb")
    # Synthetic fp16 peaks: 8,578.6 MB at 576 tokens fits 8 GiB (8,589.9 MB); 8,684.9 MB at 800 does not.
    assert (fp16.holds_up_to, fp16.fails_from) == (576, 800)
    md = files.markdown.read_text(encoding="utf-8")
    assert "Second check: the same cases under a per-process memory cap" in md
    assert "holds up to 128 tokens of context, fails from 1024 under a per-process memory cap" in md
    assert "Simulated card of 8,192 MiB" in md
    csv = pd.read_csv(RunFolder(folder).records_csv)
    assert set(csv["record_source"]) == {"run", "boundary", "capped/phi3-fp16-8gb"}


def test_markdown_and_html_escape_cells():
    blocks = [Heading("T", 1), Para("a *b* <c>", "warn"), Table(("x|y", "z"), (("1|2", "<b>"),), "lr")]
    md = render_markdown(blocks)
    assert "| x\\|y | z |" in md and "| 1\\|2 | \\<b> |" in md and "> ⚠️ a \\*b\\* \\<c>" in md
    html = render_html(blocks, "t", Path("."))
    assert "&lt;b&gt;" in html and "<b>" not in html


def test_environment_json_as_a_list_of_runs(tmp_path: Path):
    folder = write_run(tmp_path / "run", [gpu_generate("fp16", 128)], None)
    RunFolder(folder).write_envelopes([envelope("r1"), envelope("r2")])
    md = build_report(folder, make_plots=False).markdown.read_text(encoding="utf-8")
    assert "| Item | Run r1 | Run r2 |" in md


def test_predictions_in_a_cpu_report_are_labelled(tmp_path: Path):
    folder = write_run(tmp_path / "run", cpu_suite()[:3], envelope("c1", gpus=[]))
    files = build_report(folder, predict=lambda spec: 5 * GiB + spec.context_tokens * 1_000_000, make_plots=False)
    md = files.markdown.read_text(encoding="utf-8")
    fp16 = next(v for v in files.verdicts if v.claim.id == "phi3-fp16-8gb")
    # 5 GiB + 1 MB per token: under 8 GiB up to 3,221 tokens, so up to 3072 of the claim's contexts.
    assert fp16.text == "predicted: holds up to 3072 tokens of context, fails from 4032 (not measured on a GPU)"
    assert "Fit: live peak + context or prediction (MiB)" in md and "prediction, no GPU" in md
    assert "⚠️ predicted to fit (not measured on a GPU)" in md and "⚠️ predicted not to fit (not measured on a GPU)" in md
    assert "✅" not in md.split("## Results on")[0].replace("✅ / ❌", "")  # no GPU-measurement symbol anywhere


@pytest.mark.slow
def test_report_of_a_real_cpu_run(tmp_path: Path):
    """Tiny models measured for real on this CPU (in process), then reported: every plot the data allows."""
    from bench.config.spec import CaseSpec, TimingPolicy
    from bench.measure.environment import collect_environment
    from bench.measure.run_options import RunOptions
    from bench.measure.runner import run_cases

    cases = [CaseSpec("phi-3-tiny", "fp32", "generate", 1, 8, 4, suite="smoke")]
    cases += [CaseSpec("bert-tiny", "fp32", "encode", 1, 8, suite="smoke")]
    folder = tmp_path / "run"
    policy = TimingPolicy(warmup_runs=0, min_repetitions=2, max_repetitions=2)
    records = run_cases(cases, policy, RunOptions(out_dir=folder, progress=False, in_process=True))
    assert [r.status for r in records] == ["ok"] * 2, [r.error for r in records]
    RunFolder(folder).record_environment(collect_environment("smoke", ["bench", "run"]))
    files = build_report(folder)
    # the run wrote telemetry timelines, and its decode record carries a bandwidth, so the roofline is drawn
    assert {p.name for p in files.plots} == PLOT_FILES | {"timeline.png", "decode-roofline.png"}
    md = files.markdown.read_text(encoding="utf-8")
    assert "Energy is not measured on a CPU" in md
    assert "## Claims" in md and "## Environment" in md and "Peak host RSS (GiB)" in md
    assert all(not v.measured_on_gpu for v in files.verdicts)


def test_write_report_is_what_bench_run_calls(tmp_path: Path):
    from bench.commands.report_cmd import write_report

    folder = write_run(tmp_path / "run", [gpu_generate("fp16", 128)], envelope())
    path = write_report(folder)
    run = RunFolder(folder)
    assert path == run.report_md and run.report_html.is_file() and run.records_csv.is_file()
    with pytest.raises(BadInputError, match="does not exist"):
        write_report(folder, tmp_path / "missing.toml")
