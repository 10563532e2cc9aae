import json
import math

import pytest
from synthetic_records import H200, L4, MiB, encode_record, envelope, generate_record, suite_records, write_run

from bench import cli
from bench.errors import BadInputError
from bench.report.comparison import render_markdown, render_terminal
from bench.results.metrics import speed_samples
from bench.track.baseline import gpu_slug, list_baselines, load_baseline, save_baseline
from bench.track.compare import compare_records, compare_speed
from bench.track.gate_verdicts import (
    BOTH_FAILED,
    COMPARED,
    FAILED,
    IMPROVEMENT,
    INSUFFICIENT,
    NOT_COMPARABLE,
    NOT_SIGNIFICANT,
    ONLY_BASELINE,
    ONLY_CURRENT,
    REGRESSION,
    UNCHANGED,
)
from bench.track.settings import SPEED_METRICS, CompareSettings
from bench.track.statistics import smallest_p_value

FAST = CompareSettings(bootstrap_resamples=200)
E2E = next(m for m in SPEED_METRICS if m.name == "e2e_s")
DECODE = next(m for m in SPEED_METRICS if m.name == "decode_tokens_per_s")


def _metric(case, name):
    return next(m for m in case.metrics if m.metric == name)


# --- the four synthetic scenarios of the issue -------------------------------------------------


def test_identical_rerun_with_the_same_noise_is_not_flagged():
    for seed in range(3):
        base = suite_records(seed=2 * seed, noise=0.02)
        rerun = suite_records(seed=2 * seed + 1, noise=0.02, run_id="run-cur")
        result = compare_records(base, rerun, FAST)
        assert result.regressions == []
        assert result.exit_status == 0
        assert all(c.status == COMPARED for c in result.cases)
        assert len(result.cases) == 11


def test_twenty_percent_slowdown_with_two_percent_noise_is_flagged():
    base = suite_records(seed=1, noise=0.02)
    slow = suite_records(seed=2, noise=0.02, slowdown=1.2, run_id="run-cur")
    result = compare_records(base, slow, FAST)
    assert result.exit_status == 1
    assert len(result.regressions) == 11  # every case, generate and encode
    case = next(c for c in result.cases if c.key == base[0].spec.key)
    e2e, decode = _metric(case, "e2e_s"), _metric(case, "decode_tokens_per_s")
    assert e2e.verdict == REGRESSION and decode.verdict == REGRESSION
    assert e2e.change == pytest.approx(0.2, abs=0.05)
    assert decode.change == pytest.approx(1 / 1.2 - 1, abs=0.05)  # tokens/s falls by 1/6
    assert e2e.p_value < 0.01
    assert e2e.ci_low is not None and e2e.ci_low > 1.05  # the interval of the ratio clears the threshold
    assert _metric(case, "peak_memory_bytes").verdict == UNCHANGED


def test_three_percent_change_under_ten_percent_noise_is_not_flagged():
    for seed in range(6):
        base = [generate_record(noise=0.10, reps=10, seed=2 * seed)]
        cur = [generate_record(noise=0.10, reps=10, seed=2 * seed + 1, slowdown=1.03, run_id="run-cur")]
        result = compare_records(base, cur, FAST)
        assert result.regressions == [], f"seed {seed}: {result.cases[0].metrics}"
        assert result.exit_status == 0


