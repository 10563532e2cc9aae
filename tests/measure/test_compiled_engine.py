"""The compiled engine for real on the CPU (inductor): a tiny decoder and a tiny encoder, one short case each."""

from __future__ import annotations

import pytest
import torch

from bench.config.models import resolve_source
from bench.config.precision import get_precision
from bench.config.spec import CaseSpec, TimingPolicy
from bench.measure.case_runner import CaseRunner
from bench.measure.engines import engine_for
from bench.measure.loader import load_model
from bench.measure.scenarios import generation_kwargs, make_prompt

POLICY = TimingPolicy(
    warmup_runs=1, min_repetitions=2, max_repetitions=2, telemetry_repetitions=1, telemetry_min_duration_s=0.0
)


@pytest.mark.slow
def test_compiled_decoding_records_its_compile_time_apart_and_gives_eager_tokens():
    spec = CaseSpec("phi-3-tiny", "fp32", "generate", 1, 8, 4, engine="compiled")
    record = CaseRunner().run(spec, POLICY)  # the first compilation of this architecture in the process
    assert record.ok, record.error
    assert len(record.samples.e2e_s) == 2  # the compiling call and the warm-up are not samples
    assert record.compile_s is not None and record.compile_s > 5 * max(record.samples.e2e_s)
    info = record.engine_info
    assert info["engine"] == "compiled" and info["cache"] == "StaticCache" and info["max_cache_len"] == 12
    # compile call + warm-up + 2 timed + 1 telemetry repetition, 3 decode steps each
    assert (info["compiled_calls"], info["eager_calls"]) == (15, 5)
    assert "recompiled_while_timed" not in record.flags
    assert record.metrics["decode_roofline_fraction"] > 0
    assert record.roofline.memory_bandwidth_source in ("measured host bandwidth", "measured by bench profile")

    model = load_model(resolve_source("phi-3-tiny", "random"), get_precision("fp32"), "cpu").model
    prompt = make_prompt(model.config.vocab_size, 1, 8, 0, "cpu")
    kwargs = generation_kwargs(model, 4)
    with torch.no_grad():
        eager_tokens = model.generate(**prompt, **kwargs).sequences
    engine = engine_for(model, "compiled", "cpu", decoder=True)
    engine.prepare(spec)
    engine.before_call()
    compiled_tokens = model.generate(**prompt, **kwargs, **engine.generate_kwargs()).sequences
    assert torch.equal(compiled_tokens, eager_tokens)  # greedy tokens are the same: the same model, compiled
    assert (engine.compiled_calls, engine.eager_calls) == (3, 1)  # 3 decode steps compiled, the prompt eager


@pytest.mark.slow
def test_a_compiled_encoder_compiles_its_forward():
    record = CaseRunner().run(CaseSpec("bert-tiny", "fp32", "encode", 1, 16, engine="compiled"), POLICY)
    assert record.ok, record.error
    assert record.engine_info["compiled"] == "forward" and record.engine_info["compiled_calls"] == 5
    assert record.compile_s is not None and len(record.samples.latency_s) == 2
    assert record.roofline.memory_bandwidth_bytes_per_s is None  # decoding only
