"""Activations and workspace: the short-lived tensors of one forward pass, stage by stage.

The stages follow the order in which transformers' Phi-3/Llama and BERT code allocates and frees
tensors in one forward pass: inputs_embeds and the layer input stay alive, the MLP holds gate_up, act
and product at once, SDPA with flash/memory-efficient kernels never builds the L x L matrix (eager
attention does), generate computes logits for the last token only, then an fp32 copy. Each linear
layer adds the temporary buffers of its matmul: 4-bit prefill dequantizes a whole weight (on CUDA,
up to 4 rows run a fused kernel instead); LLM.int8 holds an int32 product; on a CPU without AVX-512,
int8 matmuls run in float32. A phase's peak is its largest stage.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bench.config.hardware import HardwareProfile
from bench.config.precision import Precision
from bench.predict.architecture import Architecture, LinearLayer
from bench.predict.weights import BLOCKSIZE_4BIT

GEMV_4BIT_MAX_ROWS = 4  # on CUDA, bitsandbytes runs 4-bit matmuls of up to 4 rows without dequantizing

Stages = list[tuple[str, int]]
LinearPeak = Callable[[LinearLayer], int]


@dataclass(frozen=True)
class DeviceTraits:
    """What the activation model needs to know of a device."""

    kind: str  # "cuda" | "cpu"
    cpu_avx512: bool = False


def device_traits(profile: HardwareProfile | None) -> DeviceTraits:
    """The traits of a profile's device: None is a generic CUDA GPU; a CPU has AVX-512 if measured so."""
    if profile is None or profile.kind == "cuda":
        return DeviceTraits("cuda")
    capability = (profile.measured.cpu_capability if profile.measured else None) or ""
    return DeviceTraits("cpu", cpu_avx512="512" in capability.upper())


@dataclass(frozen=True)
class Transient:
    """The largest set of short-lived tensors in a phase: bytes and where it happens."""

    bytes: int
    stage: str


def linear_peak(lin: LinearLayer, rows: int, precision: Precision, traits: DeviceTraits, act: int) -> int:
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


def logits_bytes(arch: Architecture, b: int, act: int) -> int:
    """generate's last-token logits, their float32 copy and the logits processors' copies and masks.

    The per-vocabulary part (an int64 arange, an isin mask and its sort buffers) was measured with the
    torch profiler on CPU runs of generate (MinNewTokensLengthLogitsProcessor).
    """
    return b * arch.vocab * (act + 12) + arch.vocab * 28


def _max_stage(stages: Iterable[tuple[str, int]]) -> Transient:
    name, value = max(stages, key=lambda s: s[1])
    return Transient(int(value), name)


def _attention_workspace(arch: Architecture, b: int, length: int, act: int, attn: str) -> int:
    """SDPA's logsumexp (flash / memory-efficient kernels); eager attention adds scores, fp32 softmax, cast."""
    workspace = b * arch.heads * length * 4
    if attn == "eager":
        workspace += b * arch.heads * length * length * (act + 4 + act)
    return workspace


# --------------------------------------------------------------------------- decoder


def decoder_prefill(
    arch: Architecture, b: int, length: int, precision: Precision, traits: DeviceTraits, act: int, attn: str
) -> Transient:
    """Peak short-lived bytes of one prefill forward (the last layer, when the KV cache is complete)."""
    t = b * length
    h = arch.hidden
    peak = functools.partial(linear_peak, rows=t, precision=precision, traits=traits, act=act)
    # inputs_embeds, and rotary cos/sin per sequence (generate passes position ids for every sequence)
    base = t * h * act + 2 * t * arch.head_dim * act
    sdpa_ws = _attention_workspace(arch, b, length, act, attn)
    if arch.sliding_window and length > arch.sliding_window:
        base += b * length * length  # a boolean sliding-window mask, held through the forward
        if attn == "sdpa":  # SDPA turns a boolean mask into an additive one in the compute dtype, per call
            sdpa_ws += b * length * length * act
    if arch.num_layers > 1:
        base += t * h * act  # the layer's input, held by the caller
    norm_tmp = t * h * 8  # RMSNorm: float32 copy and normalised float32 tensor
    stages: Stages = [("input norm", base + norm_tmp + t * h * act)]
    stages += _decoder_attention_stages(arch, t, act, base, sdpa_ws, peak)
    stages.append(("post-attention norm", base + t * h * act + norm_tmp + t * h * act))
    stages += _decoder_mlp_stages(arch, t, act, base + 2 * t * h * act, peak)  # residual + normed MLP input
    stages.append(("final norm", t * h * act * 2 + norm_tmp))
    stages.append(("logits", t * h * act + logits_bytes(arch, b, act)))
    return _max_stage(stages)


