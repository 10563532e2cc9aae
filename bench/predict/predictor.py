"""Predict peak memory and decode speed for a model, precision and shape on a card one does not own.

The method is analytic, from the architecture as transformers builds it:

- **Weights** are counted tensor by tensor on a model built on the meta device (instant, even at full
  size). Which linear layers bitsandbytes replaces is decided by transformers' own rule
  (``get_keys_to_not_convert``: lm_head and tied or last modules stay unquantized), and the bytes of
  each quantized layer follow bitsandbytes' storage: int8 keeps a float32 scale per output row (SCB);
  4-bit keeps packed nibbles, one absmax per block of 64 (float32, or uint8 plus a float32 absmax per
  256 blocks, a 256-entry code and an offset with double quantization) and a 16-entry code.
- **KV cache** is 2 x layers x kv heads x head dim x bytes per token and sequence (DynamicCache grows
  by concatenation, so a decode step briefly holds one layer's keys twice).
- **Activations and workspace** follow the order in which transformers' Phi-3/Llama and BERT code
  allocates and frees tensors in one forward pass (inputs_embeds and the layer input stay alive, the
  MLP holds gate_up, act and product at once, SDPA with flash/memory-efficient kernels never builds
  the L x L matrix, generate computes logits for the last token only, then an fp32 copy), plus the
  temporary buffers of the quantized matmuls (4-bit prefill dequantizes a whole weight; LLM.int8
  holds an int32 product; on a CPU without AVX-512, int8 matmuls run in float32).
- **Fixed costs and slack**: on a GPU, the CUDA context and library memory (measured by
  ``bench profile``, else an assumed 0.5 GiB), the cuBLAS workspaces, the caching allocator's
  rounding of each weight tensor, and a slack fraction of the dynamic memory. On a CPU, a calibrated
  constant and fraction (see :data:`CPU_CALIBRATION`).

Decode speed is bounded by memory bandwidth: every decode step reads every weight once plus the KV
cache, so the ceiling is batch x bandwidth / bytes read per step; an efficiency measured on real runs
turns the ceiling into a prediction.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.config.hardware import HardwareProfile, find_profile
from bench.config.models import DECODER, ENCODER, family_of_config, get_model
from bench.config.precision import Precision, get_precision, runtime_dtype
from bench.errors import BadInputError
from bench.units import MiB

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int8": 1, "uint8": 1, "bool": 1}

BLOCKSIZE_4BIT = 64  # bitsandbytes' default block size for 4-bit weights
NESTED_BLOCKSIZE = 256  # double quantization: one float32 absmax per 256 blocks
CODE_4BIT_BYTES = 16 * 4  # the NF4/FP4 code table kept with every layer (float32)
NESTED_CODE_BYTES = 256 * 4  # the 8-bit dynamic code of the nested absmax (float32)
OFFSET_BYTES = 4  # the nested absmax offset (float32 scalar)
GEMV_4BIT_MAX_ROWS = 4  # on CUDA, bitsandbytes runs 4-bit matmuls of up to 4 rows without dequantizing

# Fixed costs on a CUDA GPU when the card's profile has no measurement (reference/gpus.md gives 0.3 to
# 0.7 GiB for a context with lazy module loading; kernels loaded on first use add to it).
DEFAULT_CUDA_CONTEXT_BYTES = 512 * MiB
CUBLAS_WORKSPACE_BYTES = {9: 32 * MiB, 10: 32 * MiB}  # per handle, by compute capability major; else below
CUBLAS_WORKSPACE_DEFAULT_BYTES = 4096 * 1024 * 2 + 16 * 1024 * 8  # torch's ":4096:2:16:8" default
CUDA_SLACK_FRACTION = 0.05  # reserved-but-unallocated share of the dynamic memory (assumed, not yet measured)

# Host-process figures on a CPU, calibrated on this project's CPU measurements (benchmarks/
# predictor_accuracy.py, glibc told to return freed blocks at once): fixed bytes a warm process gains per
# case (Python objects of the generate loop) and a slack fraction of the dynamic memory. Measured
# residuals were -0.1 to +0.35 MiB over 8 unquantized cases of 37 MB to 1.75 GB, so both are small.
CPU_CALIBRATION = {"fixed_bytes": 0.25 * MiB, "slack_fraction": 0.005}
CHECKPOINT_DTYPE_BYTES = 2  # quantized loads read a float16 checkpoint (bench.measure.loader.random_checkpoint)

PHASES = ("prefill", "decode", "encode")


# --------------------------------------------------------------------------- architecture


@dataclass(frozen=True)
class LinearLayer:
    """One nn.Linear: its name, shape, bias, whether bitsandbytes quantizes it and its role in a layer."""

    name: str
    in_features: int
    out_features: int
    bias: bool
    quantized: bool
    role: str  # qkv | q | k | v | o | gate_up | gate | up | down | fc1 | fc2 | head | other
    layer: int | None  # decoder/encoder layer index; None outside the stack
    tied: bool = False  # the weight is another tensor's (tied embeddings): its bytes are counted there

    @property
    def numel(self) -> int:
        """Weight elements."""
        return self.in_features * self.out_features


@dataclass(frozen=True)
class OtherTensor:
    """A parameter or buffer that is not a quantizable linear weight."""

    name: str
    numel: int
    dtype: str  # "float16" means "follows the runtime dtype"; anything else stays as is
    buffer: bool


@dataclass(frozen=True)
class Architecture:
    """What the predictor needs of a model, read from the model transformers builds on the meta device."""

    name: str
    family: str
    model_type: str
    num_layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_positions: int
    sliding_window: int | None
    mlp: str  # fused_gated | gated | plain
    parameters: int
    input_embedding_numel: int
    linears: tuple[LinearLayer, ...]
    others: tuple[OtherTensor, ...]

    @property
    def kv_dim(self) -> int:
        """Key (or value) width per token: kv heads x head dim."""
        return self.kv_heads * self.head_dim

    @property
    def q_dim(self) -> int:
        """Query width per token: heads x head dim."""
        return self.heads * self.head_dim

    def layer_linears(self, index: int = 0) -> list[LinearLayer]:
        """The linear layers of one stack layer (all layers are alike)."""
        return [lin for lin in self.linears if lin.layer == index]

    def role(self, role: str) -> list[LinearLayer]:
        """The first stack layer's linears with this role (or the head)."""
        pool = self.layer_linears(0) if role != "head" else self.linears
        return [lin for lin in pool if lin.role == role]


