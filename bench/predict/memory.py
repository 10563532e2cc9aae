"""Predict the peak memory of one generate (decoder) or encode (encoder) call on a device.

The method is analytic, from the architecture as transformers builds it (:mod:`.architecture`). The
peak is the sum of its terms, each computed in its own module: the weights (:mod:`.weights`), the KV
cache live at the peak (:mod:`.kv_cache`), the activations and workspace of the phase that peaks
(:mod:`.activations`: prefill, the last decode step, or an encoder's forward), and the fixed costs
and slack of the device (:mod:`.fixed_costs`). Every figure is a prediction, labelled so.
"""

from __future__ import annotations

import dataclasses
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
from bench.predict.bnb_kernels import CUDA_FUSED_FLOOR_ROWS, CUDA_FUSED_MAX_ROWS, READ_FROM
from bench.predict.fixed_costs import cpu_fixed_costs, cuda_fixed_costs
from bench.predict.kv_cache import (
    cache_window,
    concatenation_bytes,
    final_cache_tokens,
    kv_bytes_per_token,
    windowed_step_tokens,
)
from bench.predict.user_view import loading_fields
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
    kv_cache_final_bytes: int  # at the end of generation: kv_cache_tokens per layer and sequence
    activation_bytes: int  # activations and workspace live at the peak
    slack_bytes: int  # allocator rounding and fragmentation
    total_bytes: int
    peak_phase: str
    peak_stage: str
    device_memory_bytes: int | None = None  # the card's box size
    notes: tuple[str, ...] = ()
    calibration: dict[str, str] = field(default_factory=dict)
    label: str = "predicted"
    kv_cache_tokens: int = 0  # tokens per layer and sequence the cache holds at the end (W - 1 at most with a window)
    cache_policy: str | None = None  # "window" | "full" for decoders (None: encoders)
    cache_window_tokens: int | None = None  # the sliding window applied, None when every token is kept
    device_usable_bytes: int | None = None  # what the driver reports as the card's total (see usable_source)
    usable_source: str | None = None  # "measured: ...", "cited: ..." or "assumed: ..."
    # the loading phase and the user's view (bench.predict.user_view); None on a CPU
    load_peak_bytes: int | None = None  # context + live peak while loading
    load_peak_tensor: str | None = None  # the tensor being loaded at that peak
    fit_bytes: int = 0  # context + the larger live peak (loading, generation) + slack: what fit is judged on
    nvidia_smi_bytes: int | None = None  # context + the allocator's pool after loading and one generation
    pool_after_load_bytes: int | None = None  # the allocator's reserved bytes right after loading
    nvidia_smi_note: str | None = None  # why the nvidia-smi figure is capped or keeps growing

    @property
    def fits(self) -> bool | None:
        """True when the predicted fit figure (live peak over loading and generation) fits the card's usable
        memory; None without a card."""
        return None if self.device_usable_bytes is None else self.fit_bytes <= self.device_usable_bytes

    @property
    def margin_bytes(self) -> int | None:
        """Usable memory minus the predicted fit figure (negative: does not fit)."""
        return None if self.device_usable_bytes is None else self.device_usable_bytes - self.fit_bytes

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
    """The larger of prefill (prompt cache + prefill transients) and the worst decode step (cache, the
    step's copy of one layer and its transients); ``arch.sliding_window`` is the window the cache applies.

    The prefill holds every layer's K/V for the whole prompt with or without a window (a sliding-window
    layer keeps a view of the full concatenation until the first decode step, see :mod:`.kv_cache`).
    """
    act = DTYPE_BYTES[runtime_dtype(precision, traits.kind)]
    kv_token = kv_bytes_per_token(arch, precision, traits.kind)
    window = arch.sliding_window
    prefill = decoder_prefill(arch, batch_size, context_tokens, precision, traits, act, attn_implementation)
    prefill_kv = kv_token * batch_size * context_tokens
    final_kv = kv_token * batch_size * final_cache_tokens(context_tokens, new_tokens, window)
    step_act = decoder_decode_step(arch, batch_size, precision, traits, act)
    if window is None:
        decode_kv, decode_act, stage = final_kv, concatenation_bytes(arch, final_kv) + step_act, "last decode step"
    else:
        per_layer_token = kv_token * batch_size // max(arch.num_layers, 1)
        cache, extra = windowed_step_tokens(arch.num_layers, context_tokens, new_tokens, window)
        decode_kv, decode_act = per_layer_token * cache, per_layer_token * extra + step_act
        stage = "first decode step (the window drops the prompt)" if context_tokens >= window else "last decode step"
    if new_tokens > 1 and decode_kv + decode_act > prefill_kv + prefill.bytes:
        return Peak("decode", stage, int(decode_kv), int(decode_act), int(final_kv))
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