def test_memory_growth_of_100_mib_is_flagged_and_small_growth_is_not():
    base = suite_records(seed=1)
    grown = suite_records(seed=2, peak_extra=100 * MiB, run_id="run-cur")
    result = compare_records(base, grown, FAST)
    assert result.exit_status == 1
    mem = [_metric(c, "peak_memory_bytes") for c in result.cases]
    assert all(m.verdict == REGRESSION for m in mem)
    assert all(m.current - m.baseline == 100 * MiB for m in mem)
    # speed did not change, so only memory fails
    assert all(m.verdict != REGRESSION for c in result.cases for m in c.metrics if m.metric != "peak_memory_bytes")
    # 8.3 GiB peak: 1% is 85 MiB, so 80 MiB is tolerated; 900 MiB peak: 32 MiB floor, so 30 MiB is tolerated
    big = generate_record(peak_bytes=int(8.3 * (1 << 30)))
    assert compare_records([big], [big.replace(memory=big.memory.__class__(
        nvml_process_peak_bytes=big.memory.nvml_process_peak_bytes + 80 * MiB))], FAST).exit_status == 0
    small = encode_record(peak_bytes=900 * MiB)
    grown_small = small.replace(memory=small.memory.__class__(nvml_process_peak_bytes=930 * MiB))
    assert compare_records([small], [grown_small], FAST).exit_status == 0
    grown_small = small.replace(memory=small.memory.__class__(nvml_process_peak_bytes=933 * MiB))
    assert compare_records([small], [grown_small], FAST).exit_status == 1


def test_memory_falls_back_to_reserved_then_host_rss_when_nvml_is_missing():
    base = generate_record()
    no_nvml = base.memory.__class__(peak_reserved_bytes=4000 * MiB, host_peak_rss_bytes=3000 * MiB)
    grown = base.memory.__class__(peak_reserved_bytes=4100 * MiB, host_peak_rss_bytes=3000 * MiB)
    result = compare_records([base.replace(memory=no_nvml)], [base.replace(memory=grown)], FAST)
    mem = _metric(result.cases[0], "peak_memory_bytes")
    assert mem.verdict == REGRESSION and "peak_reserved_bytes" in mem.detail
    cpu_only = base.memory.__class__(host_peak_rss_bytes=3000 * MiB)
    result = compare_records([base.replace(memory=cpu_only)], [base.replace(memory=cpu_only)], FAST)
    assert "host_peak_rss_bytes" in _metric(result.cases[0], "peak_memory_bytes").detail


def test_mismatched_gpus_are_not_comparable_and_unusable():
    base = suite_records(seed=1, device_name=L4)
    cur = suite_records(seed=2, device_name=H200, run_id="run-cur")
    result = compare_records(base, cur, FAST)
    assert {c.status for c in result.cases} == {NOT_COMPARABLE}
    assert len(result.cases) == 11  # reported once per case, not again as "only in baseline"
    assert all(c.metrics == () for c in result.cases)  # never compared
    assert result.cases[0].baseline_device_name == L4
    assert any("different GPUs" in w and L4 in w and H200 in w for w in result.warnings)
    assert result.exit_status == 2


def test_missing_cases_are_reported_on_both_sides():
    base = suite_records(seed=1)
    cur = suite_records(seed=2, run_id="run-cur")
    dropped, extra = base[0], generate_record(context=4032, seed=9, run_id="run-cur")
    result = compare_records(base, [*cur[1:], extra], FAST)
    by_key = {c.key: c for c in result.cases}
    assert by_key[dropped.spec.key].status == ONLY_BASELINE
    assert by_key[extra.spec.key].status == ONLY_CURRENT
    assert sum(c.status == COMPARED for c in result.cases) == 10
    assert result.exit_status == 0


def test_a_case_that_fails_now_is_a_regression_and_one_that_works_now_is_not():
    ok = generate_record()
    oom = generate_record(status="oom", run_id="run-cur")
    result = compare_records([ok], [oom], FAST)
    assert result.cases[0].status == FAILED and result.exit_status == 1
    assert "oom" in result.cases[0].notes[0]
    result = compare_records([oom], [ok], FAST)
    assert result.cases[0].verdict == IMPROVEMENT and result.exit_status == 0
    result = compare_records([oom], [oom], FAST)
    assert result.cases[0].status == BOTH_FAILED and result.exit_status == 0


# --- the statistics --------------------------------------------------------------------------


def test_smallest_p_value_is_one_over_the_number_of_orderings():
    assert smallest_p_value(3, 3) == pytest.approx(1 / 20)
    assert smallest_p_value(4, 4) == pytest.approx(1 / 70)
    assert smallest_p_value(5, 5) == pytest.approx(1 / 252)
    assert smallest_p_value(1, 0) == 1.0


