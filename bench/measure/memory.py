"""Memory meters: host peak RSS of this process, torch CUDA allocator peaks, KV-cache bytes."""

from __future__ import annotations

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


def kv_cache_bytes(cache: Any) -> int | None:
    """Bytes held by a transformers cache (DynamicCache layers, or legacy tuples of tensors)."""
    if cache is None:
        return None
    layers = getattr(cache, "layers", None)
    if layers is None and hasattr(cache, "self_attention_cache"):
        layers = getattr(cache.self_attention_cache, "layers", None)
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
