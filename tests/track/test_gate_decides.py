"""The gate never passes what it could not test, and judges against the spread of several baseline runs."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from synthetic_records import H200, MiB, envelope, generate_record, suite_records, write_run

from bench import cli
from bench.config.suite import load_suite
from bench.report.comparison import render_markdown
from bench.results.record import Samples
from bench.results.run_folder import RunFolder
from bench.track.baseline import load_baseline, read_baseline, save_baseline
from bench.track.compare import compare_memory, compare_records
from bench.track.gate_verdicts import INSUFFICIENT, NOT_SIGNIFICANT, REGRESSION, UNCHANGED
from bench.track.settings import CompareSettings
from bench.track.statistics import beyond_run_range, repetitions_needed

FROZEN = Path(__file__).resolve().parents[1] / "data" / "runs" / "cpu-smoke"
FAST = CompareSettings(bootstrap_resamples=0)
FAST_CLI = ("--bootstrap-resamples", "0")


@pytest.fixture
def bench_main(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("bench.commands.compare_cmd",))
    return cli.main


def _slower(samples: Samples, factor: float) -> Samples:
    return Samples(
        ttft_s=tuple(t * factor for t in samples.ttft_s),
        e2e_s=tuple(t * factor for t in samples.e2e_s),
        itl_s=tuple(tuple(g * factor for g in gaps) for gaps in samples.itl_s),
        latency_s=tuple(t * factor for t in samples.latency_s),
    )


def _metric(case, name):
    return next(m for m in case.metrics if m.metric == name)


def _phi(comparison):
    return next(c for c in comparison.cases if c.label.startswith("phi-3-mini fp16 generate b1 L512"))


def _phi_json(data):
    return next(c for c in data["cases"] if c["label"].startswith("phi-3-mini fp16 generate b1 L512"))


# --- the 30% slowdown that passed -------------------------------------------------------------


def test_the_frozen_smoke_run_30_percent_slower_is_inconclusive_not_a_pass(tmp_path, bench_main, capsys):
    """Issue 12, item 3: every case "insufficient samples" (3 repetitions) used to exit 0."""
    base = FROZEN
    records = RunFolder(base).load_records()
    assert {len(r.samples.e2e_s or r.samples.latency_s) for r in records} == {3}
    slow = RunFolder(tmp_path / "slow").create()
    slow.append_all([r.replace(samples=_slower(r.samples, 1.3)) for r in records])
    shutil.copy(base / "environment.json", slow.environment_file)
    out = tmp_path / "cmp.json"
    assert bench_main(["compare", str(slow.root), str(base), "--json", str(out), *FAST_CLI]) == 3
    captured = capsys.readouterr()
    assert "inconclusive" in captured.err and "--allow-inconclusive" in captured.err
    assert "needs at least 5 repetitions per side" in " ".join(captured.out.split())  # one warning, wrapped at 80
    data = json.loads(out.read_text())
    assert data["exit_status"] == 3 and data["summary"] == {INSUFFICIENT: len(records)}
    assert bench_main(["compare", str(slow.root), str(base), "--allow-inconclusive", *FAST_CLI]) == 0


def test_five_repetitions_decide_the_same_slowdown_and_name_the_test():
    base = suite_records(seed=1, reps=5)
    slow = suite_records(seed=2, reps=5, slowdown=1.3, run_id="run-cur")
    result = compare_records(base, slow, FAST)
    assert result.exit_status == 1 and len(result.regressions) == len(base)
    e2e = _metric(_phi(result), "e2e_s")
    assert e2e.verdict == REGRESSION and e2e.test == "Mann-Whitney U on 5+5 repetitions"
    assert e2e.p_value == pytest.approx(1 / 252)


def test_exit_statuses_of_the_gate():
    decided = generate_record(reps=5, seed=1)
    few = generate_record(reps=3, seed=2, context=1024)
    slow = dict(slowdown=1.3, run_id="run-cur")
    inconclusive = compare_records([few], [generate_record(reps=3, seed=3, context=1024, **slow)], FAST)
    assert inconclusive.exit_status == 3 and len(inconclusive.inconclusive) == 1
    allowed = dataclasses.replace(FAST, allow_inconclusive=True)
    assert compare_records([few], [generate_record(reps=3, seed=3, context=1024, **slow)], allowed).exit_status == 0
    # a regression elsewhere wins over inconclusive
    both = compare_records(
        [decided, few],
        [generate_record(reps=5, seed=4, **slow), generate_record(reps=3, seed=5, context=1024, **slow)],
        FAST,
    )
    assert both.exit_status == 1
    # three repetitions that did not move are still "unchanged": nothing was left undecided
    same = compare_records([few], [generate_record(reps=3, seed=2, context=1024, run_id="run-cur")], FAST)
    assert same.exit_status == 0 and _metric(same.cases[0], "e2e_s").verdict == UNCHANGED


def test_repetitions_needed_follows_from_the_smallest_p_value():
    # one-sided Mann-Whitney U at best p = 1 / C(n + m, n): 4+4 -> 1/70 = 0.014, 5+5 -> 1/252 = 0.004
    assert repetitions_needed(0.01) == 5
    assert repetitions_needed(0.05) == 4  # 3+3 gives exactly 1/20, which is not below 0.05
    assert repetitions_needed(0.01, other=3) == 7  # C(10, 3) = 120 > 100, C(9, 3) = 84 < 100
    with pytest.raises(ValueError):
        repetitions_needed(0)


def test_shipped_suites_record_enough_repetitions_for_the_default_test():
    need = repetitions_needed(CompareSettings().alpha)
    for name in ("smoke", "gpu"):  # not parametrized: an id "gpu" would read as the gpu marker and skip
        policy = load_suite(name).policy
        assert policy.min_repetitions >= need and policy.max_repetitions >= policy.min_repetitions, name


# --- several baseline runs --------------------------------------------------------------------

# Run-level factors: repetitions within one run agree to 0.5%, whole runs differ by up to 10%.
RUN_FACTORS = (0.96, 1.00, 1.03, 1.06)


def _run(tmp_path, i, factor, run_id=None):
    run_id = run_id or f"run-{i}"
    records = suite_records(seed=10 + i, noise=0.005, slowdown=factor, run_id=run_id)
    return write_run(tmp_path / f"r{i}", records, envelope(run_id))


def _baseline_of_runs(tmp_path, bench_main):
    profiles = tmp_path / "profiles"
    for i, factor in enumerate(RUN_FACTORS):
        argv = ["baseline", "save", str(_run(tmp_path, i, factor)), "--profiles-dir", str(profiles)]
        assert bench_main(argv + (["--append"] if i else [])) == 0
    return profiles


def test_baseline_save_append_keeps_every_run(tmp_path, bench_main, capsys):
    profiles = _baseline_of_runs(tmp_path, bench_main)
    assert "in 4 runs" in capsys.readouterr().out
    b = load_baseline(profiles, H200)
    assert [r["run_ids"] for r in b.runs] == [["run-0"], ["run-1"], ["run-2"], ["run-3"]]
    assert len(b.records) == 4 * 11 and b.meta["source"].endswith("r3")
    assert {e["run_id"] for e in b.envelopes} == {"run-0", "run-1", "run-2", "run-3"}
    # the same run twice would count twice in the spread: refused, naming the run
    assert bench_main(["baseline", "save", str(tmp_path / "r2"), "--profiles-dir", str(profiles), "--append"]) == 2
    assert "run-2 is already in the baseline" in capsys.readouterr().err
    # without --append the baseline is replaced by one run
    save_baseline(tmp_path / "r1", profiles)
    assert [r["run_ids"] for r in load_baseline(profiles, H200).runs] == [["run-1"]]


def test_a_baseline_saved_before_runs_existed_is_one_run(tmp_path):
    path = save_baseline(_run(tmp_path, 0, 1.0), tmp_path / "p")[0]
    meta = json.loads(RunFolder(path).baseline_meta_file.read_text())
    del meta["runs"]
    RunFolder(path).write_baseline_meta(meta)
    assert read_baseline(path).run_of == {"run-0": "run-1"}


def test_run_to_run_variance_is_judged_by_the_spread_of_run_medians(tmp_path, bench_main):
    profiles = _baseline_of_runs(tmp_path, bench_main)
    rerun = _run(tmp_path, 9, 1.08, "run-cur")  # no change in the code: one more run's own offset
    out = tmp_path / "cmp.json"
    assert bench_main(["compare", str(rerun), "--profiles-dir", str(profiles), "--json", str(out), *FAST_CLI]) == 0
    case = _phi_json(json.loads(out.read_text()))
    e2e = next(m for m in case["metrics"] if m["metric"] == "e2e_s")
    assert e2e["test"] == "run medians of 4 baseline runs" and e2e["baseline_runs"] == 4
    assert e2e["verdict"] == NOT_SIGNIFICANT and e2e["change"] > 0.05
    # the repetitions of a single baseline run understate that variance: the rank test calls it a regression
    one_run = RunFolder(tmp_path / "r0").load_records()
    alone = compare_records(one_run, RunFolder(rerun).load_records(), FAST)
    assert _metric(_phi(alone), "e2e_s").verdict == REGRESSION
    # a real 30% slowdown is outside the widened range
    slow = _run(tmp_path, 8, 1.3, "run-slow")
    assert bench_main(["compare", str(slow), "--profiles-dir", str(profiles), "--json", str(out), *FAST_CLI]) == 1
    case = _phi_json(json.loads(out.read_text()))
    e2e = next(m for m in case["metrics"] if m["metric"] == "e2e_s")
    assert e2e["verdict"] == REGRESSION and e2e["test"] == "run medians of 4 baseline runs"


def test_a_stored_baseline_folder_passed_as_baseline_keeps_its_runs(tmp_path, bench_main):
    profiles = _baseline_of_runs(tmp_path, bench_main)
    out = tmp_path / "cmp.json"
    folder = profiles / "baselines" / "nvidia-h200"
    assert bench_main(["compare", str(_run(tmp_path, 9, 1.08, "x")), str(folder), "--json", str(out), *FAST_CLI]) == 0
    assert _phi_json(json.loads(out.read_text()))["metrics"][0]["test"] == "run medians of 4 baseline runs"


def test_two_baseline_runs_are_pooled_for_the_rank_test():
    runs = [*suite_records(seed=1, run_id="a"), *suite_records(seed=2, run_id="b")]
    cur = suite_records(seed=3, slowdown=1.3, run_id="c")
    result = compare_records(runs, cur, FAST, baseline_run_of={"a": "1", "b": "2"})
    e2e = _metric(_phi(result), "e2e_s")
    assert (
        e2e.verdict == REGRESSION
        and e2e.test == "Mann-Whitney U on 20+10 repetitions, the baseline's pooled from 2 runs"
    )


def test_range_rule_by_hand():
    medians = [1.00, 1.02, 1.04]
    assert beyond_run_range(medians, 1.04 * 1.05 + 1e-9, 0.05) == "up"
    assert beyond_run_range(medians, 1.04 * 1.05, 0.05) is None  # on the widened edge: inside
    assert beyond_run_range(medians, 0.94, 0.05) == "down"  # below 1.00 x 0.95
    assert beyond_run_range(medians, 0.96, 0.05) is None
    with pytest.raises(ValueError):
        beyond_run_range([], 1.0, 0.05)


def test_memory_against_several_runs_counts_from_their_largest_peak():
    peaks = [8000 * MiB, 8040 * MiB, 8020 * MiB]
    runs = [generate_record(peak_bytes=p) for p in peaks]
    grown = generate_record(peak_bytes=8040 * MiB + 100 * MiB)
    m = compare_memory(runs, grown, FAST)
    assert m.verdict == REGRESSION and m.baseline == 8040 * MiB and m.test == "range of 3 baseline runs' peaks"
    within = generate_record(peak_bytes=8040 * MiB + 60 * MiB)  # 1% of 8040 MiB is 80 MiB
    assert compare_memory(runs, within, FAST).verdict == UNCHANGED


def test_min_baseline_runs_must_be_at_least_two():
    from bench.errors import BadInputError

    with pytest.raises(BadInputError, match="at least 2"):
        CompareSettings(min_baseline_runs=1)


def test_inconclusive_is_documented_in_help_and_headed_in_markdown(tmp_path, bench_main, capsys):
    with pytest.raises(SystemExit):
        bench_main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "3 inconclusive" in text and "--allow-inconclusive" in text and "at least 5 repetitions" in text
    few = [generate_record(reps=3, seed=1)]
    md = render_markdown(compare_records(few, [generate_record(reps=3, seed=2, slowdown=1.3, run_id="c")], FAST))
    assert md.startswith("## Benchmark comparison: ⚠️ inconclusive (1 case could not be tested)")
    assert "Mann-Whitney U on 3+3 repetitions" in md