def _decoder_attention_stages(
    arch: Architecture, t: int, act: int, base: int, sdpa_ws: int, peak: LinearPeak
) -> Stages:
    """The attention block's stages: q/k/v projections, rotary embedding, attention, o projection."""
    q, kvd = arch.q_dim, arch.kv_dim
    normed = t * arch.hidden * act
    stages: Stages = []
    qkv = arch.role("qkv")
    if qkv:
        qkv_bytes = t * qkv[0].out_features * act
        stages.append(("qkv projection", base + normed + peak(qkv[0])))
    else:
        parts = arch.role("q") + arch.role("k") + arch.role("v")
        qkv_bytes = sum(t * lin.out_features * act for lin in parts)
        running = 0
        for lin in parts:
            stages.append((f"{lin.role} projection", base + normed + running + peak(lin)))
            running += t * lin.out_features * act
    rope_q = base + normed + qkv_bytes + 3 * t * q * act
    rope_k = base + normed + qkv_bytes + t * q * act + 3 * t * kvd * act
    stages += [("rotary (q)", rope_q), ("rotary (k)", rope_k)]
    attn_live = base + normed + qkv_bytes + t * q * act
    stages.append(("attention", attn_live + 2 * t * q * act + sdpa_ws))
    for lin in arch.role("o"):
        stages.append(("o projection", attn_live + t * q * act + peak(lin)))
    return stages


def _decoder_mlp_stages(arch: Architecture, t: int, act: int, mlp_base: int, peak: LinearPeak) -> Stages:
    """The MLP's stages for a fused gated (Phi-3), gated (Llama) or plain (fc1/fc2) MLP."""
    inter = arch.intermediate
    if arch.mlp == "fused_gated":
        (up,) = arch.role("gate_up")[:1]
        (down,) = arch.role("down")[:1]
        return [
            ("MLP gate_up", mlp_base + peak(up)),
            ("MLP act x up", mlp_base + t * 4 * inter * act),
            ("MLP down", mlp_base + t * 3 * inter * act + peak(down)),
        ]
    if arch.mlp == "gated":
        gate, up, down = arch.role("gate")[0], arch.role("up")[0], arch.role("down")[0]
        return [
            ("MLP gate", mlp_base + peak(gate)),
            ("MLP act", mlp_base + 2 * t * inter * act),
            ("MLP up", mlp_base + t * inter * act + peak(up)),
            ("MLP act x up", mlp_base + 3 * t * inter * act),
            ("MLP down", mlp_base + t * inter * act + peak(down)),
        ]
    stages: Stages = []
    for lin in arch.role("fc1")[:1]:
        stages.append(("MLP fc1", mlp_base + peak(lin)))
        stages.append(("MLP act", mlp_base + 2 * t * lin.out_features * act))
    for lin in arch.role("fc2")[:1]:
        stages.append(("MLP fc2", mlp_base + t * inter * act + peak(lin)))
    return stages


def decoder_decode_step(arch: Architecture, b: int, precision: Precision, traits: DeviceTraits, act: int) -> int:
    """Short-lived bytes of one decode step besides the KV cache (linear workspace and logits)."""
    layers = max(
        (linear_peak(lin, b, precision, traits, act) for lin in arch.linears if lin.role != "head"), default=0
    )
    return max(layers + b * 4 * arch.hidden * act, logits_bytes(arch, b, act))


# --------------------------------------------------------------------------- encoder


def encoder_forward(
    arch: Architecture, b: int, length: int, precision: Precision, traits: DeviceTraits, act: int, attn: str
) -> Transient:
    """Peak bytes of one encoder forward pass (BERT-like: post-norm, separate q/k/v, plain MLP)."""
    t = b * length
    h, inter = arch.hidden, arch.intermediate
    peak = functools.partial(linear_peak, rows=t, precision=precision, traits=traits, act=act)
    base = t * h * act  # the embedding output, held by the model's forward
    if arch.num_layers > 1:
        base += t * h * act  # the layer input
    sdpa_ws = _attention_workspace(arch, b, length, act, attn)
    stages: Stages = [("embeddings", t * h * act * 5 + length * h * act)]
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
