"""Predicted memory of the llama.cpp engine: GGUF weights by tensor type, KV cache for the padded context,
compute and output buffers. A prediction, never a measurement.

Weights: every tensor of the architecture (from the model's config) at the type ``llama-quantize`` gives it
(llama.cpp ``src/llama-quant.cpp``, ``llama_tensor_get_type``, b6000-b7000): 1-D tensors (norms) stay F32;
``output.weight`` becomes Q6_K below 8 bits (Q8_0 and F16 keep their type); every other 2-D tensor takes the file
type. Bytes per block are ggml's block layouts (``ggml/src/ggml-common.h``; :data:`BLOCK_BYTES`): a Q8_0 block is
an fp16 scale and 32 int8 (34 bytes per 32 weights), Q4_0 an fp16 scale and 32 nibbles (18 per 32), Q6_K 256
weights in 210 bytes. The k-quant mixes (Q4_K_M ...) choose per layer and are not predicted here: pass their file
(``--model-path file.gguf``) and the weights are its header's.

KV cache: llama.cpp allocates it up front for the whole context, padded to a multiple of 256 cells
(``llama_n_ctx`` reports 256 for a request of 29 or 160 tokens, 512 for 257: measured with llama-cpp-python
0.3.36): n_layer x n_ctx x (K + V width) at the cache type's row size.

Compute buffer: llama.cpp reserves its graph for a whole micro-batch of min(requested context, 512) tokens,
every one of them an output: ubatch x (n_vocab + 1.5 x n_ff) x 4 bytes, the logits and the feed-forward's
activations. Read from the log's ``CPU compute buffer size``: phi-3-tiny at contexts 29 to 2048 gave 130.2 to
132.9 KB per token, which cannot tell n_ff from n_embd (its n_ff is 2 x n_embd); full-size Phi-3-mini (n_ff =
2.67 x n_embd) gave 178.0 and 179.0 KB per token at 144 and 528 tokens, which n_vocab + 1.5 x n_ff meets within 1%
and n_vocab + 3 x n_embd misses by 7.5%. Output buffer: one row of logits, n_vocab x 4 bytes.

CPU repacking (``device="cpu"`` only): ggml-cpu copies some weights into an interleaved layout for its matrix
kernels, the ``CPU_REPACK`` model buffer (anonymous host memory). Read from the llama.cpp that llama-cpp-python
0.3.36 vendors (ggml-org/llama.cpp@0c1e57098, ggml 0.25.3): ``ggml/src/ggml-cpu/repack.cpp``,
``ggml_repack_get_optimal_repack_type``, and ``src/llama-model-loader.cpp``:

- a weight goes to CPU_REPACK when it is on the CPU, is a 2-D operand of a MUL_MAT (``supports_op``; the token
  embedding is read by GET_ROWS and stays in the mapped file, ``output.weight`` is a MUL_MAT and qualifies by its
  type), and its type has a layout for the CPU whose row count (``ne[1]``) divides the layout's interleave
  (:data:`REPACK_LAYOUTS`, first match wins; a CPU with none of them repacks nothing). On x86-64: Q4_0, Q4_K,
  IQ4_NL and MXFP4 with AVX2 (8 rows), Q2_K with AVX-512F (8 rows); Q8_0, Q5_K and Q6_K only on arm64 NEON with
  i8mm or dotprod (Q8_0 by 4 rows), so a Q8_0 file is not repacked on x86-64, nor Q4_0's Q6_K ``output.weight``.
  ``ggml_cpu_has_avx2()`` and the others are the build's compile flags; pip builds llama.cpp with GGML_NATIVE, so
  they are the building machine's (here: the machine fingerprint's ISA flags, ``bench.config.machine``).
  SVE-256 with i8mm gives Q4_0 an 8-row layout too (same bytes; not modelled: arm64 i8mm takes the 4-row one).
- repacking keeps the bytes: an interleaved block of 8 (or 4) Q4_0 blocks holds their 8 scales and nibbles
  (``block_q4_0x8`` = 8 x 18 bytes, ``repack.h``), so the buffer is the tensors' ``ggml_nbytes``, each padded to
  the buffer's 32-byte alignment (``TENSOR_ALIGNMENT``).
- the mapped file's pages of a repacked tensor stay resident: the loader copies each one out of the mapping
  (``ggml_backend_tensor_set`` from ``mapping->addr() + offs``) and afterwards unmaps only the file's range
  before the first and after the last tensor left in the mapped buffer (``unmap_fragment``). So on a CPU the
  weights are held twice: every tensor's file pages (``weights_bytes``) plus ``repack_bytes``.

On a GPU with every layer offloaded no weight a MUL_MAT reads stays on the CPU: nothing is repacked.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bench.config.models import get_model
from bench.config.precision import get_precision
from bench.errors import BadInputError

# ggml-common.h: (weights per block, bytes per block)
BLOCK_BYTES: dict[str, tuple[int, int]] = {
    "F32": (1, 4),
    "F16": (1, 2),
    "BF16": (1, 2),
    "Q8_0": (32, 34),  # fp16 d + 32 x int8
    "Q4_0": (32, 18),  # fp16 d + 16 bytes of nibbles
    "Q4_1": (32, 20),  # fp16 d, m + 16 bytes
    "Q5_0": (32, 22),  # fp16 d + 4 bytes of high bits + 16 bytes
    "Q5_1": (32, 24),  # fp16 d, m + 4 + 16
    "Q2_K": (256, 84),
    "Q3_K": (256, 110),
    "Q4_K": (256, 144),  # fp16 d, dmin + 12 bytes of scales + 128 bytes of nibbles
    "Q5_K": (256, 176),
    "Q6_K": (256, 210),  # 128 low + 64 high + 16 scales + fp16 d
}
KV_TYPES = {"auto": "F16", "f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0"}
PREDICTABLE = ("F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q6_K")
CTX_PAD = 256  # llama.cpp pads the context (KV cells) to a multiple of this
N_UBATCH = 512  # llama-cpp-python's default micro-batch
COMPUTE_FF_FACTOR = 1.5  # read from phi-3-tiny's and Phi-3-mini's compute buffers (see the module docstring)
# ggml-cpu repack.cpp (llama.cpp@0c1e57098), ggml_repack_get_optimal_repack_type: per type, in the source's order,
# (CPU features that must all be present, rows the layout interleaves). ISA names as bench.config.machine spells
# them ("asimd" = NEON, "asimddp" = dotprod, "i8mm" = matmul_int8, "avx512f" = ggml_cpu_has_avx512).
REPACK_LAYOUTS: dict[str, tuple[tuple[frozenset[str], int], ...]] = {
    "Q4_0": ((frozenset({"avx2"}), 8), (frozenset({"asimd", "i8mm"}), 4), (frozenset({"asimd", "asimddp"}), 4)),
    "Q4_K": ((frozenset({"avx2"}), 8), (frozenset({"asimd", "i8mm"}), 8), (frozenset({"asimd", "asimddp"}), 8)),
    "Q2_K": ((frozenset({"avx512f"}), 8),),
    "Q5_K": ((frozenset({"asimd", "i8mm"}), 8), (frozenset({"asimd", "asimddp"}), 8)),
    "Q6_K": ((frozenset({"asimd", "i8mm"}), 8), (frozenset({"asimd", "asimddp"}), 8)),
    "IQ4_NL": ((frozenset({"avx2"}), 8), (frozenset({"asimd", "asimddp"}), 4)),
    "MXFP4": ((frozenset({"avx2"}), 8), (frozenset({"asimd", "asimddp"}), 4)),
    "Q8_0": ((frozenset({"asimd", "i8mm"}), 4), (frozenset({"asimd", "asimddp"}), 4)),
}
REPACK_ALIGNMENT = 32  # ggml-cpu TENSOR_ALIGNMENT: each tensor of the CPU_REPACK buffer starts on it
REPACK_SOURCE = "ggml-cpu repack.cpp, llama.cpp@0c1e57098 (llama-cpp-python 0.3.36)"


def tensor_bytes(elements: int, type_name: str) -> int:
    """Bytes of ``elements`` weights stored as GGML type ``type_name`` (whole blocks)."""
    per, size = BLOCK_BYTES[type_name]
    if elements % per:
        raise ValueError(f"{elements} weights do not fill whole {type_name} blocks of {per}")
    return elements // per * size


def phi3_shapes(config: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """(GGUF name, ggml shape ``ne``: row length first, then rows) of a Phi-3 (or Llama-like with fused qkv and
    gate_up) model's tensors, in the file's order."""
    h, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or h // heads)
    ff, vocab = int(config["intermediate_size"]), int(config["vocab_size"])
    out: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (h, vocab))]
    for i in range(layers):
        out += [
            (f"blk.{i}.attn_norm.weight", (h,)),
            (f"blk.{i}.attn_qkv.weight", (h, (heads + 2 * kv_heads) * head_dim)),
            (f"blk.{i}.attn_output.weight", (heads * head_dim, h)),
            (f"blk.{i}.ffn_norm.weight", (h,)),
            (f"blk.{i}.ffn_up.weight", (h, 2 * ff)),
            (f"blk.{i}.ffn_down.weight", (ff, h)),
        ]
    out += [("output_norm.weight", (h,)), ("output.weight", (h, vocab))]
    return out


def phi3_tensors(config: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(GGUF name, weights, dimensions) of a Phi-3 (or Llama-like with fused qkv and gate_up) model's tensors."""
    return [(name, math.prod(ne), len(ne)) for name, ne in phi3_shapes(config)]