def test_three_repetitions_give_insufficient_samples_not_a_verdict():
    base = [generate_record(reps=3, seed=1)]
    cur = [generate_record(reps=3, seed=2, slowdown=1.5, run_id="run-cur")]
    result = compare_records(base, cur, FAST)
    assert _metric(result.cases[0], "e2e_s").verdict == INSUFFICIENT
    assert "3 vs 3 samples" in _metric(result.cases[0], "e2e_s").detail
    assert result.exit_status == 3  # inconclusive: a gate that cannot decide does not pass
    assert any("needs at least 5 repetitions per side" in w for w in result.warnings)
    # within the threshold, few samples still read as unchanged
    result = compare_records(base, [generate_record(reps=3, seed=1, run_id="run-cur")], FAST)
    assert _metric(result.cases[0], "e2e_s").verdict == UNCHANGED


def test_compare_speed_on_hand_made_samples():
    base = [1.00, 1.01, 0.99, 1.02, 0.98]
    # complete separation 20% up: smallest one-sided p = 1/252 < 0.01
    slow = compare_speed(E2E, base, [1.20, 1.21, 1.19, 1.22, 1.18], FAST)
    assert slow.verdict == REGRESSION
    assert slow.change == pytest.approx(0.2)
    assert slow.p_value == pytest.approx(1 / 252)
    # tokens/s going up is an improvement; going down a regression
    assert compare_speed(DECODE, base, [1.20, 1.21, 1.19, 1.22, 1.18], FAST).verdict == IMPROVEMENT
    assert compare_speed(DECODE, base, [0.80, 0.81, 0.79, 0.82, 0.78], FAST).verdict == REGRESSION
    # medians 6% apart but overlapping widely: beyond the threshold, not significant
    loose = compare_speed(E2E, [1.0, 0.8, 1.2, 0.9, 1.1], [1.06, 0.86, 1.26, 0.96, 1.16], FAST)
    assert loose.verdict == NOT_SIGNIFICANT and loose.p_value >= 0.01
    # a custom threshold per metric
    strict = CompareSettings(metric_thresholds=(("e2e_s", 0.25),), bootstrap_resamples=0)
    assert compare_speed(E2E, base, [1.20, 1.21, 1.19, 1.22, 1.18], strict).verdict == UNCHANGED
    assert strict.threshold_for("ttft_s") == 0.05


def test_speed_samples_follow_the_metric_definitions():
    r = generate_record(reps=4, new_tokens=64, batch=2, context=512)
    for t, e, d, p in zip(r.samples.ttft_s, r.samples.e2e_s, speed_samples(r, "decode_tokens_per_s"),
                          speed_samples(r, "prefill_tokens_per_s"), strict=True):
        assert d == pytest.approx(2 * 63 / (e - t))
        assert p == pytest.approx(2 * 512 / t)
    assert speed_samples(r, "e2e_s") == list(r.samples.e2e_s)


def test_bad_settings_are_refused():
    with pytest.raises(BadInputError, match="threshold"):
        CompareSettings(threshold=5)
    with pytest.raises(BadInputError, match="no speed metric named 'tokens'"):
        CompareSettings(metric_thresholds=(("tokens", 0.1),))
    with pytest.raises(BadInputError, match="alpha"):
        CompareSettings(alpha=0)


# --- environments ----------------------------------------------------------------------------


def test_library_upgrades_are_compared_but_named_or_refused_on_request():
    base = suite_records(seed=1)
    cur = suite_records(seed=2, slowdown=1.2, run_id="run-cur")
    envs_b, envs_c = [envelope("run-base", torch="2.5.1")], [envelope("run-cur", torch="2.6.0")]
    result = compare_records(base, cur, FAST, baseline_envelopes=envs_b, current_envelopes=envs_c)
    assert result.exit_status == 1
    assert all("torch 2.5.1 -> 2.6.0" in c.notes[0] for c in result.cases)
    assert any("library versions differ" in w and "(11 cases)" in w for w in result.warnings)
    strict = CompareSettings(require_same_versions=True, bootstrap_resamples=0)
    result = compare_records(base, cur, strict, baseline_envelopes=envs_b, current_envelopes=envs_c)
    assert {c.status for c in result.cases} == {NOT_COMPARABLE}
    assert result.exit_status == 2


