"""Precisions: plain floating-point dtypes, bitsandbytes 8-bit / 4-bit quantization, and GGUF file types.

The GGUF precisions (``f16``, ``q8_0``, ``q4_0``, the k-quants ``q4_k_m`` ...) are llama.cpp's file types, named
as ``llama-quantize`` names them; they run on the ``llama.cpp`` engine only, the others on ``eager`` and
``compiled`` only (:func:`check_engine_precision`). ``gguf`` is a GGUF file's own types, read from its header
(``--model-path file.gguf``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from bench.errors import BadInputError


@dataclass(frozen=True)
class Precision:
    """A way to store and run a model's weights."""

    name: str
    description: str
    dtype: str  # storage dtype of what stays unquantized on a GPU ("float32", "float16", "bfloat16")
    bits: int  # bits per quantized (or plain) linear weight
    quant: str | None = None  # None | "int8" | "nf4" | "fp4"
    double_quant: bool = False
    # llama.cpp's file type (llama_ftype name without LLAMA_FTYPE_MOSTLY_), "" for a file's own types; None: not GGUF
    gguf: str | None = None

    @property
    def quantized(self) -> bool:
        """True for bitsandbytes precisions."""
        return self.quant is not None

    @property
    def is_gguf(self) -> bool:
        """True for the llama.cpp engine's GGUF file types."""
        return self.gguf is not None


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", "32-bit float", "float32", 32),
        Precision("fp16", "16-bit float (IEEE half)", "float16", 16),
        Precision("bf16", "16-bit bfloat", "bfloat16", 16),
        Precision("int8", "bitsandbytes LLM.int8 (outlier threshold 6.0), fp16 elsewhere", "float16", 8, "int8"),
        Precision("nf4", "bitsandbytes 4-bit NormalFloat, blocks of 64, fp16 compute", "float16", 4, "nf4"),
        Precision("nf4-dq", "bitsandbytes NF4 with double quantization", "float16", 4, "nf4", True),
        Precision("fp4", "bitsandbytes 4-bit float, blocks of 64, fp16 compute", "float16", 4, "fp4"),
        Precision("fp4-dq", "bitsandbytes FP4 with double quantization", "float16", 4, "fp4", True),
        # GGUF (llama.cpp engine): bits are the nominal ones of the main type; a file mixes types (norms stay F32,
        # llama-quantize keeps output.weight at Q6_K below 8 bits): the record's weight bytes come from the file
        Precision("f16", "GGUF F16 (llama.cpp), norms F32", "float16", 16, gguf="F16"),
        Precision("q8_0", "GGUF Q8_0 (llama.cpp): blocks of 32 int8 + one fp16 scale", "float16", 8, gguf="Q8_0"),
        Precision("q4_0", "GGUF Q4_0 (llama.cpp): blocks of 32 4-bit + one fp16 scale", "float16", 4, gguf="Q4_0"),
        Precision("q4_k_m", "GGUF Q4_K_M (llama.cpp k-quant mix, llama-quantize)", "float16", 4, gguf="Q4_K_M"),
        Precision("q5_k_m", "GGUF Q5_K_M (llama.cpp k-quant mix, llama-quantize)", "float16", 5, gguf="Q5_K_M"),
        Precision("q6_k", "GGUF Q6_K (llama.cpp k-quant, llama-quantize)", "float16", 6, gguf="Q6_K"),
        Precision(
            "gguf",
            "a GGUF file's own tensor types, read from its header (--model-path file.gguf)",
            "float16",
            0,
            gguf="",
        ),
    )
}

GGUF_ENGINE = "llama.cpp"


def get_precision(name: str) -> Precision:
    """Look up a precision by name; unknown names list the valid ones."""
    try:
        return PRECISIONS[name]
    except KeyError:
        raise BadInputError(f"unknown precision {name!r}; choose one of: {', '.join(PRECISIONS)}") from None


def check_engine_precision(engine: str, precision: str) -> None:
    """Refuse a precision its engine cannot run: GGUF types need ``llama.cpp``, which runs nothing else."""
    prec = get_precision(precision)
    if engine == GGUF_ENGINE and not prec.is_gguf:
        gguf = ", ".join(p.name for p in PRECISIONS.values() if p.is_gguf)
        raise BadInputError(
            f"engine llama.cpp runs GGUF files: precision {precision!r} is not one; choose one of: {gguf}"
        )
    if engine != GGUF_ENGINE and prec.is_gguf:
        raise BadInputError(f"precision {precision!r} is a GGUF file type: run it with --engine llama.cpp")


def bitsandbytes_available() -> bool:
    """True when the bitsandbytes package can be imported (checked without importing it)."""
    return importlib.util.find_spec("bitsandbytes") is not None


def require_bitsandbytes(precision: Precision) -> None:
    """Refuse a quantized precision when bitsandbytes is not installed."""
    if precision.quantized and not bitsandbytes_available():
        raise BadInputError(
            f"precision {precision.name!r} needs bitsandbytes, which is not installed; "
            "run 'pip install bitsandbytes' or choose fp32/fp16/bf16"
        )


def torch_dtype(name: str):  # -> torch.dtype
    """The torch dtype for a dtype name."""
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def runtime_dtype(precision: Precision, device: str) -> str:
    """Dtype of unquantized weights and activations on a device.

    The same on every device (fp16 beside bitsandbytes layers, as on a GPU), so that weight bytes
    measured on a CPU match a GPU's; bitsandbytes' CPU kernels run fp16 activations at full speed.
    """
    del device
    return precision.dtype


def bnb_config(precision: Precision, device: str):  # -> transformers.BitsAndBytesConfig
    """The transformers quantization config for a quantized precision."""
    from transformers import BitsAndBytesConfig

    compute = torch_dtype(runtime_dtype(precision, device))
    if precision.quant == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=6.0)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=precision.quant,
        bnb_4bit_use_double_quant=precision.double_quant,
        bnb_4bit_compute_dtype=compute,
    )


# The path bitsandbytes takes for 4-bit matmuls, as a record's ``quantization["bnb_4bit_kernel_path"]`` names it
# and the predictor models it (read from bitsandbytes 0.50.2; see bench.predict.bnb_kernels):
# - on a CPU with AVX512_BF16 (bitsandbytes' ``has_avx512bf16()``, its switch ``Linear4bit.support_avx512bf16_for_cpu``
#   left on) the first forward in eval mode repacks each weight (absmax to bfloat16, double quantization undone)
#   and every row count runs the fused ``gemv_4bit`` kernel;
# - on any other CPU the weight is dequantized whole before each matmul;
# - on CUDA ``gemm_4bit`` runs a fused kernel for a few rows (a rule per GPU architecture) and dequantizes above.
BNB_4BIT_CPU_PACKED = "cpu-avx512bf16-packed"
BNB_4BIT_CPU_DEQUANTIZE = "cpu-dequantize"
BNB_4BIT_CUDA = "cuda-gemm-4bit"
BNB_4BIT_PATHS = (BNB_4BIT_CPU_PACKED, BNB_4BIT_CPU_DEQUANTIZE, BNB_4BIT_CUDA)
