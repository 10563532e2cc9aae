import json
import random

import pytest
from synthetic_records import H200, L4, envelope, generate_record, suite_records, write_run

from bench import cli
from bench.config.shards import assign_shards, expected_cost, model_parameters, parse_shard, select_shard
from bench.config.spec import CaseSpec
from bench.errors import BadInputError
from bench.results.merge import merge_runs
from bench.results.run_folder import RunFolder

FAST_CLI = ("--bootstrap-resamples", "200")


@pytest.fixture
def bench_main(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("bench.commands.compare_cmd",))
    return cli.main


def _cases(n=12):
    return [CaseSpec("phi-3-mini", p, "generate", 1, c, 64, device="cuda", suite="gpu")
            for p in ("fp16", "int8", "nf4") for c in (128, 512, 1024, 2048)][:n]


# --- parse_shard -----------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [("1/4", (1, 4)), ("4/4", (4, 4)), (" 2 / 3 ", (2, 3)), ("1/1", (1, 1))])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text, message", [
    ("0/4", "between 1 and 4"), ("5/4", "between 1 and 4"), ("1/0", "at least 1"), ("2", "K/N"),
    ("a/b", "K/N"), ("-1/2", "K/N"), ("1/2/3", "K/N"), ("", "K/N"),
])
def test_parse_shard_refuses_bad_values(text, message):
    with pytest.raises(BadInputError, match=message):
        parse_shard(text)


# --- select_shard ----------------------------------------------------------------------------


def test_greedy_assignment_by_hand():
    cases = _cases(5)
    costs = dict(zip((c.key for c in cases), (8, 7, 6, 5, 4), strict=True))
    # costliest first, each to the least-loaded shard: 8->A, 7->B, 6->B (13), 5->A (13), 4->A (tie: lowest)
    assert assign_shards(cases, 2, cost=lambda c: costs[c.key]) == [0, 1, 1, 0, 0]
    assert select_shard(cases, 1, 2, cost=lambda c: costs[c.key]) == [cases[0], cases[3], cases[4]]
    assert select_shard(cases, 2, 2, cost=lambda c: costs[c.key]) == [cases[1], cases[2]]


def test_shards_partition_the_cases_deterministically_and_in_balance():
    cases = _cases()
    cost = {c.key: (i * 7919) % 97 + 1 for i, c in enumerate(cases)}
    for n in (1, 2, 3, 5, 12, 20):
        shards = [select_shard(cases, k, n, cost=lambda c: cost[c.key]) for k in range(1, n + 1)]
        assert sorted(c.key for s in shards for c in s) == sorted(c.key for c in cases)  # each case once
        shuffled = cases[:]
        random.Random(n).shuffle(shuffled)
        again = [select_shard(shuffled, k, n, cost=lambda c: cost[c.key]) for k in range(1, n + 1)]
        assert [{c.key for c in s} for s in again] == [{c.key for c in s} for s in shards]  # order-independent
        loads = [sum(cost[c.key] for c in s) for s in shards]
        assert max(loads) - min(loads) <= max(cost.values())  # the greedy bound
    for shard in shards:  # original order kept inside a shard (so groups stay together for the runner)
        assert shard == sorted(shard, key=cases.index)


def test_select_shard_refuses_out_of_range():
    with pytest.raises(BadInputError):
        select_shard(_cases(), 3, 2)


def test_expected_cost_scales_with_size_precision_tokens_and_batch():
    fp16 = CaseSpec("phi-3-mini", "fp16", "generate", 1, 512, 64)
    assert expected_cost(fp16.with_(context_tokens=1088)) == pytest.approx(2 * expected_cost(fp16))  # 576 -> 1152
    assert expected_cost(fp16.with_(batch_size=4)) == pytest.approx(4 * expected_cost(fp16))
    assert expected_cost(fp16.with_(precision="int8")) == pytest.approx(2.5 * expected_cost(fp16))
    bert = CaseSpec("bert-base", "fp16", "encode", 1, 576, 0)
    assert expected_cost(bert) < expected_cost(fp16) / 20  # 110M vs 3.8B parameters
    assert 3.5e9 < model_parameters("phi-3-mini", "random") < 4.0e9
    assert 1.0e8 < model_parameters("bert-base", "random") < 1.2e8
    assert model_parameters("phi-3-mini", "checkpoint:/nonexistent") == 1e9  # unreadable: a fallback, no crash