def test_same_versions_give_no_version_warning_and_missing_envelopes_are_said():
    base, cur = suite_records(seed=1), suite_records(seed=2, run_id="run-cur")
    result = compare_records(base, cur, FAST, baseline_envelopes=[envelope("run-base")],
                             current_envelopes=[envelope("run-cur")])
    assert result.warnings == ()
    result = compare_records(base, cur, FAST)
    assert any("no environment.json for both sides" in w for w in result.warnings)


# --- output ----------------------------------------------------------------------------------


def test_markdown_terminal_and_json_output():
    base = suite_records(seed=1)
    cur = suite_records(seed=2, slowdown=1.2, run_id="run-cur")
    result = compare_records(base, cur, FAST)
    md = render_markdown(result)
    assert md.startswith("## Benchmark comparison: ❌ 11 regressions")
    assert "### Regressions" in md and "<details>" in md
    assert "| phi-3-mini fp16 generate b1 L512 n64 | NVIDIA H200 | E2E latency |" in md
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["exit_status"] == 1 and data["summary"] == {"regression": 11}
    assert data["cases"][0]["metrics"][0]["unit"] in ("tokens/s", "s")
    from rich.console import Console

    console = Console(record=True, width=250)
    render_terminal(result, console)
    text = console.export_text()
    assert "regression: 11" in text and "E2E latency: beyond 5% with p = " in text


# --- command line ----------------------------------------------------------------------------

FAST_CLI = ("--bootstrap-resamples", "200")


@pytest.fixture
def bench_main(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("bench.commands.compare_cmd",))
    return cli.main


def test_cli_compare_exit_statuses_and_files(tmp_path, bench_main, monkeypatch):
    base = write_run(tmp_path / "base", suite_records(seed=1), envelope("run-base"))
    same = write_run(tmp_path / "same", suite_records(seed=2, run_id="run-cur"), envelope("run-cur"))
    slow = write_run(tmp_path / "slow", suite_records(seed=3, slowdown=1.2, run_id="run-cur"), envelope("run-cur"))
    assert bench_main(["compare", str(same), str(base), *FAST_CLI]) == 0
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out_json, out_md = tmp_path / "cmp.json", tmp_path / "cmp.md"
    status = bench_main(["compare", str(slow), str(base), "--json", str(out_json), "--markdown", str(out_md),
                         "--step-summary", *FAST_CLI])
    assert status == 1
    assert json.loads(out_json.read_text())["exit_status"] == 1
    assert out_md.read_text().startswith("## Benchmark comparison: ❌")
    assert summary.read_text().startswith("## Benchmark comparison: ❌")
    # a threshold high enough to absorb 20% turns the verdicts into "unchanged"
    assert bench_main(["compare", str(slow), str(base), "--threshold", "30%", *FAST_CLI]) == 0
    assert bench_main(["compare", str(tmp_path / "nowhere"), str(base), *FAST_CLI]) == 2
    assert bench_main(["compare", str(slow), str(base), "--threshold", "5", *FAST_CLI]) == 2  # ambiguous: 5% or 500%?


def test_cli_compare_against_stored_baselines_per_gpu(tmp_path, bench_main, capsys):
    profiles = tmp_path / "profiles"
    matrix = [*suite_records(seed=1), *suite_records(seed=2, device_name=L4)]
    run = write_run(tmp_path / "run", matrix, envelope("run-base"))
    assert bench_main(["baseline", "save", str(run), "--profiles-dir", str(profiles)]) == 0
    assert {b.device_name for b in list_baselines(profiles)} == {H200, L4}
    assert load_baseline(profiles, H200).path == profiles / "baselines" / "nvidia-h200"
    assert len(load_baseline(profiles, L4).records) == 11
    assert load_baseline(profiles, L4).envelopes[0]["run_id"] == "run-base"
    assert bench_main(["baseline", "show", "--profiles-dir", str(profiles)]) == 0
    assert "nvidia-l4" in capsys.readouterr().out
    cur = write_run(tmp_path / "cur", suite_records(seed=3, slowdown=1.2, run_id="run-cur"), envelope("run-cur"))
    assert bench_main(["compare", str(cur), "--profiles-dir", str(profiles), *FAST_CLI]) == 1
    # a GPU without a stored baseline is unusable input, with a hint
    other = write_run(tmp_path / "a100", suite_records(seed=4, device_name="NVIDIA A100-SXM4-80GB"))
    assert bench_main(["compare", str(other), "--profiles-dir", str(profiles), *FAST_CLI]) == 2
    assert "bench baseline save" in capsys.readouterr().err


