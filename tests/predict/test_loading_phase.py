"""The loading phase and the caching allocator model: hand-worked allocator sequences, the load order and
library internals the model assumes (checked against the installed transformers 5.25 / bitsandbytes 0.50.2),
and the load peak of Llama-2-7b in 4 bits against a hand count."""

from __future__ import annotations

import inspect

import pytest

from bench.config.precision import get_precision
from bench.predict.architecture import architecture
from bench.predict.cuda_allocator import CachingAllocatorModel
from bench.predict.loading import dot_natural_key, load_tensors, simulate_loading

MiB = 2**20


def test_allocator_segments_best_fit_and_small_pool() -> None:
    pool = CachingAllocatorModel()
    big = pool.malloc(100 * MiB)  # its own segment, 100 MiB
    mid = pool.malloc(3 * MiB)  # under 10 MiB: a 20 MiB segment
    assert pool.reserved_bytes == 120 * MiB
    pool.free(big)
    assert pool.reserved_bytes == 120 * MiB and pool.allocated_bytes == 3 * MiB  # freed, still reserved
    pool.malloc(20 * MiB)  # the 17 MiB left in the 20 MiB segment is too small: split the cached 100 MiB block
    assert pool.reserved_bytes == 120 * MiB
    pool.malloc(1000)  # small pool: a 2 MiB segment; 1000 bytes booked as 1024
    assert pool.reserved_bytes == 122 * MiB
    assert pool.allocated_bytes == 23 * MiB + 1024
    assert pool.peak_allocated_bytes == 103 * MiB
    pool.free(mid)


def test_allocator_rounds_large_segments_and_hands_out_small_remainders_whole() -> None:
    pool = CachingAllocatorModel()
    pool.malloc(11 * MiB)  # segment rounded up to 12 MiB; the 1 MiB left is not split off
    assert pool.reserved_bytes == 12 * MiB and pool.allocated_bytes == 12 * MiB
    pool.malloc(10 * MiB + 1)  # 10 MiB + 512 bytes booked, segment 12 MiB, 2 MiB - 512 split off
    assert pool.reserved_bytes == 24 * MiB and pool.allocated_bytes == 22 * MiB + 512


def test_allocator_merges_neighbours_in_a_segment() -> None:
    pool = CachingAllocatorModel()
    whole = pool.malloc(40 * MiB)
    pool.free(whole)
    a, b = pool.malloc(15 * MiB), pool.malloc(15 * MiB)  # both carved from the cached 40 MiB block
    pool.free(a)
    pool.free(b)
    pool.malloc(40 * MiB)  # the pieces merged back: no new segment
    assert pool.reserved_bytes == 40 * MiB


def test_load_order_is_transformers_own() -> None:
    """The predictor's sort key and transformers' agree on every name of Phi-3-mini (layer 2 before 10)."""
    from transformers.core_model_loading import dot_natural_key as theirs

    names = [t.name for t in load_tensors(architecture("phi-3-mini"), get_precision("nf4"), "module")]
    assert sorted(names, key=dot_natural_key) == sorted(names, key=theirs)
    ordered = [t.name for t in load_tensors(architecture("phi-3-mini"), get_precision("nf4"))]
    assert ordered.index("model.layers.2.mlp.down_proj.weight") < ordered.index("model.layers.10.mlp.down_proj.weight")
    assert ordered[0] == "lm_head.weight"


def test_library_internals_the_loading_model_assumes() -> None:
    """Read from the installed modules: one tensor at a time while quantizing on load, 4-bit quantization
    through Params4bit, absmax allocated before the packed weight, int8 row scales before the int8 weight."""
    from transformers import core_model_loading
    from transformers.integrations import bitsandbytes as tf_bnb

    loader = inspect.getsource(core_model_loading.convert_and_load_state_dict_in_model)
    assert "has_on_the_fly_quantization" in loader and "thread_pool = None" in loader
    assert "dot_natural_key" in loader
    assert "bnb.nn.Params4bit(value" in inspect.getsource(tf_bnb.Bnb4bitQuantize.convert)
    cuda_ops = pytest.importorskip("bitsandbytes.backends.cuda.ops")
    source = inspect.getsource(cuda_ops)
    body = source[source.index('"bitsandbytes::quantize_4bit", "cuda"') :]
    assert body.index("absmax = torch.empty") < body.index("out = torch.empty")
    body = source[source.index('"bitsandbytes::int8_vectorwise_quant", "cuda"') :]
    assert body.index("row_stats = torch.empty") < body.index("out_row = torch.empty")