def four_bit_notes(precision: Precision, traits: DeviceTraits) -> tuple[str, ...]:
    """Which bitsandbytes 4-bit path the prediction follows, read from which source, and where it is a guess."""
    if precision.quant not in ("nf4", "fp4"):
        return ()
    notes = [f"bitsandbytes 4-bit path: {traits.bnb_4bit_path} (as read from the {READ_FROM} source)"]
    if traits.path_assumed:
        notes.append(traits.path_assumed)
    if traits.kind == "cuda":
        notes.append(
            f"CUDA fused 4-bit kernel for up to {CUDA_FUSED_FLOOR_ROWS} rows, dequantized weight above "
            f"{CUDA_FUSED_MAX_ROWS}; between, {READ_FROM}'s rule by GPU architecture and SM count, not yet "
            "confirmed on a GPU"
            + ("" if traits.sm_count else " (SM count unknown: the dequantized weight assumed where the rule needs it)")
        )
    return tuple(notes)


def cache_architecture(arch: Architecture, cache: str = "config") -> Architecture:
    """The architecture as a cache policy runs it: ``full`` removes the sliding window (mask and cache)."""
    window = cache_window(arch, cache)
    return arch if window == arch.sliding_window else dataclasses.replace(arch, sliding_window=window)


def _cache_fields(arch: Architecture, context_tokens: int, new_tokens: int) -> dict[str, Any]:
    if arch.family != DECODER:
        return {"kv_cache_tokens": 0, "cache_policy": None, "cache_window_tokens": None}
    window = arch.sliding_window
    return {
        "kv_cache_tokens": final_cache_tokens(context_tokens, new_tokens, window),
        "cache_policy": "full" if window is None else "window",
        "cache_window_tokens": window,
    }


def predict_memory(
    model: Any,
    precision: str | Precision,
    context_tokens: int,
    batch_size: int = 1,
    new_tokens: int = 0,
    device_profile: HardwareProfile | None = None,
    *,
    attn_implementation: str = "sdpa",
    cache: str = "config",
    bnb_4bit_path: str | None = None,
    first_call: bool = True,
    nvidia_smi: bool = True,
) -> MemoryPrediction:
    """Predict the peak memory of one generate (decoder) or encode (encoder) call.

    ``model`` is a registered name or a transformers config; ``device_profile`` None means a generic
    CUDA GPU (assumed context, no card limit); a ``cpu`` profile predicts the host process's growth.
    ``cache`` is the KV-cache policy (``config``, ``window`` or ``full``: the window removed). A card's
    fit is judged against its usable memory (``device_usable_bytes``), its box size shown beside it, on
    ``fit_bytes`` (loading included, :mod:`.user_view`); ``nvidia_smi=False`` skips the replay of the
    generation that ``nvidia_smi_bytes`` needs (the figure is then None).
    ``bnb_4bit_path`` is bitsandbytes' CPU 4-bit path (``cpu-avx512bf16-packed`` or ``cpu-dequantize``) where known,
    for a record's own path or a forced switch; else the profile's CPU decides (:func:`.activations.device_traits`).
    ``first_call``: the call is the first after loading (bitsandbytes' CPU AVX512-BF16 path then repacks each
    4-bit layer in its first forward); False predicts a model that has run before, as a warmed-up timed region.
    """
    arch = cache_architecture(architecture(model), cache)
    prec = precision if isinstance(precision, Precision) else get_precision(precision)
    check_shape(arch, context_tokens, batch_size, new_tokens)
    traits = dataclasses.replace(device_traits(device_profile, bnb_4bit_path), repack_on_call=first_call)
    device = traits.kind
    weights = weight_bytes(arch, prec, device, packed=prec.quant in ("nf4", "fp4") and traits.packed_4bit)
    if arch.family == DECODER:
        peak = decoder_peak(arch, prec, traits, context_tokens, batch_size, new_tokens, attn_implementation)
    else:
        peak = encoder_peak(arch, prec, traits, context_tokens, batch_size, attn_implementation)
    if device == "cuda":
        costs = cuda_fixed_costs(arch, prec, device_profile, peak.dynamic_bytes)
    else:
        costs = cpu_fixed_costs(arch, prec, peak.dynamic_bytes)
    total = costs.context_bytes + weights.total_bytes + peak.dynamic_bytes + costs.slack_bytes
    card = device_profile if device_profile is not None and device == "cuda" else None
    loading = loading_fields(
        arch,
        prec,
        peak,
        costs.context_bytes,
        int(total),
        context_tokens,
        batch_size,
        new_tokens,
        device,
        card,
        nvidia_smi,
    )
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
        device_memory_bytes=card.memory_bytes if card else None,
        notes=prediction_notes(arch, prec, device_profile, device, context_tokens) + four_bit_notes(prec, traits),
        calibration={"context_bytes": costs.context_basis, "slack_bytes": costs.slack_basis},
        device_usable_bytes=card.usable_memory_bytes if card else None,
        usable_source=card.usable_source if card else None,
        **_cache_fields(arch, context_tokens, new_tokens),
        **loading,
    )


def largest_batch(
    model: Any,
    precision: str | Precision,
    context_tokens: int,
    new_tokens: int,
    device_profile: HardwareProfile,
    limit: int = 4096,
    *,
    cache: str = "config",
) -> int:
    """The largest batch whose predicted fit figure (loading included) fits the card's usable memory (0 when
    even one sequence does not)."""

    def fits(b: int) -> bool:
        pred = predict_memory(
            model, precision, context_tokens, b, new_tokens, device_profile, cache=cache, nvidia_smi=False
        )
        return pred.fit_bytes <= device_profile.usable_memory_bytes

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
