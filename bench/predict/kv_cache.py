"""KV-cache bytes: 2 (K and V) x layers x kv heads x head dim x dtype bytes, per token and sequence.

A decoder's cache holds the prompt after prefill and grows by one token per decode step; the last
generated token is never fed back, so at the end of generation it holds prompt + new tokens - 1.
DynamicCache grows by concatenation, so a decode step briefly holds one layer's keys twice. Encoders
have no cache.
"""

from __future__ import annotations

from bench.config.models import DECODER
from bench.config.precision import Precision, runtime_dtype
from bench.predict.architecture import DTYPE_BYTES, Architecture


def kv_bytes_per_token(arch: Architecture, precision: Precision, device: str = "cuda") -> int:
    """KV-cache bytes per token per sequence: 2 (K and V) x layers x kv heads x head dim x dtype bytes."""
    if arch.family != DECODER:
        return 0
    return 2 * arch.num_layers * arch.kv_heads * arch.head_dim * DTYPE_BYTES[runtime_dtype(precision, device)]


def final_cache_tokens(context_tokens: int, new_tokens: int) -> int:
    """Tokens per sequence the cache holds after the last decode step: the prompt plus new tokens - 1."""
    return context_tokens + max(new_tokens - 1, 0)


def mean_cache_tokens(context_tokens: int, new_tokens: int) -> float:
    """Tokens per sequence the cache holds on average over the decode steps of a generation."""
    return context_tokens + max(new_tokens - 1, 0) / 2


def concatenation_bytes(arch: Architecture, cache_bytes: int) -> int:
    """The extra bytes a decode step's concatenation holds: one layer's keys of a cache of ``cache_bytes``."""
    return cache_bytes // max(2 * arch.num_layers, 1)
