"""Bytes the loaded model occupies, counted tensor by tensor from its :class:`Architecture`.

The bytes of each quantized layer follow bitsandbytes' storage: int8 keeps a float32 scale per output
row (SCB); 4-bit keeps packed nibbles, one absmax per block of 64 (float32, or uint8 plus a float32
absmax per 256 blocks, a 256-entry code and an offset with double quantization) and a 16-entry code.
On bitsandbytes' CPU AVX512-BF16 path (:mod:`.bnb_kernels`) the first forward repacks each 4-bit layer: the
nibbles keep their bytes, absmax becomes one bfloat16 per block and double quantization is undone (the offset
stays), so the figures here are those after the first forward, as a run measures them.
What stays unquantized (embeddings, lm_head, norms, biases) takes the runtime dtype; buffers keep
their own dtype unless they are float16, which follows the runtime dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.config.precision import Precision, runtime_dtype
from bench.predict.architecture import DTYPE_BYTES, Architecture
from bench.predict.bnb_kernels import packed_absmax_bytes

BLOCKSIZE_4BIT = 64  # bitsandbytes' default block size for 4-bit weights
NESTED_BLOCKSIZE = 256  # double quantization: one float32 absmax per 256 blocks
CODE_4BIT_BYTES = 16 * 4  # the NF4/FP4 code table kept with every layer (float32)
NESTED_CODE_BYTES = 256 * 4  # the 8-bit dynamic code of the nested absmax (float32)
OFFSET_BYTES = 4  # the nested absmax offset (float32 scalar)


@dataclass(frozen=True)
class WeightBytes:
    """Bytes the loaded model occupies, split by what they are."""

    quantized_bytes: int  # packed int8 / 4-bit storage of the quantized linear weights
    quant_state_bytes: int  # SCB (int8) or absmax, nested absmax, codes and offsets (4-bit)
    unquantized_bytes: int  # parameters that stay in the runtime dtype (embeddings, norms, lm_head, biases)
    buffer_bytes: int  # non-parameter tensors (rotary frequencies, position ids)

    @property
    def total_bytes(self) -> int:
        """Everything the weights occupy."""
        return self.quantized_bytes + self.quant_state_bytes + self.unquantized_bytes + self.buffer_bytes


def loaded_dtype(tensor_dtype: str, runtime: str) -> str:
    """The dtype a non-linear tensor has once loaded: float16 tensors follow the runtime dtype."""
    return runtime if tensor_dtype == "float16" else tensor_dtype


def quantized_linear_bytes(
    out_features: int, in_features: int, precision: Precision, packed: bool = False
) -> tuple[int, int]:
    """``(storage bytes, quantization-state bytes)`` of one bitsandbytes linear weight (bias excluded); ``packed``:
    after the CPU AVX512-BF16 repacking."""
    n = out_features * in_features
    if precision.quant == "int8":
        return n, out_features * 4  # int8 weight + float32 SCB per output row
    blocks = math.ceil(n / BLOCKSIZE_4BIT)
    storage = (n + 1) // 2
    if packed:
        state = packed_absmax_bytes(blocks) + (OFFSET_BYTES if precision.double_quant else 0)
    elif precision.double_quant:
        state = blocks + math.ceil(blocks / NESTED_BLOCKSIZE) * 4 + NESTED_CODE_BYTES + OFFSET_BYTES
    else:
        state = blocks * 4
    return storage, state + CODE_4BIT_BYTES


def weight_bytes(arch: Architecture, precision: Precision, device: str = "cuda", packed: bool = False) -> WeightBytes:
    """Bytes of the loaded model at a precision on a device kind (its runtime dtype for what stays unquantized);
    ``packed``: 4-bit layers repacked by bitsandbytes' CPU AVX512-BF16 path (after the first forward)."""
    runtime = runtime_dtype(precision, device)
    size = DTYPE_BYTES[runtime]
    quantized = state = plain = buffers = 0
    for lin in arch.linears:
        if precision.quantized and lin.quantized:
            storage, qstate = quantized_linear_bytes(lin.out_features, lin.in_features, precision, packed)
            quantized += storage
            state += qstate
        elif not lin.tied:
            plain += lin.numel * size
        if lin.bias:
            plain += lin.out_features * size
    for t in arch.others:
        nbytes = t.numel * DTYPE_BYTES[loaded_dtype(t.dtype, runtime)]
        if t.buffer:
            buffers += nbytes
        else:
            plain += nbytes
    return WeightBytes(quantized, state, plain, buffers)