def _llama2_7b_config():
    """Llama-2-7b's shape (its published config.json)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
        max_position_embeddings=4096,
        architectures=["LlamaForCausalLM"],
    )


def test_llama2_7b_4bit_load_peak_against_a_hand_count() -> None:
    """Sorted order ends with layer 31: mlp.down, gate, up, then the attention's k, o, q, v. The live peak is
    at mlp.up_proj's quantization (the largest tensor loaded last before the smaller attention ones), with
    everything before it stored, its 16-bit copy (4096 x 11008 x 2 bytes), its absmax and packed weight."""
    config = _llama2_7b_config()
    arch = architecture(config)
    load = simulate_loading(arch, get_precision("fp4"))
    assert load.peak_tensor == "model.layers.31.mlp.up_proj.weight"
    mlp, attn = 4096 * 11008, 4096 * 4096

    def stored(n: int) -> int:
        return n // 2 + n // 64 * 4 + 512  # packed, float32 absmax, code (64 bytes booked as 512)

    embeddings = 2 * 32000 * 4096 * 2
    norms = (2 * 32 + 1) * 4096 * 2
    layers = 32 * (3 * stored(mlp) + 4 * stored(attn))
    before_peak = embeddings + norms + layers - 4 * stored(attn) - 4096 * 2 * 2  # not yet: attn, 2 norms
    lower = before_peak + 2 * mlp
    assert lower <= load.peak_allocated_bytes <= lower + 32 * MiB  # rounding and rotary buffers


def test_llama2_7b_fp16_pool_after_loading_by_hand() -> None:
    """16-bit weights are placed one allocation each, with no transient: every large tensor of Llama-2-7b is a
    whole number of 2 MiB (MLP 43, attention 16, embeddings and head 125 x 2 MiB), so each is its own segment of
    exactly its size; the 65 norms (8 KiB each) and two 64-entry float32 rotary buffers (booked as 512 bytes
    each) share one 2 MiB small-pool segment."""
    config = _llama2_7b_config()
    load = simulate_loading(architecture(config), get_precision("fp16"))
    weights = 6_738_415_616 * 2
    norms = 65 * 4096 * 2
    assert load.allocated_after_bytes == weights + 2 * 512
    assert load.reserved_after_bytes == weights - norms + 2 * MiB
    assert load.peak_allocated_bytes == load.allocated_after_bytes  # nothing short-lived while loading


@pytest.mark.parametrize(("release", "pool_mib"), [("layer", 10 + 10 + 3 * 12 + 2), ("step", 10 + 10 + 4 * 12 + 2)])
def test_decode_growth_leaves_shorter_blocks_cached(release: str, pool_mib: int) -> None:
    """One layer whose keys (and values) take 1 MiB per token: a 10-token prompt, then 2 decode steps (11, 12
    tokens: 12 MiB segments). The 10 MiB blocks freed at step 1 cannot hold 11 tokens and stay cached. Freed
    per layer, step 2 needs one new 12 MiB segment (its V reuses the K freed a moment before); freed at the end
    of the step, it needs two. The float16 and float32 logits (8-word vocabulary) take one 2 MiB small segment."""
    from types import SimpleNamespace

    from bench.predict.runtimes import CURRENT, Runtime
    from bench.predict.user_view import GenerationShape, replay_generation

    arch = SimpleNamespace(
        family="decoder", num_layers=1, kv_heads=1, head_dim=512 * 1024, vocab=8, sliding_window=None
    )
    runtime = Runtime("test", "sorted", release, "last", False, 4) if release == "step" else CURRENT
    pool = CachingAllocatorModel()
    replay_generation(pool, arch, get_precision("fp16"), GenerationShape(1, 10, 3, 0), runtime)
    assert pool.reserved_bytes == pool_mib * MiB
    assert pool.allocated_bytes == 2 * 12 * MiB  # the cache at the end: 12 tokens of K and of V
