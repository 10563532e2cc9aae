"""The allocator, loading and generation replays against published real-GPU readings (A100-80GB,
optimum-benchmark running-llamas, Llama-2-7b fp16, prompt 256, 512 new tokens): the live peak and the pool
of a forward and of a generate, with no calibrated figure involved (benchmarks/published_accuracy.py runs
every row)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

MB = 10**6


@pytest.mark.slow  # replays 512 decode steps of 32 layers (seconds)
@pytest.mark.parametrize(
    ("batch", "fwd_alloc", "fwd_resv", "gen_alloc", "gen_resv"),
    [(1, 13_738, 13_767, 14_356, 14_480), (8, 15_037, 15_701, 19_997, 63_503)],
)
def test_llama2_7b_readings_within_one_percent(
    batch: int, fwd_alloc: int, fwd_resv: int, gen_alloc: int, gen_resv: int
) -> None:
    """At batch 8 the pool is three times the live peak: each longer KV tensor needs a new block and the
    shorter ones stay cached; the replay must reproduce that growth, not just the live bytes."""
    import published_accuracy

    rep = published_accuracy.replay(
        "NousResearch/Llama-2-7b-hf",
        "fp16",
        batch,
        256,
        512,
        empty_cache_after_load=True,
        forward_first=True,
        reset_between=True,
    )
    for predicted, measured in (
        (rep.fwd_alloc, fwd_alloc),
        (rep.fwd_resv, fwd_resv),
        (rep.gen_alloc, gen_alloc),
        (rep.gen_resv, gen_resv),
    ):
        assert predicted == pytest.approx(measured * MB, rel=0.01)
