"""Import bitsandbytes quietly: its hub-kernel lookup logged into a list, not onto the terminal.

On a CPU with AVX512_BF16, importing bitsandbytes 0.50.2 asks the ``kernels`` package for a CPU kernel from the
Hugging Face Hub (``backends/cpu/ops.py``: ``get_kernel("kernels-community/quantization-bitsandbytes", version=1)``,
inside ``if has_avx512bf16()``) and logs "Failed to load CPU gemm_4bit_forward from kernels-community ..." when it
cannot, falling back to its own ``gemv_4bit_inference_cpu_*`` kernel. bitsandbytes has no switch for that lookup;
``HF_HUB_OFFLINE=1``, huggingface_hub's documented switch that ``kernels`` honours, keeps it to the local cache (the
runner sets it for workers unless downloads are allowed), and :func:`import_bitsandbytes` keeps the two libraries'
log lines about it out of the terminal (standard ``logging`` handlers, nothing patched) and hands them back.

It sits in ``config`` (like :mod:`bench.config.machine`) because every layer that may import bitsandbytes, directly
or through transformers' bitsandbytes integration, must go through it first: the workers and the predictor alike.
"""

from __future__ import annotations

import functools
import logging

# The loggers that report the hub kernel lookup (bitsandbytes 0.50.2 backends/cpu/ops.py; kernels 0.19 resolver)
HUB_KERNEL_LOGGERS = ("bitsandbytes.backends.cpu.ops", "kernels")
HUB_KERNEL_ATTRIBUTE = "gemm_4bit_forward_kernel"  # bitsandbytes.backends.cpu.ops: the hub kernel, or None


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@functools.cache
def import_bitsandbytes() -> tuple[str, ...]:
    """Import bitsandbytes once in this process with its hub-kernel messages collected instead of printed;
    returns those messages (empty where nothing was logged)."""
    handler = _Collect()
    saved = []
    for name in HUB_KERNEL_LOGGERS:
        log = logging.getLogger(name)
        saved.append((log, log.propagate))
        log.addHandler(handler)
        log.propagate = False
    try:
        import bitsandbytes  # noqa: F401
    finally:
        for log, propagate in saved:
            log.removeHandler(handler)
            log.propagate = propagate
    return tuple(handler.messages)
