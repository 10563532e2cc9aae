"""The llama.cpp binding (llama-cpp-python): whether it is installed and can use a GPU, and llama.cpp's log.

llama-cpp-python is the binding chosen: the one most users know (the book's chapter 7, LangChain and LlamaIndex
use it), maintained, and it exposes what the engine needs: ``llama_model_quantize`` (k-quants), per-token decode
and ``llama_perf_context`` (llama.cpp's own timings). It has no wheels on PyPI: pip builds it from source
(about 6 minutes on 2 cores with gcc and cmake); a CUDA build needs ``CMAKE_ARGS="-DGGML_CUDA=on"`` at build time.

llama.cpp reports its buffer sizes (model, KV cache, compute) only in its log, so :func:`captured_log` routes the
log through ``llama_log_set`` into a list while a model loads, then gives the binding its own callback back.
Read from llama-cpp-python 0.3.36 (``llama_cpp/_logger.py`` registers ``llama_log_callback`` at import).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.errors import BadInputError

INSTALL = "pip install 'llm-bench[llamacpp]'  (builds llama-cpp-python from source: gcc and cmake, ~6 min)"
CUDA_INSTALL = (
    'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python'
    "  (a CUDA build of llama.cpp)"
)


def binding_available() -> bool:
    """True when llama-cpp-python and gguf can be imported (checked without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", "gguf"))


class BindingMissing(BadInputError):
    """llama-cpp-python or gguf is missing, or built without the GPU support a case needs: ``bench run --engine
    llama.cpp`` exits 2, a suite's case is recorded skipped; the message names the install command."""


def require_binding() -> None:
    """Refuse the llama.cpp engine, naming the install command, when its binding is missing."""
    missing = [m for m in ("llama_cpp", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        raise BindingMissing(f"engine llama.cpp needs {' and '.join(missing)}, which is not installed: run {INSTALL}")


def gpu_offload_supported() -> bool:
    """True when the installed llama.cpp was built with a GPU backend (``llama_supports_gpu_offload``)."""
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def require_gpu_offload(device: str, supported: bool | None = None) -> None:
    """Refuse ``--device cuda`` with a llama.cpp built without GPU support: it would silently run on the CPU."""
    if not device.startswith("cuda"):
        return
    if supported is None:
        supported = gpu_offload_supported()
    if not supported:
        raise BindingMissing(
            f"--device {device}: the installed llama-cpp-python was built without GPU support, so llama.cpp would "
            f"run on the CPU; reinstall it with {CUDA_INSTALL}, or pass --device cpu"
        )


@dataclass
class LlamaLog:
    """llama.cpp's log lines captured while a model loaded."""

    text: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The log as lines (llama.cpp writes a line in pieces)."""
        return "".join(self.text).splitlines()


_BUFFER = re.compile(r"^\s*(?:\w+:)?\s*(\S+)\s+(model|KV|compute|output|RS)\s+buffer size\s*=\s*([\d.]+)\s*MiB")


def buffer_sizes(lines: list[str]) -> dict[str, int]:
    """llama.cpp's buffer sizes from its log, in bytes, keyed ``"<buffer type> <kind>"`` (``"CPU KV"``,
    ``"CUDA0 model"``, ``"CPU_Mapped model"``); sizes of one key add up (a model split over buffers).

    llama.cpp prints them in MiB with two decimals (``llama_kv_cache: CPU KV buffer size = 1.00 MiB``, b6000-b7000),
    so each is exact to 0.005 MiB (5243 bytes).
    """
    out: dict[str, int] = {}
    for line in lines:
        m = _BUFFER.match(line)
        if m:
            key = f"{m.group(1)} {m.group(2)}"
            out[key] = out.get(key, 0) + round(float(m.group(3)) * 2**20)
    return out


def buffers_of_kind(buffers: dict[str, int], kind: str) -> int | None:
    """The bytes of every buffer of ``kind`` (model, KV, compute, output) on any device; None when none is listed."""
    found = [v for k, v in buffers.items() if k.split(" ", 1)[1] == kind]
    return sum(found) if found else None


_BACKEND: list[bool] = []


def _init_backend(llama_cpp: Any) -> None:
    """Initialise llama.cpp's backends once, before a log callback is set: the first initialisation resets the
    logger to its default (stderr), so a callback set before it would miss the load (seen with 0.3.36)."""
    if not _BACKEND:
        llama_cpp.llama_backend_init()
        _BACKEND.append(True)


@contextlib.contextmanager
def captured_log() -> Iterator[LlamaLog]:
    """Route llama.cpp's log into a :class:`LlamaLog` (nothing printed) for the block, then restore the binding's."""
    import llama_cpp
    from llama_cpp import _logger

    log = LlamaLog()
    _init_backend(llama_cpp)

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        log.text.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    try:
        yield log
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        del callback
