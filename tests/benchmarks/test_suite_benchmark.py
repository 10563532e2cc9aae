"""A suite as pytest-benchmark tests: one test per case, timed in pedantic mode with the suite's warm-up and rounds.

Skipped unless ``BENCH_PYTEST_SUITE`` names a suite (a shipped name or a .toml path)::

    BENCH_PYTEST_SUITE=smoke pytest tests/benchmarks --benchmark-json=smoke.json
    BENCH_PYTEST_SUITE=gpu BENCH_PYTEST_DEVICE=cuda:0 pytest tests/benchmarks --benchmark-autosave
    pytest-benchmark compare            # against earlier --benchmark-autosave runs, or 'bench export' files

Optional: ``BENCH_PYTEST_DEVICE`` (default: the suite's device), ``BENCH_PYTEST_SHARD=K/N`` (one slice),
``BENCH_PYTEST_ROUNDS`` (default: the suite's ``min_repetitions``). Test names are ``test_case[<case key>]``,
the names ``bench export --format pytest-benchmark`` writes, so the two kinds of file compare with each other.
Tokens/s, TTFT and memory (bytes) go into each benchmark's ``extra_info``.
"""

from __future__ import annotations

import os

import pytest

from bench.track.export import case_group, case_test_id

SUITE = os.environ.get("BENCH_PYTEST_SUITE", "").strip()


def _load():
    from bench.config.shards import parse_shard, select_shard
    from bench.config.suite import load_suite

    suite = load_suite(SUITE)
    cases = suite.cases
    shard = os.environ.get("BENCH_PYTEST_SHARD", "").strip()
    if shard:
        cases = select_shard(cases, *parse_shard(shard))
    return suite.policy, cases


def _params():
    if not SUITE:
        reason = "set BENCH_PYTEST_SUITE=smoke (or gpu, or a suite .toml) to run a suite under pytest-benchmark"
        return [pytest.param(None, id="no-suite", marks=pytest.mark.skip(reason=reason))]
    _, cases = _load()
    return [pytest.param(c, id=case_test_id(c)) for c in cases]


@pytest.fixture(scope="module")
def policy():
    return _load()[0]


def _prepare_case():
    import bench.measure.case_runner

    prepare = getattr(bench.measure.case_runner, "prepare_case", None)
    if prepare is None:
        pytest.skip("bench.measure.case_runner.prepare_case(spec, device) is not in this version of the harness")
    return prepare


@pytest.mark.parametrize("case", _params())
def test_case(case, policy, benchmark):
    prepare_case = _prepare_case()
    device = os.environ.get("BENCH_PYTEST_DEVICE", "").strip() or case.device
    if device.startswith("cuda"):
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip(f"case needs {device} and no CUDA device is available")
    rounds = int(os.environ.get("BENCH_PYTEST_ROUNDS", "0") or 0) or policy.min_repetitions
    harness_s: list[float] = []
    prepared = prepare_case(case, device)
    try:
        benchmark.group = case_group(case)

        def once() -> None:
            harness_s.append(float(prepared.run_once()))

        benchmark.pedantic(once, rounds=rounds, warmup_rounds=policy.warmup_runs, iterations=1)
        benchmark.extra_info.update(prepared.extra_info())
        # the harness's own timings of the rounds (CUDA-synchronized), beside pytest-benchmark's host clock
        benchmark.extra_info["harness_samples_s"] = harness_s[policy.warmup_runs:]
        benchmark.extra_info["case_key"] = case.key
    finally:
        prepared.close()
    assert len(harness_s) == policy.warmup_runs + rounds
    assert all(s > 0 for s in harness_s)
