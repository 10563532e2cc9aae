"""Predicted against measured KV cache under the sliding window, on the CPU: what the cache holds at the end of a
generate (tokens and bytes) and the storage behind it, on a tiny window and on phi-3-mini-2l above 2047 tokens."""

from __future__ import annotations

import pytest

from bench.config.precision import get_precision
from bench.predict.architecture import architecture
from bench.predict.kv_cache import final_storage_tokens, kv_bytes_per_token
from bench.predict.memory import predict_memory

pytestmark = pytest.mark.slow


def _tiny_phi3(window: int):
    from transformers import Phi3Config

    return Phi3Config(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        vocab_size=128, max_position_embeddings=256, sliding_window=window, pad_token_id=0, bos_token_id=1,
        eos_token_id=2,
    )


def _generate(model, context: int, new_tokens: int):
    import torch

    from bench.measure.memory import cache_layout

    torch.manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (1, context))
    with torch.no_grad():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
            do_sample=False, return_dict_in_generate=True, pad_token_id=0,
        )
    return cache_layout(out.past_key_values)


@pytest.mark.parametrize(("context", "new_tokens"), [(44, 1), (44, 5), (10, 3), (14, 5), (40, 30)])
def test_tiny_window_cache_and_its_storage_match_the_prediction(context: int, new_tokens: int) -> None:
    import torch
    from transformers import Phi3ForCausalLM

    config = _tiny_phi3(16)
    torch.manual_seed(0)
    model = Phi3ForCausalLM(config).eval()
    layout = _generate(model, context, new_tokens)
    predicted = predict_memory(config, "fp32", context, 1, new_tokens, None)
    per_token = kv_bytes_per_token(architecture(config), get_precision("fp32"), "cpu")
    assert layout.layer_classes == ("DynamicSlidingWindowLayer",) and layout.window_tokens == 16
    assert layout.tokens == predicted.kv_cache_tokens
    assert layout.kv_bytes == predicted.kv_cache_final_bytes
    # the storage behind the views: the whole prompt after a prefill-only generate, else min(seen, W)
    assert layout.storage_bytes == per_token * final_storage_tokens(context, new_tokens, 16)


def test_phi3_mini_2l_above_the_window_predicted_equals_measured_kv_bytes() -> None:
    """phi-3-mini-2l (full width, the checkpoint's 2047-token window), fp32, 2100 + 2 tokens, one generate."""
    from bench.config.models import resolve_source
    from bench.measure.loader import load_model

    loaded = load_model(resolve_source("phi-3-mini-2l", "random"), get_precision("fp32"), "cpu")
    layout = _generate(loaded.model, 2100, 2)
    predicted = predict_memory("phi-3-mini-2l", "fp32", 2100, 1, 2, None)
    assert predicted.kv_cache_tokens == 2046 and layout.tokens == 2046
    assert layout.kv_bytes == predicted.kv_cache_final_bytes == 2 * 2 * 3072 * 4 * 2046
    assert layout.storage_bytes == 2 * 2 * 3072 * 4 * 2047  # W tokens behind the W - 1 visible ones
