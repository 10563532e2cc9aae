"""What a decoder's KV cache really held: bytes, tokens, layer classes and window, as the record states them."""

import pytest
import torch

from bench.config.models import MODELS, ModelEntry, get_model
from bench.config.spec import CaseSpec, TimingPolicy
from bench.measure.case_runner import CaseRunner
from bench.measure.memory import cache_layout, kv_cache_bytes, kv_cache_storage_bytes

FAST = TimingPolicy(warmup_runs=0, min_repetitions=1, max_repetitions=1, timeout_s=120)
HEADS, HEAD_DIM, LAYERS = 4, 64, 2  # phi-3-tiny: hidden 256 over 4 heads


class DynamicSlidingWindowLayer:
    """A stand-in with transformers 5.x's layout: keys are the last W - 1 tokens, a view of W tokens after a step."""

    is_sliding = True

    def __init__(self, window: int, dtype=torch.float32):
        full_k = torch.zeros(1, HEADS, window, HEAD_DIM, dtype=dtype)
        full_v = torch.zeros(1, HEADS, window, HEAD_DIM, dtype=dtype)
        self.sliding_window = window
        self.keys, self.values = full_k[:, :, -window + 1 :, :], full_v[:, :, -window + 1 :, :]


class DynamicLayer:
    is_sliding = False

    def __init__(self, tokens: int, dtype=torch.float32):
        self.keys = torch.zeros(1, HEADS, tokens, HEAD_DIM, dtype=dtype)
        self.values = torch.zeros(1, HEADS, tokens, HEAD_DIM, dtype=dtype)


class FakeCache:
    def __init__(self, layers):
        self.layers = layers


def test_sliding_layers_count_the_tokens_kept_and_their_storage_apart():
    cache = FakeCache([DynamicSlidingWindowLayer(16), DynamicSlidingWindowLayer(16)])
    assert kv_cache_bytes(cache) == 2 * 2 * HEADS * HEAD_DIM * 15 * 4  # 61,440: W - 1 = 15 tokens per layer
    assert kv_cache_storage_bytes(cache) == 2 * 2 * HEADS * HEAD_DIM * 16 * 4  # the views' storage: W tokens
    layout = cache_layout(cache)
    assert layout.layer_classes == ("DynamicSlidingWindowLayer",)
    assert (layout.window_tokens, layout.policy, layout.tokens) == (16, "window", 15)
    assert layout.kv_bytes == 61_440 and layout.storage_bytes == 65_536


def test_full_layers_and_mixed_layers():
    full = cache_layout(FakeCache([DynamicLayer(43, torch.float16), DynamicLayer(43, torch.float16)]))
    assert (full.layer_classes, full.window_tokens, full.policy, full.tokens) == (("DynamicLayer",), None, "full", 43)
    assert full.kv_bytes == full.storage_bytes == LAYERS * 2 * HEADS * HEAD_DIM * 43 * 2  # 88,064
    shared = DynamicLayer(43, torch.float16)  # layers that share one key/value pair: storage counted once
    assert kv_cache_storage_bytes(FakeCache([shared, shared])) == full.storage_bytes // 2
    mixed = cache_layout(FakeCache([DynamicSlidingWindowLayer(8), DynamicLayer(20)]))
    assert mixed.layer_classes == ("DynamicSlidingWindowLayer", "DynamicLayer")
    assert (mixed.window_tokens, mixed.policy, mixed.tokens) == (8, "window", 20)


def test_legacy_tuples_and_no_cache():
    k = torch.zeros(1, HEADS, 10, HEAD_DIM)
    layout = cache_layout(((k, k.clone()), (k.clone(), k.clone())))
    assert (layout.layer_classes, layout.policy, layout.tokens) == (("tuple",), "full", 10)
    assert layout.kv_bytes == 4 * HEADS * 10 * HEAD_DIM * 4
    assert cache_layout(None) is None and kv_cache_storage_bytes(None) is None and cache_layout(object()) is None


@pytest.fixture
def windowed_tiny(monkeypatch):
    """phi-3-tiny with a 16-token window (the registry's override mechanism), so a 40-token prompt slides."""
    base = get_model("phi-3-tiny")
    entry = ModelEntry(
        "phi-3-tiny-w16",
        base.family,
        base.architecture,
        base.reproduces,
        "test",
        base.overrides + (("sliding_window", 16),),
    )
    monkeypatch.setitem(MODELS, entry.name, entry)
    return entry.name


def _run(model: str, cache: str):
    runner = CaseRunner()
    try:
        record = runner.run(CaseSpec(model, "fp32", "generate", 1, 40, 4, cache=cache), FAST)
    finally:
        runner.release("cpu")
    assert record.status == "ok", record.error
    return record


@pytest.mark.slow
def test_measured_cache_keeps_window_minus_one_tokens_above_the_window(windowed_tiny):
    record = _run(windowed_tiny, "config")
    m = record.memory
    assert m.kv_cache_bytes == LAYERS * 2 * HEADS * HEAD_DIM * (16 - 1) * 4  # 61,440
    assert m.kv_cache_tokens == 15 and m.cache_window_tokens == 16 and m.cache_policy == "window"
    assert m.cache_layer_classes == ("DynamicSlidingWindowLayer",)
    assert m.kv_cache_storage_bytes == LAYERS * 2 * HEADS * HEAD_DIM * 16 * 4
    assert "full_cache" not in record.flags


@pytest.mark.slow
def test_full_cache_holds_every_token_and_is_labelled(windowed_tiny):
    record = _run(windowed_tiny, "full")
    m = record.memory
    assert m.kv_cache_tokens == 40 + 4 - 1  # the last new token is never fed back
    assert m.kv_cache_bytes == LAYERS * 2 * HEADS * HEAD_DIM * 43 * 4  # 176,128
    assert m.cache_layer_classes == ("DynamicLayer",) and m.cache_window_tokens is None and m.cache_policy == "full"
    assert "full_cache" in record.flags and record.spec.cache == "full"


@pytest.mark.slow
def test_encoders_record_no_cache():
    runner = CaseRunner()
    try:
        record = runner.run(CaseSpec("bert-tiny", "fp32", "encode", 1, 8), FAST)
    finally:
        runner.release("cpu")
    m = record.memory
    assert record.status == "ok" and m.cache_policy is None and m.kv_cache_bytes is None
    assert m.cache_layer_classes == () and m.kv_cache_tokens is None


@pytest.mark.slow
def test_loader_builds_the_bare_encoder_from_the_masked_lm_config():
    from bench.config.models import resolve_source
    from bench.measure.loader import build_random

    source = resolve_source("bert-tiny", "random")
    assert source.config().architectures == ["BertForMaskedLM"]  # as published
    assert type(build_random(source, "float32", "cpu")).__name__ == "BertModel"
