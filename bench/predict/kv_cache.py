"""KV-cache bytes: 2 (K and V) x layers x kv heads x head dim x dtype bytes, per token and sequence.

A decoder's cache holds the prompt after prefill and grows by one token per decode step; the last
generated token is never fed back, so at the end of generation it has seen prompt + new tokens - 1.
DynamicCache grows by concatenation, so a decode step briefly holds one layer's keys twice. Encoders
have no cache.

A sliding window of W tokens (transformers 5.x ``DynamicSlidingWindowLayer``, e.g. Phi-3-mini-4k's
W = 2047) keeps the last W - 1 tokens per layer: ``keys = cat(old, new)[..., -(W - 1):, :]``. That slice
is a view, so the storage behind each layer is the whole concatenation: after the prefill every layer
still holds the full prompt's K/V (the prefill computes them all), and after a decode step W tokens
(W - 1 visible). A step builds the new keys and values before it drops the old ones, so one layer
holds both for a moment. The cache policy "full" removes the window (every token kept).
"""

from __future__ import annotations

from bench.config.models import CACHE_POLICIES, DECODER
from bench.config.precision import Precision, runtime_dtype
from bench.errors import BadInputError
from bench.predict.architecture import DTYPE_BYTES, Architecture


def kv_bytes_per_token(arch: Architecture, precision: Precision, device: str = "cuda") -> int:
    """KV-cache bytes per token per sequence: 2 (K and V) x layers x kv heads x head dim x dtype bytes."""
    if arch.family != DECODER:
        return 0
    return 2 * arch.num_layers * arch.kv_heads * arch.head_dim * DTYPE_BYTES[runtime_dtype(precision, device)]


def cache_window(arch: Architecture, cache: str = "config") -> int | None:
    """The sliding window (tokens) a decoder's cache applies under a policy; None keeps every token.

    ``config``: the checkpoint config's window (None where it has none); ``window``: the same, refused for a
    config without one; ``full``: no window, as in runtimes that ignore it.
    """
    if cache not in CACHE_POLICIES:
        raise BadInputError(f"cache policy {cache!r} is not one of {', '.join(CACHE_POLICIES)}")
    if arch.family != DECODER:
        if cache != "config":
            raise BadInputError(
                f"model {arch.name} is an encoder and keeps no KV cache, so cache policy {cache!r} does not apply; "
                "drop --cache for encoders"
            )
        return None
    if cache == "full":
        return None
    if cache == "window" and arch.sliding_window is None:
        raise BadInputError(
            f"model {arch.name} has no sliding window in its config, so cache policy 'window' cannot apply; "
            "use --cache full or leave --cache out"
        )
    return arch.sliding_window


def final_cache_tokens(context_tokens: int, new_tokens: int, window: int | None = None) -> int:
    """Tokens per layer and sequence the cache holds after the last step: prompt + new tokens - 1, or W - 1."""
    seen = context_tokens + max(new_tokens - 1, 0)
    return seen if window is None else min(seen, window - 1)


def storage_tokens(context_tokens: int, step: int, window: int | None = None) -> int:
    """Tokens per layer of the storage behind the cache after forward ``step`` (0: the prefill).

    Without a window the storage is what the cache holds. With one it is the last concatenation: the whole
    prompt after the prefill, then ``min(seen, W)`` (W - 1 visible tokens and the one just dropped).
    """
    if window is None or step == 0:
        return context_tokens + step
    return min(context_tokens + step, window)


def final_storage_tokens(context_tokens: int, new_tokens: int, window: int | None = None) -> int:
    """Tokens per layer of the cache's storage at the end of generation (after ``new_tokens - 1`` decode steps)."""
    return storage_tokens(context_tokens, max(new_tokens - 1, 0), window)


def windowed_step_tokens(num_layers: int, context_tokens: int, new_tokens: int, window: int) -> tuple[int, int]:
    """The worst decode step under a sliding window, in layer-tokens: ``(cache, extra)``; (0, 0) without one.

    During step t, layer j holds its old storage S(t-1) and its new one S(t) at once; the layers before it
    are at S(t), those after it at S(t-1). The worst layer gives every layer's cache at ``max(S(t-1), S(t))``
    plus one layer's other copy, ``min(...)``. S only shrinks at the first step (a prompt longer than the
    window) and grows after it, so the worst step is the first or the last.
    """
    best = (0, 0)
    for step in sorted({1, new_tokens - 1}):
        if not 1 <= step <= new_tokens - 1:
            continue
        before, after = storage_tokens(context_tokens, step - 1, window), storage_tokens(context_tokens, step, window)
        candidate = (num_layers * max(before, after), min(before, after))
        if sum(candidate) > sum(best):
            best = candidate
    return best


def mean_cache_tokens(context_tokens: int, new_tokens: int, window: int | None = None) -> float:
    """Tokens per sequence the cache holds on average over the decode steps of a generation (capped at W - 1)."""
    mean = context_tokens + max(new_tokens - 1, 0) / 2
    return mean if window is None else min(mean, window - 1)


def concatenation_bytes(arch: Architecture, cache_bytes: int) -> int:
    """The extra bytes a decode step's concatenation holds: one layer's keys of a cache of ``cache_bytes``."""
    return cache_bytes // max(2 * arch.num_layers, 1)