def test_save_baseline_replaces_and_refuses_unknown_devices(tmp_path):
    run = write_run(tmp_path / "run", suite_records(seed=1), envelope("run-base"))
    first = save_baseline(run, tmp_path / "p", now=lambda: "2025-01-01T00:00:00Z")
    again = save_baseline(run, tmp_path / "p", now=lambda: "2025-02-01T00:00:00Z")
    assert first == again
    assert load_baseline(tmp_path / "p", H200).meta["saved_utc"] == "2025-02-01T00:00:00Z"
    assert load_baseline(tmp_path / "p", H200).meta["versions"]["torch"] == ["2.5.1"]
    with pytest.raises(BadInputError, match="no records of device 'Tesla T4'"):
        save_baseline(run, tmp_path / "p", device_name="Tesla T4")
    with pytest.raises(BadInputError, match="stored: 'NVIDIA H200'"):
        load_baseline(tmp_path / "p", "Tesla T4")


def test_gpu_slug():
    assert gpu_slug("NVIDIA H200") == "nvidia-h200"
    assert gpu_slug("NVIDIA GeForce RTX 4090") == "nvidia-geforce-rtx-4090"
    assert gpu_slug("NVIDIA A100-SXM4-80GB") == "nvidia-a100-sxm4-80gb"
    assert gpu_slug("") == "unnamed-device"


def test_non_finite_values_stay_out_of_json():
    r = generate_record(reps=5)
    result = compare_records([r], [r.replace(run_id="x")], FAST)
    data = result.to_dict()
    json.dumps(data, allow_nan=False)
    assert not any(isinstance(v, float) and not math.isfinite(v) for c in data["cases"] for m in c["metrics"]
                   for v in m.values())


def test_quality_flags_are_noted_in_the_output():
    base = generate_record(flags=("random_weights", "noisy"))
    cur = generate_record(seed=1, run_id="run-cur", flags=("random_weights", "throttled"))
    result = compare_records([base], [cur], FAST)
    assert result.cases[0].notes == ("baseline flagged noisy", "current flagged throttled")
    md = render_markdown(result)
    assert "### Notes" in md
    note = "- phi-3-mini fp16 generate b1 L512 n64 [NVIDIA H200]: baseline flagged noisy; current flagged throttled"
    assert note in md


def test_a_gpu_missing_from_the_current_run_is_reported():
    base = [generate_record(seed=1, device_name=H200), generate_record(seed=2, device_name=L4)]
    cur = [generate_record(seed=3, device_name=H200, run_id="run-cur")]
    result = compare_records(base, cur, FAST)
    statuses = sorted((c.device_name or c.baseline_device_name, c.status) for c in result.cases)
    assert (L4, ONLY_BASELINE) in statuses and (H200, COMPARED) in statuses


def test_nvml_peaks_read_two_ways_are_not_compared():
    import dataclasses

    base = generate_record(seed=1)
    cur = generate_record(seed=2, run_id="run-cur", peak_bytes=base.memory.nvml_process_peak_bytes + 500 * MiB)
    base = base.replace(memory=dataclasses.replace(base.memory, nvml_method="process"))
    cur = cur.replace(memory=dataclasses.replace(cur.memory, nvml_method="device_used"))
    result = compare_records([base], [cur], FAST)
    metrics = [m.metric for c in result.cases for m in c.metrics]
    assert "nvml_process_peak_bytes" not in metrics and any("bytes" in m for m in metrics)
