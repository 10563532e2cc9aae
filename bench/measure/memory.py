"""Memory meters: host peak RSS of this process, torch CUDA allocator peaks, KV-cache bytes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_host_peak() -> bool:
    """Reset this process's peak RSS (Linux: write 5 to /proc/self/clear_refs). False where unsupported."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def host_peak_rss_bytes() -> int | None:
    """Peak resident set size of this process since start or the last reset (VmHWM), in bytes."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource
        import sys

        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    except (ImportError, OSError):
        return None


def host_rss_bytes() -> int | None:
    """Current resident set size of this process, in bytes."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class CudaPeaks:
    """Torch CUDA allocator peaks over a region: reset on enter, read on exit. A no-op on a CPU."""

    def __init__(self, device: str, torch_module: Any = None):
        self.device = device
        self.enabled = device.startswith("cuda")
        self._torch = torch_module
        self.peak_allocated_bytes: int | None = None
        self.peak_reserved_bytes: int | None = None

    def _cuda(self) -> Any:
        if self._torch is None:
            import torch

            self._torch = torch
        return self._torch.cuda

    def __enter__(self) -> CudaPeaks:
        if self.enabled:
            cuda = self._cuda()
            cuda.synchronize(self.device)
            cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            cuda = self._cuda()
            cuda.synchronize(self.device)
            self.peak_allocated_bytes = int(cuda.max_memory_allocated(self.device))
            self.peak_reserved_bytes = int(cuda.max_memory_reserved(self.device))


def cache_layers(cache: Any) -> list[Any] | None:
    """The per-layer objects of a transformers cache (``cache.layers``, or an encoder-decoder cache's
    self-attention layers); None for legacy tuples and objects without layers."""
    if cache is None:
        return None
    layers = getattr(cache, "layers", None)
    if layers is None and hasattr(cache, "self_attention_cache"):
        layers = getattr(cache.self_attention_cache, "layers", None)
    return list(layers) if layers is not None else None


def kv_cache_bytes(cache: Any) -> int | None:
    """Bytes of the key and value tensors a transformers cache holds (DynamicCache layers, or legacy tuples).

    A sliding-window layer (transformers 5.x ``DynamicSlidingWindowLayer``) keeps W - 1 tokens: its ``keys``
    and ``values`` are those tokens, and they are what is counted here (see :func:`kv_cache_storage_bytes`).
    """
    if cache is None:
        return None
    layers = cache_layers(cache)
    total = 0
    if layers is not None:
        for layer in layers:
            for name in ("keys", "values"):
                t = getattr(layer, name, None)
                if t is not None and hasattr(t, "element_size"):
                    total += t.numel() * t.element_size()
        return total
    if isinstance(cache, (tuple, list)):
        for item in cache:
            sub = kv_cache_bytes(item) if isinstance(item, (tuple, list)) else None
            if sub is not None:
                total += sub
            elif hasattr(item, "element_size"):
                total += item.numel() * item.element_size()
        return total
    return None


def _kv_tensors(cache: Any) -> list[Any]:
    """Every key and value tensor of a cache (layers or legacy tuples), in layer order."""
    layers = cache_layers(cache)
    if layers is not None:
        found = [getattr(layer, name, None) for layer in layers for name in ("keys", "values")]
        return [t for t in found if t is not None and hasattr(t, "element_size")]
    if isinstance(cache, (tuple, list)):
        out: list[Any] = []
        for item in cache:
            out.extend(_kv_tensors(item) if isinstance(item, (tuple, list)) else [item])
        return [t for t in out if hasattr(t, "element_size")]
    return []


def kv_cache_storage_bytes(cache: Any) -> int | None:
    """Bytes of the storage behind a cache's key and value tensors, each storage counted once.

    Larger than :func:`kv_cache_bytes` where the tensors are views: a transformers 5.x sliding-window layer
    keeps ``keys = cat(old, new)[..., -(W - 1):, :]``, so its storage holds W tokens after a decode step
    (after the prefill, the whole prompt, until the first decode step replaces it).
    """
    if cache is None or (cache_layers(cache) is None and not isinstance(cache, (tuple, list))):
        return None
    seen: dict[Any, int] = {}
    for t in _kv_tensors(cache):
        storage = t.untyped_storage()
        seen[(t.device, storage.data_ptr())] = int(storage.nbytes())
    return sum(seen.values())


@dataclass(frozen=True)
class CacheLayout:
    """What a decoder's KV cache held at the end of generation: layer classes, window, tokens and bytes."""

    layer_classes: tuple[str, ...]  # distinct class names, in layer order ("DynamicSlidingWindowLayer")
    window_tokens: int | None  # the sliding window of the windowed layers (the smallest, if they differ)
    policy: str  # "window" when any layer slides, else "full"
    tokens: int | None  # tokens held per layer (the largest layer), or None when no layer holds a tensor
    kv_bytes: int | None  # kv_cache_bytes
    storage_bytes: int | None  # kv_cache_storage_bytes


def _layer_window(layer: Any) -> int | None:
    if not getattr(layer, "is_sliding", False) and "Sliding" not in type(layer).__name__:
        return None
    window = getattr(layer, "sliding_window", None) or getattr(layer, "max_cache_len", None)
    return int(window) if window else None


def cache_layout(cache: Any) -> CacheLayout | None:
    """The :class:`CacheLayout` of a transformers cache; None for no cache (encoders) or an unknown object."""
    if cache is None:
        return None
    layers = cache_layers(cache)
    if layers is None:
        if not isinstance(cache, (tuple, list)):
            return None
        tensors = _kv_tensors(cache)
        tokens = max((int(t.shape[-2]) for t in tensors if t.dim() >= 2), default=None)
        return CacheLayout(("tuple",), None, "full", tokens, kv_cache_bytes(cache), kv_cache_storage_bytes(cache))
    classes = tuple(dict.fromkeys(type(layer).__name__ for layer in layers))
    windows = [w for w in (_layer_window(layer) for layer in layers) if w is not None]
    held = [getattr(layer, "keys", None) for layer in layers]
    tokens = max(
        (int(k.shape[-2]) for k in held if k is not None and hasattr(k, "shape") and k.dim() >= 2), default=None
    )
    return CacheLayout(
        classes,
        min(windows) if windows else None,
        "window" if windows else "full",
        tokens,
        kv_cache_bytes(cache),
        kv_cache_storage_bytes(cache),
    )