_ROLE_SUFFIXES = (
    ("qkv_proj", "qkv"),
    ("query_key_value", "qkv"),
    ("c_attn", "qkv"),
    ("q_proj", "q"),
    ("self.query", "q"),
    ("k_proj", "k"),
    ("self.key", "k"),
    ("v_proj", "v"),
    ("self.value", "v"),
    ("o_proj", "o"),
    ("attention.output.dense", "o"),
    ("out_proj", "o"),
    ("gate_up_proj", "gate_up"),
    ("gate_proj", "gate"),
    ("up_proj", "up"),
    ("down_proj", "down"),
    ("intermediate.dense", "fc1"),
    ("fc1", "fc1"),
    ("output.dense", "fc2"),
    ("fc2", "fc2"),
)


def _role(name: str) -> str:
    for suffix, role in _ROLE_SUFFIXES:
        if name.endswith(suffix):
            return role
    return "other"


def _layer_index(name: str) -> int | None:
    parts = name.split(".")
    for a, b in zip(parts, parts[1:], strict=False):
        if a in ("layers", "layer", "h", "blocks") and b.isdigit():
            return int(b)
    return None


def _config_key(config: Any) -> str:
    return json.dumps(config.to_dict(), sort_keys=True, default=str)


def resolve_config(model: Any) -> tuple[str, Any, str]:
    """``(name, transformers config, family)`` of a registered model name or a config object."""
    if isinstance(model, str):
        entry = get_model(model)
        return entry.name, entry.config(), entry.family
    if hasattr(model, "to_dict") and hasattr(model, "model_type"):
        return str(getattr(model, "name_or_path", "") or model.model_type), model, family_of_config(model)
    raise BadInputError(f"model {model!r} must be a registered model name or a transformers config")


_ARCHITECTURES: dict[tuple[str, str, str], Architecture] = {}


def architecture(model: Any) -> Architecture:
    """The architecture of a registered model name or a transformers config (cached per config)."""
    name, config, family = resolve_config(model)
    key = (name, family, _config_key(config))
    if key not in _ARCHITECTURES:
        _ARCHITECTURES[key] = _build_architecture(name, family, config)
    return _ARCHITECTURES[key]


