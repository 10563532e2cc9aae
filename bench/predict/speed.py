"""Predict decode tokens/s on a device from its memory bandwidth.

Decode speed is bounded by memory bandwidth: every decode step reads every weight once plus the KV
cache, so the ceiling is batch x bandwidth / bytes read per step (the formula is
:func:`bench.results.metrics.decode_step_bytes`, the same one a record's roofline uses). A measured
roofline fraction (a record's ``decode_roofline_fraction``: floor time per token over measured TPOT) of
the same model, precision and engine turns the ceiling into a prediction labelled "calibrated on
<device>"; without one the answer is the ceiling, labelled so.
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
from bench.predict.kv_cache import cache_window, kv_bytes_per_token
from bench.predict.weights import weight_bytes
from bench.results.metrics import decode_step_bytes


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
    engine: str = "eager"  # the engine the efficiency was measured with (bench.config.spec.ENGINES)
    calibrated_on: str | None = None  # the device(s) whose records gave the efficiency

    @property
    def basis_text(self) -> str:
        """``calibrated on <device>`` where a measured fraction was applied, else ``bandwidth ceiling``."""
        return f"calibrated on {self.calibrated_on}" if self.calibrated_on else "bandwidth ceiling"

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
    """Bytes one decode step reads: every weight once (an untied input embedding only for the batch's rows)
    plus the KV cache at the mean length the timed steps read (the config's sliding window caps it)."""
    arch = architecture(model)
    prec = precision if isinstance(precision, Precision) else get_precision(precision)
    act = DTYPE_BYTES[runtime_dtype(prec, device)]
    weights = weight_bytes(arch, prec, device).total_bytes
    tied = any(lin.tied for lin in arch.linears)
    # a tied table is read whole by the head; an untied one only for the rows the step looks up
    weights_read = weights if tied else weights - arch.input_embedding_numel * act + batch_size * arch.hidden * act
    step = decode_step_bytes(
        weights_read,
        kv_bytes_per_token(arch, prec, device),
        batch_size,
        context_tokens,
        max(new_tokens, 2),
        cache_window(arch),
    )
    return int(step)


def _ceiling(
    model: Any, prec: Precision, context: int, batch: int, new: int, profile: HardwareProfile
) -> tuple[float, int]:
    per_step = decode_bytes_per_step(model, prec, context, batch, max(new, 2), profile.kind)
    return batch * profile.bandwidth_bytes_per_s / per_step, per_step


def _kind(device: str) -> str:
    return "cuda" if str(device).startswith("cuda") else "cpu"


def measured_efficiencies(records: Iterable[Any], profiles: Sequence[HardwareProfile]) -> list[dict[str, Any]]:
    """For each ok decode record: its measured fraction of the bandwidth roofline, per engine.

    A record that carries its roofline (``decode_roofline_fraction``: the bandwidth it was measured against is
    in the record) gives it directly; an older record on a device with a profile gives measured decode
    tokens/s over that profile's ceiling. ``device`` is the matching profile's name, else the record's.
    """
    rows = []
    for r in records:
        if getattr(r, "status", None) != "ok" or r.spec.scenario != "generate" or r.spec.new_tokens < 2:
            continue
        prof = find_profile(r.device_name, profiles) if r.device_name else None
        if prof is not None and prof.kind != _kind(r.device):
            prof = None
        roofline = getattr(r, "roofline", None)
        has_roofline = roofline is not None and roofline.memory_bandwidth_bytes_per_s
        if prof is None and not has_roofline:  # before the metrics: they are derived from the samples on every access
            continue
        m = r.metrics
        tps = m.get("decode_tokens_per_s")
        if not tps or not math.isfinite(tps):
            continue
        efficiency = m.get("decode_roofline_fraction")
        if efficiency is None:
            if prof is None:
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
            efficiency = float(tps) / ceiling
        rows.append(
            {
                "device": prof.name if prof is not None else r.device_name,
                "kind": _kind(r.device),
                "engine": getattr(r.spec, "engine", "eager"),
                "model": r.spec.model,
                "precision": r.spec.precision,
                "context_tokens": r.spec.context_tokens,
                "batch_size": r.spec.batch_size,
                "new_tokens": r.spec.new_tokens,
                "decode_tokens_per_s": float(tps),
                "efficiency": float(efficiency),
            }
        )
    return rows


@dataclass(frozen=True)
class Calibration:
    """A measured efficiency for a prediction, where it comes from, and the same case's measured speed."""

    efficiency: float | None = None
    basis: str | None = None
    calibrated_on: str | None = None
    measured_tokens_per_s: float | None = None


def _efficiency(
    effs: list[dict[str, Any]],
    model: str,
    precision: str,
    device: str,
    context_tokens: int,
    batch_size: int,
    engine: str = "eager",
    kind: str | None = None,
) -> Calibration:
    """The median fraction over records of this model, precision and engine on this device, else on other
    devices of the same kind (a CPU's fraction says nothing of a GPU's), else none."""
    same = [e for e in effs if e["model"] == model and e["precision"] == precision and e["engine"] == engine]
    here = [e for e in same if e["device"] == device]
    what = f"{model} {precision} ({engine})"
    if here:
        efficiency = statistics.median(e["efficiency"] for e in here)
        basis = f"calibrated on {device}: median roofline fraction of {len(here)} measured record(s) of {what}"
        exact = [
            e["decode_tokens_per_s"]
            for e in here
            if e["context_tokens"] == context_tokens and e["batch_size"] == batch_size
        ]
        return Calibration(efficiency, basis, device, statistics.median(exact) if exact else None)
    others = [e for e in same if kind is None or e["kind"] == kind]
    if others:
        efficiency = statistics.median(e["efficiency"] for e in others)
        devices = ", ".join(sorted({e["device"] for e in others}))
        basis = f"calibrated on {devices}: median roofline fraction of {len(others)} measured record(s) of {what}"
        return Calibration(efficiency, basis, devices)
    return Calibration()


def predict_decode(
    model: Any,
    precision: str | Precision,
    context_tokens: int,
    batch_size: int = 1,
    new_tokens: int = 64,
    device_profile: HardwareProfile | None = None,
    records: Iterable[Any] | None = None,
    profiles: Sequence[HardwareProfile] | None = None,
    engine: str = "eager",
) -> SpeedPrediction:
    """Predict decode tokens/s on a device: the bandwidth ceiling, times a measured roofline fraction if any.

    The fraction comes from ``records`` of the same model, precision and ``engine``: on this device first,
    then on other devices of its kind ("calibrated on <device>"); without one the answer is the ceiling.
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
    cal = _efficiency(
        effs, arch.name, prec.name, device_profile.name, context_tokens, batch_size, engine, device_profile.kind
    )
    predicted = ceiling * cal.efficiency if cal.efficiency is not None else ceiling
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
        efficiency=cal.efficiency,
        efficiency_basis=cal.basis,
        predicted_tokens_per_s=predicted,
        label="predicted" if cal.efficiency is not None else "ceiling",
        measured_tokens_per_s=cal.measured_tokens_per_s,
        engine=engine,
        calibrated_on=cal.calibrated_on,
    )
