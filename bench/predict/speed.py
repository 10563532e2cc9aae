"""Predict decode tokens/s on a device from its memory bandwidth.

Decode speed is bounded by memory bandwidth: every decode step reads every weight once plus the KV
cache, so the ceiling is batch x bandwidth / bytes read per step; an efficiency measured on real runs
(measured decode tokens/s over the same ceiling) turns the ceiling into a prediction. Without a
measured efficiency the answer is the ceiling, labelled so.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.config.hardware import HardwareProfile, find_profile
from bench.config.models import DECODER
from bench.config.precision import Precision, get_precision, runtime_dtype
from bench.errors import BadInputError
from bench.predict.architecture import DTYPE_BYTES, architecture, check_shape
from bench.predict.kv_cache import kv_bytes_per_token, mean_cache_tokens
from bench.predict.weights import weight_bytes


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
    kv = kv_bytes_per_token(arch, prec, device) * batch_size * mean_cache_tokens(context_tokens, new_tokens)
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


def _efficiency(
    effs: list[dict[str, Any]], model: str, precision: str, device: str, context_tokens: int, batch_size: int
) -> tuple[float | None, str | None, float | None]:
    """``(efficiency, its basis, the same case's measured tokens/s)``: the median over runs of this model
    and precision on this device, else on any device, else nothing."""
    same = [e for e in effs if e["model"] == model and e["precision"] == precision]
    here = [e for e in same if e["device"] == device]
    if here:
        efficiency = statistics.median(e["efficiency"] for e in here)
        basis = f"median of {len(here)} measured run(s) of {model} {precision} on {device}"
        exact = [
            e["decode_tokens_per_s"]
            for e in here
            if e["context_tokens"] == context_tokens and e["batch_size"] == batch_size
        ]
        return efficiency, basis, statistics.median(exact) if exact else None
    if same:
        efficiency = statistics.median(e["efficiency"] for e in same)
        devices = sorted({e["device"] for e in same})
        return efficiency, f"median of {len(same)} measured run(s) of {model} {precision} on {', '.join(devices)}", None
    return None, None, None


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
    check_shape(arch, context_tokens, batch_size, new_tokens)
    ceiling, per_step = _ceiling(model, prec, context_tokens, batch_size, new_tokens, device_profile)
    pool = list(profiles) if profiles is not None else [device_profile]
    if all(p.name != device_profile.name for p in pool):
        pool.append(device_profile)
    effs = measured_efficiencies(records or (), pool)
    efficiency, basis, measured = _efficiency(
        effs, arch.name, prec.name, device_profile.name, context_tokens, batch_size
    )
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
