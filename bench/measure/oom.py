"""What a failed case's exception means: out of memory on the case's device, or a CUDA error that may poison
the worker's CUDA context (so the runner replaces the worker before the next case).

Out of memory on a GPU comes in more words than ``torch.cuda.OutOfMemoryError``; only failures that the
CUDA libraries document as an allocation failure count:

- the caching allocator: ``torch.cuda.OutOfMemoryError`` ("CUDA out of memory. Tried to allocate ...");
- the CUDA runtime and driver: ``cudaErrorMemoryAllocation`` (torch: "CUDA error: out of memory") and
  ``CUDA_ERROR_OUT_OF_MEMORY``;
- cuBLAS and cuBLASLt (handles, workspaces): ``CUBLAS_STATUS_ALLOC_FAILED`` ("resource allocation failed
  inside the cuBLAS library; usually a cudaMalloc() failure");
- cuDNN: ``CUDNN_STATUS_ALLOC_FAILED`` and, from cuDNN 9, ``CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED``;
- torch's own words: "OOM trying to allocate workspace for cublaslt", and the driver API's
  ``CUDA_ERROR_OUT_OF_MEMORY`` as torch ("CUDA driver error: out of memory") and triton ("Triton Error [CUDA]:
  out of memory") word it (torch 2.14.1, triton 3.8.0).

``CUBLAS_STATUS_NOT_INITIALIZED`` is often caused by memory running out while a handle is created, but it
is not documented as an allocation failure, so it stays an error. On a GPU run, host memory running out
is an error too (the case did not run out of the card's memory).

Any other CUDA error (an illegal address, a launch failure, a device-side assert) can leave the context
unusable for every later call in the process, so the worker that saw it must not run another case.
"""

from __future__ import annotations

import re

# Words that the CUDA libraries use for a device allocation failure (see the module docstring).
CUDA_OOM_PATTERNS = (
    "CUDA out of memory",
    "CUDA error: out of memory",
    "CUDA_ERROR_OUT_OF_MEMORY",
    "cudaErrorMemoryAllocation",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED",
    "OOM trying to allocate workspace for cublaslt",
    "CUDA driver error: out of memory",
    "Triton Error [CUDA]: out of memory",
)
# bitsandbytes 0.50.2 words a failed cuBLASLt call "cublasLt ran into an error!" (backends/cuda/ops.py)
_CUDA_ERROR = re.compile(r"\bCUDA\b|CUBLAS_STATUS_|CUDNN_STATUS_|cuDNN error|cuBLAS error|cublasLt ran into an error")


def _torch():  # the module, or None where torch is not installed
    try:
        import torch

        return torch
    except ImportError:
        return None


def is_cuda_oom(exc: BaseException) -> bool:
    """True for a device out-of-memory failure in any of the words the CUDA libraries use."""
    torch = _torch()
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return any(pattern in text for pattern in CUDA_OOM_PATTERNS)


def is_host_oom(exc: BaseException) -> bool:
    """True for host memory running out: MemoryError, torch's OutOfMemoryError, or the allocator's message."""
    if isinstance(exc, MemoryError):
        return True
    torch = _torch()
    if torch is not None and isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    text = str(exc)
    return "out of memory" in text.lower() or "can't allocate memory" in text


def is_oom(exc: BaseException, device: str = "cpu") -> bool:
    """True for an out-of-memory failure of the case's device (on a GPU run, host OOM is an error)."""
    if device.startswith("cuda"):
        return is_cuda_oom(exc)
    return is_host_oom(exc)


def poisons_cuda_context(exc: BaseException) -> bool:
    """True for a CUDA error other than out of memory: the process's CUDA context may be unusable after it.

    ``torch.AcceleratorError`` (what torch raises for CUDA runtime errors from 2.8 on) or a RuntimeError
    that names CUDA, cuBLAS or cuDNN. Out-of-memory failures are recoverable and do not count.
    """
    if is_cuda_oom(exc):
        return False
    torch = _torch()
    accelerator_error = getattr(torch, "AcceleratorError", None) if torch is not None else None
    if accelerator_error is not None and isinstance(exc, accelerator_error):
        return True
    return isinstance(exc, RuntimeError) and bool(_CUDA_ERROR.search(str(exc)))