# --- merge_runs ------------------------------------------------------------------------------


def test_merge_joins_shards_and_machines_keeping_devices(tmp_path):
    records = suite_records(seed=1)
    a = write_run(tmp_path / "h200-1", records[:6], envelope("run-a"))
    b = write_run(tmp_path / "h200-2", [r.replace(run_id="run-b") for r in records[6:]], envelope("run-b"))
    l4 = write_run(tmp_path / "l4-1", suite_records(seed=2, device_name=L4, run_id="run-c"),
                   envelope("run-c", gpu=L4))
    empty = tmp_path / "h200-3"  # a shard that got no cases still writes its envelope
    RunFolder(empty).create().record_environment(envelope("run-d"))
    merged = merge_runs([a, b, l4, empty], tmp_path / "merged")
    assert len(merged) == 22
    back = RunFolder(tmp_path / "merged").load_records()
    assert [(r.device_name, r.spec.key) for r in back] == [(r.device_name, r.spec.key) for r in merged]
    assert {r.device_name for r in back} == {H200, L4}
    envs = json.loads(RunFolder(tmp_path / "merged").environment_file.read_text())  # a list, even of one
    assert [e["run_id"] for e in envs] == ["run-a", "run-b", "run-c", "run-d"]


def test_merge_refuses_duplicate_cases_and_bad_folders(tmp_path):
    records = suite_records(seed=1)
    a = write_run(tmp_path / "a", records[:6], envelope("run-a"))
    b = write_run(tmp_path / "b", records[5:], envelope("run-b"))  # overlaps on records[5]
    with pytest.raises(BadInputError, match=f"{records[5].spec.key} on NVIDIA H200 is in both"):
        merge_runs([a, b], tmp_path / "m1")
    assert not RunFolder(tmp_path / "m1").has_results()
    # the same folder named twice is read once
    assert len(merge_runs([a, a], tmp_path / "m2")) == 6
    with pytest.raises(BadInputError, match="already exists"):
        merge_runs([a], tmp_path / "m2")
    with pytest.raises(BadInputError, match="not a run folder"):
        merge_runs([tmp_path / "nothing"], tmp_path / "m3")
    with pytest.raises(BadInputError, match="into itself"):
        merge_runs([a], a)


def test_merge_keeps_the_latest_retry_within_one_folder(tmp_path):
    oom = generate_record(status="oom")
    ok = generate_record(seed=5)
    folder = write_run(tmp_path / "a", [oom, ok], envelope())
    merged = merge_runs([folder], tmp_path / "m")
    assert [r.status for r in merged] == ["ok"]


def test_cli_merge_then_compare(tmp_path, bench_main):
    base = write_run(tmp_path / "base", suite_records(seed=1), envelope("run-base"))
    cur = suite_records(seed=2, slowdown=1.2, run_id="run-cur")
    s1 = write_run(tmp_path / "s1", cur[:4], envelope("run-cur"))
    s2 = write_run(tmp_path / "s2", cur[4:], envelope("run-cur"))
    assert bench_main(["merge", str(s1), str(s2), "--out", str(tmp_path / "merged")]) == 0
    assert len(RunFolder(tmp_path / "merged").load_records()) == 11
    assert bench_main(["compare", str(tmp_path / "merged"), str(base), *FAST_CLI]) == 1
    assert bench_main(["merge", str(s1), str(s1 / ".."), "--out", str(tmp_path / "merged")]) == 2