def _build_architecture(name: str, family: str, config: Any) -> Architecture:
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    cls = AutoModelForCausalLM if family == DECODER else AutoModel
    with torch.device("meta"):
        model = cls.from_config(config, dtype=torch.float16)
    try:
        from transformers.quantizers.base import get_keys_to_not_convert

        skip = list(get_keys_to_not_convert(model))
    except ImportError:  # older transformers: the same rule (output embeddings and the last module)
        skip = ["lm_head"]
    skip += list(getattr(model, "_keep_in_fp32_modules", None) or [])
    try:
        from transformers.integrations.bitsandbytes import should_convert_module
    except ImportError:

        def should_convert_module(full_name: str, patterns: list[str] | None = None) -> bool:
            return not any(
                full_name == p or full_name.endswith("." + p) or full_name.startswith(p + ".") for p in patterns or []
            )

    first_name: dict[int, str] = {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        first_name.setdefault(id(p), pname)
    linears: list[LinearLayer] = []
    linear_weights: set[str] = set()
    for mod_name, module in model.named_modules():
        if type(module) is torch.nn.Linear:
            tied = first_name.get(id(module.weight)) != f"{mod_name}.weight"
            quantized = bool(should_convert_module(mod_name, skip)) and not tied
            role = "head" if module is model.get_output_embeddings() else _role(mod_name)
            linears.append(
                LinearLayer(
                    mod_name,
                    module.in_features,
                    module.out_features,
                    module.bias is not None,
                    quantized,
                    role,
                    _layer_index(mod_name),
                    tied,
                )
            )
            if not tied:
                linear_weights.add(f"{mod_name}.weight")
            if module.bias is not None:
                linear_weights.add(f"{mod_name}.bias")
    others: list[OtherTensor] = []
    seen: set[int] = set()
    for pname, p in model.named_parameters(remove_duplicate=True):
        if id(p) in seen:
            continue
        seen.add(id(p))
        if pname in linear_weights:
            continue
        others.append(OtherTensor(pname, p.numel(), str(p.dtype).replace("torch.", ""), False))
    for bname, b in model.named_buffers(remove_duplicate=True):
        others.append(OtherTensor(bname, b.numel(), str(b.dtype).replace("torch.", ""), True))
    embeddings = model.get_input_embeddings()
    cfg = model.config
    heads = int(cfg.num_attention_heads)
    hidden = int(cfg.hidden_size)
    head_dim = int(getattr(cfg, "head_dim", None) or hidden // heads)
    roles = {lin.role for lin in linears if lin.layer == 0}
    mlp = "fused_gated" if "gate_up" in roles else "gated" if "gate" in roles else "plain"
    window = getattr(cfg, "sliding_window", None)
    return Architecture(
        name=name,
        family=family,
        model_type=str(cfg.model_type),
        num_layers=int(cfg.num_hidden_layers),
        hidden=hidden,
        intermediate=int(getattr(cfg, "intermediate_size", 4 * hidden)),
        heads=heads,
        kv_heads=int(getattr(cfg, "num_key_value_heads", None) or heads),
        head_dim=head_dim,
        vocab=int(cfg.vocab_size),
        max_positions=int(getattr(cfg, "max_position_embeddings", 0) or 1 << 30),
        sliding_window=int(window) if window else None,
        mlp=mlp,
        parameters=sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
        input_embedding_numel=int(embeddings.weight.numel()) if embeddings is not None else 0,
        linears=tuple(linears),
        others=tuple(others),
    )


# --------------------------------------------------------------------------- weights and KV cache


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


def _dtype_of(tensor_dtype: str, runtime: str) -> str:
    return runtime if tensor_dtype == "float16" else tensor_dtype


def quantized_linear_bytes(out_features: int, in_features: int, precision: Precision) -> tuple[int, int]:
    """``(storage bytes, quantization-state bytes)`` of one bitsandbytes linear weight (bias excluded)."""
    n = out_features * in_features
    if precision.quant == "int8":
        return n, out_features * 4  # int8 weight + float32 SCB per output row
    blocks = math.ceil(n / BLOCKSIZE_4BIT)
    storage = (n + 1) // 2
    if precision.double_quant:
        state = blocks + math.ceil(blocks / NESTED_BLOCKSIZE) * 4 + NESTED_CODE_BYTES + OFFSET_BYTES
    else:
        state = blocks * 4
    return storage, state + CODE_4BIT_BYTES


def weight_bytes(arch: Architecture, precision: Precision, device: str = "cuda") -> WeightBytes:
    """Bytes of the loaded model at a precision on a device kind (its runtime dtype for what stays unquantized)."""
    runtime = runtime_dtype(precision, device)
    size = DTYPE_BYTES[runtime]
    quantized = state = plain = buffers = 0
    for lin in arch.linears:
        if precision.quantized and lin.quantized:
            storage, qstate = quantized_linear_bytes(lin.out_features, lin.in_features, precision)
            quantized += storage
            state += qstate
        elif not lin.tied:
            plain += lin.numel * size
        if lin.bias:
            plain += lin.out_features * size
    for t in arch.others:
        nbytes = t.numel * DTYPE_BYTES[_dtype_of(t.dtype, runtime)]
        if t.buffer:
            buffers += nbytes
        else:
            plain += nbytes
    return WeightBytes(quantized, state, plain, buffers)


def kv_bytes_per_token(arch: Architecture, precision: Precision, device: str = "cuda") -> int:
    """KV-cache bytes per token per sequence: 2 (K and V) x layers x kv heads x head dim x dtype bytes."""
    if arch.family != DECODER:
        return 0
    return 2 * arch.num_layers * arch.kv_heads * arch.head_dim * DTYPE_BYTES[runtime_dtype(precision, device)]


# --------------------------------------------------------------------------- activations and workspace


@dataclass(frozen=True)
class DeviceTraits:
    """What the activation model needs to know of a device."""

    kind: str  # "cuda" | "cpu"
    cpu_avx512: bool = False


def _linear_peak(lin: LinearLayer, rows: int, precision: Precision, traits: DeviceTraits, act: int) -> int:
    """Peak bytes a linear layer adds while it runs: its output plus bitsandbytes' temporaries."""
    k, n = lin.in_features, lin.out_features
    out = rows * n * act
    if not (precision.quantized and lin.quantized):
        return out
    if precision.quant == "int8":
        quant_a = rows * k + rows * 4  # int8 activations + float32 row scales
        if traits.kind == "cpu":
            # the CPU dequant is plain torch: int32 product, the float32 outer product of the scales, the
            # int32 product promoted to float32 and the float32 result, all alive at once (before the output)
            dequant = rows * n * 16
            if not traits.cpu_avx512:  # no VNNI: matmul(A.float(), B.float().t()) in float32 first
                return quant_a + max(rows * k * 4 + n * k * 4 + rows * n * 4, dequant)
            return quant_a + dequant
        return quant_a + rows * n * 4 + out  # int32 product (cuBLASLt), dequantized in one kernel
    if traits.kind == "cuda" and rows <= GEMV_4BIT_MAX_ROWS:
        return out  # fused 4-bit kernel, no dequantized copy
    extra = math.ceil(k * n / BLOCKSIZE_4BIT) * 4 if precision.double_quant else 0  # float32 absmax
    return out + n * k * act + extra  # the whole weight dequantized to the compute dtype


def _logits_bytes(arch: Architecture, b: int, act: int) -> int:
    """generate's last-token logits, their float32 copy and the logits processors' copies and masks.

    The per-vocabulary part (an int64 arange, an isin mask and its sort buffers) was measured with the
    torch profiler on CPU runs of generate (MinNewTokensLengthLogitsProcessor).
    """
    return b * arch.vocab * (act + 12) + arch.vocab * 28


@dataclass(frozen=True)
class Transient:
    """The largest set of short-lived tensors in a phase: bytes and where it happens."""

    bytes: int
    stage: str


def _max_stage(stages: Iterable[tuple[str, int]]) -> Transient:
    name, value = max(stages, key=lambda s: s[1])
    return Transient(int(value), name)


def _decoder_prefill(
    arch: Architecture, b: int, length: int, precision: Precision, traits: DeviceTraits, act: int, attn: str
) -> Transient:
    """Peak short-lived bytes of one prefill forward (the last layer, when the KV cache is complete)."""
    t = b * length
    h, q, kvd, inter = arch.hidden, arch.q_dim, arch.kv_dim, arch.intermediate
    peak = functools.partial(_linear_peak, rows=t, precision=precision, traits=traits, act=act)

    def out(lin: LinearLayer) -> int:
        return t * lin.out_features * act

    # inputs_embeds, and rotary cos/sin per sequence (generate passes position ids for every sequence)
    base = t * h * act + 2 * t * arch.head_dim * act
    if arch.sliding_window and length > arch.sliding_window:
        base += b * length * length  # a boolean sliding-window mask
    if arch.num_layers > 1:
        base += t * h * act  # the layer's input, held by the caller
    normed = t * h * act
    sdpa_ws = b * arch.heads * length * 4  # logsumexp of flash / memory-efficient attention
    if attn == "eager":
        sdpa_ws += b * arch.heads * length * length * (act + 4 + act)  # scores, fp32 softmax, cast back
    norm_tmp = t * h * 8  # RMSNorm: float32 copy and normalised float32 tensor
    stages = [("input norm", base + norm_tmp + t * h * act)]
    qkv = arch.role("qkv")
    if qkv:
        qkv_bytes = out(qkv[0])
        stages.append(("qkv projection", base + normed + peak(qkv[0])))
    else:
        parts = arch.role("q") + arch.role("k") + arch.role("v")
        qkv_bytes = sum(out(lin) for lin in parts)
        running = 0
        for lin in parts:
            stages.append((f"{lin.role} projection", base + normed + running + peak(lin)))
            running += out(lin)
    rope_q = base + normed + qkv_bytes + 3 * t * q * act
    rope_k = base + normed + qkv_bytes + t * q * act + 3 * t * kvd * act
    stages += [("rotary (q)", rope_q), ("rotary (k)", rope_k)]
    attn_live = base + normed + qkv_bytes + t * q * act
    stages.append(("attention", attn_live + 2 * t * q * act + sdpa_ws))
    for lin in arch.role("o"):
        stages.append(("o projection", attn_live + t * q * act + peak(lin)))
    mlp_base = base + 2 * t * h * act  # residual + normed input of the MLP
    stages.append(("post-attention norm", base + t * h * act + norm_tmp + t * h * act))
    if arch.mlp == "fused_gated":
        (up,) = arch.role("gate_up")[:1]
        (down,) = arch.role("down")[:1]
        stages += [
            ("MLP gate_up", mlp_base + peak(up)),
            ("MLP act x up", mlp_base + t * 4 * inter * act),
            ("MLP down", mlp_base + t * 3 * inter * act + peak(down)),
        ]
    elif arch.mlp == "gated":
        gate, up, down = arch.role("gate")[0], arch.role("up")[0], arch.role("down")[0]
        stages += [
            ("MLP gate", mlp_base + peak(gate)),
            ("MLP act", mlp_base + 2 * t * inter * act),
            ("MLP up", mlp_base + t * inter * act + peak(up)),
            ("MLP act x up", mlp_base + 3 * t * inter * act),
            ("MLP down", mlp_base + t * inter * act + peak(down)),
        ]
    else:
        for lin in arch.role("fc1")[:1]:
            stages.append(("MLP fc1", mlp_base + peak(lin)))
            stages.append(("MLP act", mlp_base + 2 * out(lin)))
        for lin in arch.role("fc2")[:1]:
            stages.append(("MLP fc2", mlp_base + t * inter * act + peak(lin)))
    stages.append(("final norm", t * h * act * 2 + norm_tmp))
    stages.append(("logits", t * h * act + _logits_bytes(arch, b, act)))
    return _max_stage(stages)


def _decoder_decode_step(arch: Architecture, b: int, precision: Precision, traits: DeviceTraits, act: int) -> int:
    """Short-lived bytes of one decode step besides the KV cache (linear workspace and logits)."""
    layers = max(
        (_linear_peak(lin, b, precision, traits, act) for lin in arch.linears if lin.role != "head"), default=0
    )
    return max(layers + b * 4 * arch.hidden * act, _logits_bytes(arch, b, act))


def _encoder_forward(
    arch: Architecture, b: int, length: int, precision: Precision, traits: DeviceTraits, act: int, attn: str
) -> Transient:
    """Peak bytes of one encoder forward pass (BERT-like: post-norm, separate q/k/v, plain MLP)."""
    t = b * length
    h, inter = arch.hidden, arch.intermediate
    peak = functools.partial(_linear_peak, rows=t, precision=precision, traits=traits, act=act)
    base = t * h * act  # the embedding output, held by the model's forward
    if arch.num_layers > 1:
        base += t * h * act  # the layer input
    sdpa_ws = b * arch.heads * length * 4
    if attn == "eager":
        sdpa_ws += b * arch.heads * length * length * (act + 4 + act)
    stages = [("embeddings", t * h * act * 5 + length * h * act)]
    qkv = arch.role("q") + arch.role("k") + arch.role("v") + arch.role("qkv")
    running = 0
    for lin in qkv:
        stages.append((f"{lin.role} projection", base + running + peak(lin)))
        running += t * lin.out_features * act
    stages.append(("attention", base + running + t * arch.q_dim * act + sdpa_ws))
    stages.append(("attention output copy", base + running + 2 * t * arch.q_dim * act))
    for lin in arch.role("o"):
        stages.append(("attention output dense", base + t * arch.q_dim * act + peak(lin)))
        stages.append(("attention output norm", base + t * arch.q_dim * act + t * h * act * 3))
    for lin in arch.role("fc1"):
        stages.append(("MLP fc1", base + t * h * act + peak(lin)))
        stages.append(("MLP act", base + t * h * act + 2 * t * inter * act))
    for lin in arch.role("fc2"):
        stages.append(("MLP fc2", base + t * h * act + t * inter * act + peak(lin)))
        stages.append(("MLP output norm", base + t * h * act + t * inter * act + t * h * act * 3))
    return _max_stage(stages)


# --------------------------------------------------------------------------- the prediction


@dataclass(frozen=True)
class MemoryPrediction:
    """Predicted peak device memory (host memory for a CPU profile), in bytes, with its parts."""

    model: str
    precision: str
    device: str  # the profile's name, or "generic CUDA GPU"
    device_kind: str
    context_tokens: int
    batch_size: int
    new_tokens: int
    context_bytes: int  # CUDA context and library memory (CPU: the per-case fixed bytes)
    weights_bytes: int
    weights_quantized_bytes: int
    weights_unquantized_bytes: int
    quant_state_bytes: int
    kv_cache_bytes: int  # live at the peak
    kv_cache_final_bytes: int  # at the end of generation (prompt + new tokens - 1)
    activation_bytes: int  # activations and workspace live at the peak
    slack_bytes: int  # allocator rounding and fragmentation
    total_bytes: int
    peak_phase: str
    peak_stage: str
    device_memory_bytes: int | None = None
    notes: tuple[str, ...] = ()
    calibration: dict[str, str] = field(default_factory=dict)
    label: str = "predicted"

    @property
    def fits(self) -> bool | None:
        """True when the predicted peak fits the device's memory; None without a device."""
        return None if self.device_memory_bytes is None else self.total_bytes <= self.device_memory_bytes

    @property
    def margin_bytes(self) -> int | None:
        """Device memory minus the predicted peak (negative: does not fit)."""
        return None if self.device_memory_bytes is None else self.device_memory_bytes - self.total_bytes

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (byte fields as integers; ``fits`` and ``margin_bytes`` included)."""
        out = asdict(self)
        out["notes"] = list(self.notes)
        out["fits"] = self.fits
        out["margin_bytes"] = self.margin_bytes
        return out


@dataclass(frozen=True)
class SpeedPrediction:
    """Decode tokens/s: the bandwidth ceiling, and a prediction where a measured efficiency exists."""

    model: str
    precision: str
    device: str
    context_tokens: int
    batch_size: int
    new_tokens: int
    bytes_per_step: int  # weights and KV cache read per decode step (all sequences of the batch)
    bandwidth_bytes_per_s: float
    bandwidth_basis: str  # "measured" | "datasheet"
    ceiling_tokens_per_s: float
    efficiency: float | None  # measured decode tokens/s over the ceiling, from records
    efficiency_basis: str | None
    predicted_tokens_per_s: float  # ceiling x efficiency, or the ceiling itself when no efficiency is known
    label: str  # "predicted" (an efficiency applied) | "ceiling"
    measured_tokens_per_s: float | None = None  # the same case measured on this device, where a record exists

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


def _traits(profile: HardwareProfile | None) -> DeviceTraits:
    if profile is None or profile.kind == "cuda":
        return DeviceTraits("cuda")
    capability = (profile.measured.cpu_capability if profile.measured else None) or ""
    return DeviceTraits("cpu", cpu_avx512="512" in capability.upper())


def _check_shape(arch: Architecture, context_tokens: int, batch_size: int, new_tokens: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise BadInputError(f"batch size {batch_size!r} is impossible: it must be a whole number of at least 1")
    if context_tokens < 1:
        raise BadInputError(f"context {context_tokens} must be at least 1 token")
    if new_tokens < 0:
        raise BadInputError(f"new tokens {new_tokens} must not be negative")
    if arch.family == ENCODER and new_tokens:
        raise BadInputError(f"{arch.name} is an encoder: it does not generate; use --new-tokens 0")
    total = context_tokens + new_tokens
    if total > arch.max_positions:
        raise BadInputError(
            f"context {context_tokens} + {new_tokens} new tokens = {total} exceeds {arch.name}'s maximum of "
            f"{arch.max_positions} positions; use a context of at most {arch.max_positions - new_tokens}"
        )


def _cuda_fixed_bytes(profile: HardwareProfile | None) -> tuple[int, str]:
    measured = profile.measured if profile else None
    if measured and measured.runtime_overhead_bytes:
        return int(measured.runtime_overhead_bytes), "CUDA context and libraries measured by 'bench profile'"
    if measured and measured.cuda_context_bytes:
        return int(measured.cuda_context_bytes), "CUDA context measured by 'bench profile' (libraries not included)"
    return DEFAULT_CUDA_CONTEXT_BYTES, "CUDA context assumed 0.5 GiB (reference range 0.3-0.7 GiB; not measured)"


def _cuda_rounding(arch: Architecture, precision: Precision) -> int:
    """Bytes the CUDA caching allocator adds to the weights: tensors over 10 MiB round up to 2 MiB."""
    extra = 0
    size = DTYPE_BYTES[runtime_dtype(precision, "cuda")]
    sizes: list[int] = []
    for lin in arch.linears:
        if precision.quantized and lin.quantized:
            storage, _ = quantized_linear_bytes(lin.out_features, lin.in_features, precision)
            sizes.append(storage)
        elif not lin.tied:
            sizes.append(lin.numel * size)
    sizes += [t.numel * DTYPE_BYTES[_dtype_of(t.dtype, runtime_dtype(precision, "cuda"))] for t in arch.others]
    for s in sizes:
        if s > 10 * MiB:
            extra += -s % (2 * MiB)
        else:
            extra += -s % 512
    return extra


def predict_memory(
    model: Any,
    precision: str | Precision,
    context_tokens: int,
    batch_size: int = 1,
    new_tokens: int = 0,
    device_profile: HardwareProfile | None = None,
    *,
    attn_implementation: str = "sdpa",
) -> MemoryPrediction:
    """Predict the peak memory of one generate (decoder) or encode (encoder) call.

    ``model`` is a registered name or a transformers config; ``device_profile`` None means a generic
    CUDA GPU (assumed context, no card limit); a ``cpu`` profile predicts the host process's growth.
    """
    arch = architecture(model)
    prec = precision if isinstance(precision, Precision) else get_precision(precision)
    _check_shape(arch, context_tokens, batch_size, new_tokens)
    traits = _traits(device_profile)
    device = traits.kind
    act = DTYPE_BYTES[runtime_dtype(prec, device)]
    weights = weight_bytes(arch, prec, device)
    notes: list[str] = []
    calibration: dict[str, str] = {}

    kv_token = kv_bytes_per_token(arch, prec, device)
    if arch.family == DECODER:
        prefill = _decoder_prefill(arch, batch_size, context_tokens, prec, traits, act, attn_implementation)
        prefill_kv = kv_token * batch_size * context_tokens
        final_tokens = context_tokens + max(new_tokens - 1, 0)
        final_kv = kv_token * batch_size * final_tokens
        layer_k = final_kv // max(2 * arch.num_layers, 1)  # a decode step's concatenation holds one layer's keys twice
        decode_act = layer_k + _decoder_decode_step(arch, batch_size, prec, traits, act)
        if new_tokens > 1 and final_kv + decode_act > prefill_kv + prefill.bytes:
            phase, stage, kv_live, activation = "decode", "last decode step", final_kv, decode_act
        else:
            phase, stage, kv_live, activation = "prefill", prefill.stage, prefill_kv, prefill.bytes
    else:
        enc = _encoder_forward(arch, batch_size, context_tokens, prec, traits, act, attn_implementation)
        phase, stage, kv_live, activation, final_kv = "encode", enc.stage, 0, enc.bytes, 0

    dynamic = kv_live + activation
    if device == "cuda":
        fixed, basis = _cuda_fixed_bytes(device_profile)
        calibration["context_bytes"] = basis
        major = device_profile.compute_major if device_profile else None
        cublas = 2 * CUBLAS_WORKSPACE_BYTES.get(major or 0, CUBLAS_WORKSPACE_DEFAULT_BYTES)
        rounding = _cuda_rounding(arch, prec)
        slack = int(cublas + rounding + CUDA_SLACK_FRACTION * dynamic)
        calibration["slack_bytes"] = (
            f"cuBLAS/cuBLASLt workspaces ({cublas / MiB:.0f} MiB) + caching-allocator rounding of the weights "
            f"({rounding / MiB:.1f} MiB) + {CUDA_SLACK_FRACTION:.0%} of KV and activations (assumed; not yet "
            "calibrated on a GPU)"
        )
        if device_profile and prec.dtype == "bfloat16" and device_profile.supports_bf16 is False:
            notes.append(
                f"{device_profile.name} has no native bf16 (compute capability "
                f"{device_profile.compute_capability}); expect it to be slow or unsupported"
            )
        if prec.quantized and device_profile and (device_profile.compute_major or 0) < 7:
            notes.append("bitsandbytes needs compute capability 7.0 or newer for its GPU kernels")
    else:
        fixed = int(CPU_CALIBRATION["fixed_bytes"])
        slack = int(CPU_CALIBRATION["slack_fraction"] * dynamic)
        calibration["context_bytes"] = "per-case host bytes calibrated on CPU runs (benchmarks/predictor_accuracy.py)"
        calibration["slack_bytes"] = (
            f"{CPU_CALIBRATION['slack_fraction']:.1%} of KV and activations, calibrated on CPU runs"
        )
        if prec.quantized:
            # transformers keeps the checkpoint file mapped while the model lives; the pages of the layers
            # it quantized were read and stay resident (measured: exactly their float16 bytes)
            mapped = sum(lin.numel * CHECKPOINT_DTYPE_BYTES for lin in arch.linears if lin.quantized)
            slack += mapped
            calibration["slack_bytes"] += (
                f" + {mapped / MiB:.1f} MiB of checkpoint pages of the quantized layers that stay mapped"
            )
    if prec.quant == "int8":
        notes.append("int8 with random weights: LLM.int8's outlier path rarely fires, real checkpoints may use more")
    if arch.family == DECODER and arch.sliding_window and context_tokens > arch.sliding_window:
        notes.append(f"context beyond the sliding window ({arch.sliding_window}) materialises a mask")
    total = fixed + weights.total_bytes + kv_live + activation + slack
    return MemoryPrediction(
        model=arch.name,
        precision=prec.name,
        device=device_profile.name if device_profile else "generic CUDA GPU",
        device_kind=device,
        context_tokens=context_tokens,
        batch_size=batch_size,
        new_tokens=new_tokens,
        context_bytes=int(fixed),
        weights_bytes=weights.total_bytes,
        weights_quantized_bytes=weights.quantized_bytes,
        weights_unquantized_bytes=weights.unquantized_bytes + weights.buffer_bytes,
        quant_state_bytes=weights.quant_state_bytes,
        kv_cache_bytes=int(kv_live),
        kv_cache_final_bytes=int(final_kv),
        activation_bytes=int(activation),
        slack_bytes=int(slack),
        total_bytes=int(total),
        peak_phase=phase,
        peak_stage=stage,
        device_memory_bytes=device_profile.memory_bytes if device_profile and device == "cuda" else None,
        notes=tuple(notes),
        calibration=calibration,
    )


def largest_batch(
    model: Any,
    precision: str | Precision,
    context_tokens: int,
    new_tokens: int,
    device_profile: HardwareProfile,
    limit: int = 4096,
) -> int:
    """The largest batch whose predicted peak fits the device (0 when even one sequence does not)."""

    def fits(b: int) -> bool:
        pred = predict_memory(model, precision, context_tokens, b, new_tokens, device_profile)
        return pred.total_bytes <= device_profile.memory_bytes

    if not fits(1):
        return 0
    lo, hi = 1, 2
    while hi <= limit and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


# --------------------------------------------------------------------------- decode speed


def decode_bytes_per_step(
    model: Any,
    precision: str | Precision,
    context_tokens: int,
    batch_size: int = 1,
    new_tokens: int = 1,
    device: str = "cuda",
) -> int:
    """Bytes one decode step reads: every weight once (the input embedding only for the batch's rows) plus
    the KV cache at the mean length over the generation."""
    arch = architecture(model)
    prec = precision if isinstance(precision, Precision) else get_precision(precision)
    act = DTYPE_BYTES[runtime_dtype(prec, device)]
    weights = weight_bytes(arch, prec, device).total_bytes
    tied = any(lin.tied for lin in arch.linears)
    embedding = 0 if tied else arch.input_embedding_numel * act  # a tied table is read whole by the head
    weights_read = weights - embedding + batch_size * arch.hidden * act
    mean_tokens = context_tokens + max(new_tokens - 1, 0) / 2
    kv = kv_bytes_per_token(arch, prec, device) * batch_size * mean_tokens
    return int(weights_read + kv)


def _ceiling(
    model: Any, prec: Precision, context: int, batch: int, new: int, profile: HardwareProfile
) -> tuple[float, int]:
    per_step = decode_bytes_per_step(model, prec, context, batch, max(new, 2), profile.kind)
    return batch * profile.bandwidth_bytes_per_s / per_step, per_step


def measured_efficiencies(records: Iterable[Any], profiles: Sequence[HardwareProfile]) -> list[dict[str, Any]]:
    """For each ok generate record on a known device: measured decode tokens/s over that device's ceiling."""
    rows = []
    for r in records:
        if getattr(r, "status", None) != "ok" or r.spec.scenario != "generate" or r.spec.new_tokens < 2:
            continue
        tps = r.metrics.get("decode_tokens_per_s")
        prof = find_profile(r.device_name, profiles) if r.device_name else None
        if not tps or prof is None or not math.isfinite(tps):
            continue
        if (prof.kind == "cuda") != str(r.device).startswith("cuda"):
            continue
        try:
            ceiling, _ = _ceiling(
                r.spec.model,
                get_precision(r.spec.precision),
                r.spec.context_tokens,
                r.spec.batch_size,
                r.spec.new_tokens,
                prof,
            )
        except BadInputError:
            continue
        rows.append(
            {
                "device": prof.name,
                "model": r.spec.model,
                "precision": r.spec.precision,
                "context_tokens": r.spec.context_tokens,
                "batch_size": r.spec.batch_size,
                "new_tokens": r.spec.new_tokens,
                "decode_tokens_per_s": float(tps),
                "efficiency": float(tps) / ceiling,
            }
        )
    return rows


def predict_decode(
    model: Any,
    precision: str | Precision,
    context_tokens: int,
    batch_size: int = 1,
    new_tokens: int = 64,
    device_profile: HardwareProfile | None = None,
    records: Iterable[Any] | None = None,
    profiles: Sequence[HardwareProfile] | None = None,
) -> SpeedPrediction:
    """Predict decode tokens/s on a device: the bandwidth ceiling, times a measured efficiency if any.

    The efficiency comes from ``records`` (measured runs): the same device, model and precision first,
    then the same model and precision on any device; without one the answer is labelled a ceiling.
    """
    if device_profile is None:
        raise BadInputError("a decode-speed prediction needs a device: pass --gpu NAME")
    arch = architecture(model)
    prec = precision if isinstance(precision, Precision) else get_precision(precision)
    if arch.family != DECODER:
        raise BadInputError(f"{arch.name} is an encoder: it has no decode speed (it runs one forward pass)")
    _check_shape(arch, context_tokens, batch_size, new_tokens)
    ceiling, per_step = _ceiling(model, prec, context_tokens, batch_size, new_tokens, device_profile)
    pool = list(profiles) if profiles is not None else [device_profile]
    if all(p.name != device_profile.name for p in pool):
        pool.append(device_profile)
    effs = measured_efficiencies(records or (), pool)
    same = [e for e in effs if e["model"] == arch.name and e["precision"] == prec.name]
    here = [e for e in same if e["device"] == device_profile.name]
    efficiency = basis = None
    measured = None
    if here:
        efficiency = statistics.median(e["efficiency"] for e in here)
        basis = f"median of {len(here)} measured run(s) of {arch.name} {prec.name} on {device_profile.name}"
        exact = [
            e["decode_tokens_per_s"]
            for e in here
            if e["context_tokens"] == context_tokens and e["batch_size"] == batch_size
        ]
        measured = statistics.median(exact) if exact else None
    elif same:
        efficiency = statistics.median(e["efficiency"] for e in same)
        devices = sorted({e["device"] for e in same})
        basis = f"median of {len(same)} measured run(s) of {arch.name} {prec.name} on {', '.join(devices)}"
    predicted = ceiling * efficiency if efficiency is not None else ceiling
    return SpeedPrediction(
        model=arch.name,
        precision=prec.name,
        device=device_profile.name,
        context_tokens=context_tokens,
        batch_size=batch_size,
        new_tokens=new_tokens,
        bytes_per_step=per_step,
        bandwidth_bytes_per_s=device_profile.bandwidth_bytes_per_s,
        bandwidth_basis=device_profile.bandwidth_basis,
        ceiling_tokens_per_s=ceiling,
        efficiency=efficiency,
        efficiency_basis=basis,
        predicted_tokens_per_s=predicted,
        label="predicted" if efficiency is not None else "ceiling",
        measured_tokens_per_s=measured,
    )


def claims_predictor(gpu: HardwareProfile | None = None) -> Any:
    """A ``predict(spec) -> bytes | None`` for the claims verdicts: the predicted peak of a case spec on
    ``gpu`` (None: a generic CUDA GPU), or None when the spec cannot be predicted."""

    def predict(spec: Any) -> int | None:
        try:
            return predict_memory(
                spec.model,
                spec.precision,
                spec.context_tokens,
                spec.batch_size,
                spec.new_tokens,
                gpu,
                attn_implementation=spec.attn_implementation,
            ).total_bytes
        except BadInputError:
            return None

    return predict
