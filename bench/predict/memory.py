"""Predict the peak memory of one generate (decoder) or encode (encoder) call on a device.

The method is analytic, from the architecture as transformers builds it (:mod:`.architecture`). The
peak is the sum of its terms, each computed in its own module: the weights (:mod:`.weights`), the KV
cache live at the peak (:mod:`.kv_cache`), the activations and workspace of the phase that peaks
(:mod:`.activations`: prefill, the last decode step, or an encoder's forward), and the fixed costs
and slack of the device (:mod:`.fixed_costs`). Every figure is a prediction, labelled so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bench.config.hardware import HardwareProfile
from bench.config.models import DECODER
from bench.config.precision import Precision, get_precision, runtime_dtype
from bench.predict.activations import (
    DeviceTraits,
    decoder_decode_step,
    decoder_prefill,
    device_traits,
    encoder_forward,
)
from bench.predict.architecture import DTYPE_BYTES, Architecture, architecture, check_shape
from bench.predict.fixed_costs import cpu_fixed_costs, cuda_fixed_costs
from bench.predict.kv_cache import concatenation_bytes, final_cache_tokens, kv_bytes_per_token
from bench.predict.weights import weight_bytes


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
class Peak:
    """The phase whose KV cache plus activations is largest, and the KV cache at the end of generation."""

    phase: str  # prefill | decode | encode
    stage: str
    kv_cache_bytes: int  # live at the peak
    activation_bytes: int  # live at the peak
    kv_cache_final_bytes: int

    @property
    def dynamic_bytes(self) -> int:
        """KV cache and activations live at the peak."""
        return self.kv_cache_bytes + self.activation_bytes


def decoder_peak(
    arch: Architecture,
    precision: Precision,
    traits: DeviceTraits,
    context_tokens: int,
    batch_size: int,
    new_tokens: int,
    attn_implementation: str = "sdpa",
) -> Peak:
    """The larger of prefill (prompt cache + prefill transients) and the last decode step (full cache, its
    concatenation copy and the step's transients)."""
    act = DTYPE_BYTES[runtime_dtype(precision, traits.kind)]
    kv_token = kv_bytes_per_token(arch, precision, traits.kind)
    prefill = decoder_prefill(arch, batch_size, context_tokens, precision, traits, act, attn_implementation)
    prefill_kv = kv_token * batch_size * context_tokens
    final_kv = kv_token * batch_size * final_cache_tokens(context_tokens, new_tokens)
    decode_act = concatenation_bytes(arch, final_kv) + decoder_decode_step(arch, batch_size, precision, traits, act)
    if new_tokens > 1 and final_kv + decode_act > prefill_kv + prefill.bytes:
        return Peak("decode", "last decode step", int(final_kv), int(decode_act), int(final_kv))
    return Peak("prefill", prefill.stage, int(prefill_kv), int(prefill.bytes), int(final_kv))


def encoder_peak(
    arch: Architecture,
    precision: Precision,
    traits: DeviceTraits,
    context_tokens: int,
    batch_size: int,
    attn_implementation: str = "sdpa",
) -> Peak:
    """One encoder forward pass: no KV cache, the forward's largest stage."""
    act = DTYPE_BYTES[runtime_dtype(precision, traits.kind)]
    enc = encoder_forward(arch, batch_size, context_tokens, precision, traits, act, attn_implementation)
    return Peak("encode", enc.stage, 0, int(enc.bytes), 0)


def prediction_notes(
    arch: Architecture, precision: Precision, profile: HardwareProfile | None, device_kind: str, context_tokens: int
) -> tuple[str, ...]:
    """Caveats of a prediction: unsupported dtypes or kernels on the card, int8 outliers, sliding-window masks."""
    notes: list[str] = []
    if device_kind == "cuda" and profile:
        if precision.dtype == "bfloat16" and profile.supports_bf16 is False:
            notes.append(
                f"{profile.name} has no native bf16 (compute capability "
                f"{profile.compute_capability}); expect it to be slow or unsupported"
            )
        if precision.quantized and (profile.compute_major or 0) < 7:
            notes.append("bitsandbytes needs compute capability 7.0 or newer for its GPU kernels")
    if precision.quant == "int8":
        notes.append("int8 with random weights: LLM.int8's outlier path rarely fires, real checkpoints may use more")
    if arch.family == DECODER and arch.sliding_window and context_tokens > arch.sliding_window:
        notes.append(f"context beyond the sliding window ({arch.sliding_window}) materialises a mask")
    return tuple(notes)


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
    check_shape(arch, context_tokens, batch_size, new_tokens)
    traits = device_traits(device_profile)
    device = traits.kind
    weights = weight_bytes(arch, prec, device)
    if arch.family == DECODER:
        peak = decoder_peak(arch, prec, traits, context_tokens, batch_size, new_tokens, attn_implementation)
    else:
        peak = encoder_peak(arch, prec, traits, context_tokens, batch_size, attn_implementation)
    if device == "cuda":
        costs = cuda_fixed_costs(arch, prec, device_profile, peak.dynamic_bytes)
    else:
        costs = cpu_fixed_costs(arch, prec, peak.dynamic_bytes)
    total = costs.context_bytes + weights.total_bytes + peak.dynamic_bytes + costs.slack_bytes
    return MemoryPrediction(
        model=arch.name,
        precision=prec.name,
        device=device_profile.name if device_profile else "generic CUDA GPU",
        device_kind=device,
        context_tokens=context_tokens,
        batch_size=batch_size,
        new_tokens=new_tokens,
        context_bytes=costs.context_bytes,
        weights_bytes=weights.total_bytes,
        weights_quantized_bytes=weights.quantized_bytes,
        weights_unquantized_bytes=weights.unquantized_bytes + weights.buffer_bytes,
        quant_state_bytes=weights.quant_state_bytes,
        kv_cache_bytes=peak.kv_cache_bytes,
        kv_cache_final_bytes=peak.kv_cache_final_bytes,
        activation_bytes=peak.activation_bytes,
        slack_bytes=costs.slack_bytes,
        total_bytes=int(total),
        peak_phase=peak.phase,
        peak_stage=peak.stage,
        device_memory_bytes=device_profile.memory_bytes if device_profile and device == "cuda" else None,
        notes=prediction_notes(arch, prec, device_profile, device, context_tokens),
        calibration={"context_bytes": costs.context_basis, "slack_bytes": costs.slack_basis},
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