def repack_rows(type_name: str, rows: int, isa: Iterable[str]) -> int | None:
    """The rows ggml-cpu interleaves a 2-D MUL_MAT weight of ``type_name`` with ``rows`` rows (``ne[1]``) into on a
    CPU with the ISA flags ``isa``; None when it stays as it is in the file (no layout for the type on that CPU,
    or the rows do not divide the interleave). :data:`REPACK_LAYOUTS` is the rule, read from the source."""
    have = set(isa)
    for needs, interleave in REPACK_LAYOUTS.get(type_name, ()):
        if needs <= have and rows % interleave == 0:
            return interleave
    return None


def repacked_tensors(
    shapes: Iterable[tuple[str, tuple[int, ...]]], file_type: str, isa: Iterable[str]
) -> dict[str, int]:
    """GGML type -> bytes of the ``CPU_REPACK`` buffer for a model of these tensors all on a CPU with ``isa``:
    the 2-D weights a MUL_MAT reads (all but the token embedding, a GET_ROWS) whose type has a layout there,
    each its file bytes padded to the buffer's alignment (see the module docstring)."""
    isa = tuple(isa)
    out: dict[str, int] = {}
    for name, ne in shapes:
        if len(ne) != 2 or name == "token_embd.weight":
            continue
        t = tensor_type(name, 2, file_type)
        if repack_rows(t, ne[1], isa) is None:
            continue
        size = tensor_bytes(math.prod(ne), t)
        out[t] = out.get(t, 0) + -(-size // REPACK_ALIGNMENT) * REPACK_ALIGNMENT
    return out


def tensor_type(name: str, dims: int, file_type: str) -> str:
    """The type llama-quantize gives a tensor of a file of ``file_type`` (see the module docstring)."""
    if dims == 1:
        return "F32"
    if name == "output.weight" and file_type not in ("F16", "BF16", "Q8_0"):
        return "Q6_K"
    return file_type


@dataclass(frozen=True)
class LlamaCppPrediction:
    """Predicted llama.cpp buffers for one case, in bytes (a prediction)."""

    model: str
    precision: str
    kv_cache_type: str
    context_tokens: int
    new_tokens: int
    n_ctx: int  # padded
    weights_bytes: int
    weights_by_type: dict[str, int]
    kv_cache_bytes: int
    compute_bytes: int
    output_bytes: int
    device: str = "cuda"
    cpu_isa: tuple[str, ...] = ()  # the CPU features the repack rule was applied to (device "cpu")
    repack_bytes: int = 0  # ggml-cpu's CPU_REPACK buffer: a second, interleaved copy of these weights
    repack_by_type: dict[str, int] = field(default_factory=dict)
    repack_source: str = REPACK_SOURCE
    label: str = "predicted"

    @property
    def total_bytes(self) -> int:
        """Weights + CPU_REPACK copy + KV cache + compute + output buffers: what llama.cpp holds (no process or
        CUDA context). On a CPU this is its share of host RSS: the mapped file's pages (all of ``weights_bytes``,
        the repacked tensors' included) and the repacked copy beside them."""
        return self.weights_bytes + self.repack_bytes + self.kv_cache_bytes + self.compute_bytes + self.output_bytes

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (bytes)."""
        out = dict(self.__dict__)
        out["total_bytes"] = self.total_bytes
        return out


def predict_llamacpp(
    model: str,
    precision: str,
    context_tokens: int,
    new_tokens: int,
    kv_cache_type: str = "auto",
    device: str = "cuda",
    cpu_isa: Iterable[str] | None = None,
) -> LlamaCppPrediction:
    """Predict llama.cpp's buffers for a registered model at a GGUF precision (f16, q8_0, q4_0 ...) on ``device``:
    any other device holds every layer (no repacking); ``"cpu"`` adds ggml-cpu's repacked copy for the CPU features
    ``cpu_isa`` (None: this machine's, from its fingerprint; pass them to predict another CPU)."""
    prec = get_precision(precision)
    if not prec.is_gguf:
        raise BadInputError(
            f"precision {precision!r} is not a GGUF type; the llama.cpp predictor takes f16, q8_0, q4_0"
        )
    if prec.gguf not in PREDICTABLE:
        raise BadInputError(
            f"precision {precision!r}: llama-quantize mixes types per layer for k-quant mixes, which this predictor "
            f"does not model; predict one of {', '.join(p.lower() for p in PREDICTABLE)}"
        )
    if kv_cache_type not in KV_TYPES:
        raise BadInputError(f"KV cache type {kv_cache_type!r} is not one of {', '.join(KV_TYPES)}")
    entry = get_model(model)
    config = entry.config_dict()
    if config.get("model_type") not in ("phi3",):
        raise BadInputError(
            f"model {model}: the llama.cpp predictor knows Phi-3 models, not {config.get('model_type')}"
        )
    by_type: dict[str, int] = {}
    for name, elements, dims in phi3_tensors(config):
        t = tensor_type(name, dims, prec.gguf)
        by_type[t] = by_type.get(t, 0) + tensor_bytes(elements, t)
    requested = context_tokens + new_tokens
    n_ctx = -(-requested // CTX_PAD) * CTX_PAD
    h, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    kv_width = kv_heads * int(config.get("head_dim") or h // heads)
    kv = layers * n_ctx * 2 * tensor_bytes(kv_width, KV_TYPES[kv_cache_type])
    repack: dict[str, int] = {}
    isa: tuple[str, ...] = ()
    if device == "cpu":
        if cpu_isa is None:
            from bench.config.machine import fingerprint

            cpu_isa = fingerprint().isa
        isa = tuple(cpu_isa)
        repack = repacked_tensors(phi3_shapes(config), prec.gguf, isa)
    vocab = int(config["vocab_size"])
    ubatch = min(requested, N_UBATCH)
    compute = int(ubatch * (vocab + COMPUTE_FF_FACTOR * int(config["intermediate_size"])) * 4)
    return LlamaCppPrediction(
        model,
        precision,
        kv_cache_type,
        context_tokens,
        new_tokens,
        n_ctx,
        sum(by_type.values()),
        dict(sorted(by_type.items(), key=lambda kv_: -kv_[1])),
        kv,
        compute,
        vocab * 4,
        device,
        isa,
        sum(repack.values()),
        repack,
    )
