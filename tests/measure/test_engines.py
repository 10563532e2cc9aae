"""The compiled engine with fakes for torch.compile and the static cache: what runs compiled, what is refused."""

from __future__ import annotations

import types

import pytest
import torch

from bench.config.spec import CaseSpec
from bench.measure.engines import (
    CompiledEngine,
    EagerEngine,
    EngineError,
    compile_mode,
    engine_failure,
    engine_for,
    skip_reason,
)


class FakeModel:
    """A model whose forward records what it was called with."""

    def __init__(self):
        self.config = types.SimpleNamespace(name="cfg")
        self.calls: list[int] = []

    def forward(self, input_ids=None, **kwargs):
        self.calls.append(int(input_ids.shape[-1]))
        return "out"


def fake_compile(seen):
    def compile_fn(fn, **options):
        seen.append(options)

        def compiled(*args, **kwargs):
            seen.append("compiled call")
            return fn(*args, **kwargs)

        return compiled

    return compile_fn


class FakeCache:
    def __init__(self, config, max_cache_len):
        self.config, self.max_cache_len, self.resets = config, max_cache_len, 0

    def reset(self):
        self.resets += 1


def test_decode_steps_run_compiled_and_the_prompt_eager():
    seen: list = []
    model = FakeModel()
    engine = CompiledEngine(model, "cpu", decoder=True, compile_fn=fake_compile(seen), cache_factory=FakeCache)
    assert seen[0] == {"mode": "default", "fullgraph": True}
    engine.prepare(CaseSpec("m", "fp32", "generate", 1, 100, 28))
    assert engine.cache.max_cache_len == 128 and engine.cache.config is model.config
    assert engine.generate_kwargs() == {"cache": engine.cache, "disable_compile": True}
    engine.before_call()
    assert engine.cache.resets == 1
    model.forward(input_ids=torch.zeros(1, 100, dtype=torch.long))  # prefill
    for _ in range(3):
        model.forward(input_ids=torch.zeros(1, 1, dtype=torch.long))  # decode steps
    assert (engine.eager_calls, engine.compiled_calls) == (1, 3)
    assert seen.count("compiled call") == 3 and model.calls == [100, 1, 1, 1]
    engine.verify()
    assert engine.info()["compiled"] == "decode step" and engine.info()["max_cache_len"] == 128


def test_no_compiled_call_is_refused_not_reported_as_compiled():
    model = FakeModel()
    engine = CompiledEngine(model, "cpu", decoder=True, compile_fn=fake_compile([]), cache_factory=FakeCache)
    engine.prepare(CaseSpec("m", "fp32", "generate", 1, 8, 4))
    model.forward(input_ids=torch.zeros(1, 8, dtype=torch.long))
    with pytest.raises(EngineError, match="no decode step ran through the compiled forward"):
        engine.verify()


def test_an_encoder_compiles_every_forward_and_keeps_no_cache():
    model = FakeModel()
    engine = CompiledEngine(model, "cuda:0", decoder=False, compile_fn=fake_compile([]), cache_factory=FakeCache)
    assert engine.mode == "reduce-overhead" == compile_mode("cuda:0")
    engine.prepare(CaseSpec("bert-tiny", "fp32", "encode", 2, 16))
    assert engine.cache is None and engine.generate_kwargs() == {}
    model.forward(input_ids=torch.zeros(2, 16, dtype=torch.long))
    assert engine.compiled_calls == 1 and engine.info()["compiled"] == "forward"


def test_one_engine_per_model():
    model = FakeModel()
    eager = engine_for(model, "eager", "cpu", decoder=True)
    assert isinstance(eager, EagerEngine) and engine_for(model, "eager", "cpu", decoder=True) is eager
    with pytest.raises(ValueError, match="already runs engine 'eager'"):
        engine_for(model, "compiled", "cpu", decoder=True)
    with pytest.raises(ValueError, match="engine 'warp' is not one of eager, compiled"):
        engine_for(FakeModel(), "warp", "cpu", decoder=True)
    other = FakeModel()
    compiled = engine_for(other, "compiled", "cpu", decoder=True, compile_fn=fake_compile([]), cache_factory=FakeCache)
    assert engine_for(other, "compiled", "cpu", decoder=True) is compiled


def test_compile_failures_are_engine_failures_with_a_one_line_reason():
    dynamo_error = type("Unsupported", (RuntimeError,), {"__module__": "torch._dynamo.exc"})
    exc = dynamo_error("call_function BuiltinVariable(print)\nfrom user code: ...")
    assert engine_failure(exc) and engine_failure(EngineError("x"))
    assert not engine_failure(RuntimeError("CUDA error")) and not engine_failure(MemoryError())
    reason = skip_reason(exc, "int8", "cuda:0")
    assert reason == (
        "engine compiled cannot run int8 on cuda:0: torch.compile failed (Unsupported: call_function "
        "BuiltinVariable(print))"
    )
    assert "\n" not in reason
