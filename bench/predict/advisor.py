"""The purchase advisor: for every GPU profile, which model x precision x context fits, and how fast it decodes.

Everything here is a prediction (:mod:`bench.predict.memory`, :mod:`bench.predict.speed`) unless a record
measured on that card says otherwise; measured figures are kept beside the predicted ones, never instead of
them silently. The advisor decides; :mod:`bench.report.advice` draws its table, plot and Markdown.
"Context" here is the window the KV cache fills: a prompt of ``context - new_tokens`` tokens plus
``new_tokens`` generated ones (an encoder reads ``context`` tokens).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.config.hardware import HardwareProfile, find_profile
from bench.config.models import DECODER
from bench.config.precision import get_precision
from bench.errors import BadInputError
from bench.predict.architecture import architecture
from bench.predict.memory import predict_memory
from bench.predict.speed import predict_decode
from bench.results.quality import measured_kl_by_precision

DEFAULT_HEADROOM = 0.05  # the predictor's accuracy target: a card within this of the peak is "tight"
FITS, TIGHT, NO = "fits", "tight", "no"


@dataclass(frozen=True)
class Requirement:
    """What a buyer needs: a model, allowed precisions, a context window and a minimum decode speed."""

    model: str
    context_tokens: int
    precisions: tuple[str, ...] = ()
    min_tokens_per_s: float | None = None
    batch_size: int = 1
    new_tokens: int = 64
    max_kl_nats: float | None = None  # the highest measured mean KL from the reference precision (bench run --quality)

    def describe(self) -> str:
        """A one-line statement of the requirement."""
        parts = [self.model, f"{self.context_tokens} context"]
        if self.precisions:
            parts.append("/".join(self.precisions))
        if self.batch_size != 1:
            parts.append(f"batch {self.batch_size}")
        if self.min_tokens_per_s:
            parts.append(f"at least {self.min_tokens_per_s:g} tokens/s")
        if self.max_kl_nats is not None:
            parts.append(f"measured KL at most {self.max_kl_nats:g} nats")
        return ", ".join(parts)


@dataclass(frozen=True)
class Fit:
    """One card x model x precision x context: the predicted peak against the card, and decode speed."""

    gpu: str
    memory_bytes: int  # the box size
    bandwidth_bytes_per_s: float
    price_usd: float | None
    model: str
    precision: str
    context_tokens: int
    prompt_tokens: int
    new_tokens: int
    batch_size: int
    predicted_peak_bytes: int  # the predicted fit figure: live peak over loading and generation + context + slack
    margin_bytes: int  # usable memory minus the predicted peak
    verdict: str  # fits | tight | no, against the usable memory
    tokens_per_s: float | None  # predicted (efficiency applied) or the ceiling; None for encoders
    speed_label: str | None  # "predicted" | "ceiling"
    measured_tokens_per_s: float | None = None
    measured_peak_bytes: int | None = None
    notes: tuple[str, ...] = ()
    usable_bytes: int | None = None  # what the driver reports as the card's total (None: the box size)
    usable_source: str = ""  # "measured: ...", "cited: ..." or "assumed: ..."
    engine: str = "eager"  # the engine the speed is for (bench.config.spec.ENGINES)
    speed_basis: str | None = None  # "calibrated on <device>" or "bandwidth ceiling"; None for encoders
    # mean KL divergence (nats) of this precision from the model's reference precision, measured (bench run
    # --quality, the worst of the records given); None where no record measured it
    kl_mean_nats: float | None = None

    def within_kl(self, max_kl_nats: float | None) -> bool:
        """True without a limit, or when a measured KL is at most ``max_kl_nats`` (an unmeasured one never is)."""
        return max_kl_nats is None or (self.kl_mean_nats is not None and self.kl_mean_nats <= max_kl_nats)

    @property
    def fits(self) -> bool:
        """True when the predicted peak fits (including tight fits)."""
        return self.verdict != NO

    def meets(self, min_tokens_per_s: float | None) -> bool:
        """True when it fits and its (predicted or ceiling) speed reaches ``min_tokens_per_s``."""
        if not self.fits:
            return False
        if not min_tokens_per_s:
            return True
        # with no measured efficiency the speed is a bandwidth ceiling: it rules cards out, and a card it
        # admits is reported as "meets the speed only if it reaches its ceiling" (see describe_pick)
        return self.tokens_per_s is not None and self.tokens_per_s >= min_tokens_per_s

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        out = asdict(self)
        out["notes"] = list(self.notes)
        return out


def split_context(model: Any, context_tokens: int, new_tokens: int) -> tuple[int, int]:
    """``(prompt tokens, new tokens)`` that fill a window of ``context_tokens``; errors name the model's limit.

    ``model`` is a registered name or a transformers config (any model, :mod:`bench.config.config_only`)."""
    arch = architecture(model)
    limit = arch.max_positions
    if context_tokens > limit:
        raise BadInputError(
            f"context {context_tokens} exceeds {arch.name}'s maximum of {limit} tokens; use --context {limit} or less"
        )
    if arch.family != DECODER:
        return context_tokens, 0
    if new_tokens >= context_tokens:
        raise BadInputError(
            f"context {context_tokens} leaves no room for a prompt before {new_tokens} new tokens; "
            "use a larger --context or fewer --new-tokens"
        )
    return context_tokens - new_tokens, new_tokens


def _verdict(peak: int, memory: int, headroom: float) -> str:
    if peak * (1 + headroom) <= memory:
        return FITS
    return TIGHT if peak <= memory else NO


def _measured_peaks(records: Iterable[Any]) -> dict[tuple[str, str, str, int, int, int], int]:
    """Median NVML process peak per (device name, model, precision, prompt, new tokens, batch) of GPU records."""
    groups: dict[tuple[str, str, str, int, int, int], list[int]] = {}
    for r in records:
        peak = r.memory.nvml_process_peak_bytes
        if r.status != "ok" or not peak or not str(r.device).startswith("cuda"):
            continue
        s = r.spec
        key = (r.device_name, s.model, s.precision, s.context_tokens, s.new_tokens, s.batch_size)
        groups.setdefault(key, []).append(int(peak))
    return {k: int(statistics.median(v)) for k, v in groups.items()}


def _measured_peak(
    peaks: dict[tuple[str, str, str, int, int, int], int], gpu: HardwareProfile, case: tuple[str, str, int, int, int]
) -> int | None:
    """The measured peak of ``(model, precision, prompt, new tokens, batch)`` on this card (the last match)."""
    measured_peak = None
    for (dev, *rest), value in peaks.items():
        if tuple(rest) == case and find_profile(dev, [gpu]) is not None:
            measured_peak = value
    return measured_peak


def advise(
    profiles: Sequence[HardwareProfile],
    models: Sequence[str],
    precisions: Sequence[str],
    contexts: Sequence[int],
    *,
    batch_size: int = 1,
    new_tokens: int = 64,
    records: Sequence[Any] = (),
    headroom: float = DEFAULT_HEADROOM,
    engine: str = "eager",
) -> list[Fit]:
    """Every GPU profile x model x precision x context: predicted fit against the card's usable memory
    (:attr:`~bench.config.hardware.HardwareProfile.usable_memory_bytes`) and decode speed (and measured, if any).

    The speed is ``engine``'s: the ceiling scaled by that engine's measured roofline fraction where a record
    has one ("calibrated on <device>"), else the ceiling itself."""
    for p in precisions:
        get_precision(p)
    records = list(records)
    peaks = _measured_peaks(records)
    kl = measured_kl_by_precision(records)
    fits: list[Fit] = []
    gpus = [p for p in profiles if p.kind == "cuda"]
    if not gpus:
        raise BadInputError("no GPU profiles to advise on; check --profiles")
    for model in models:
        arch = architecture(model)
        family, name = arch.family, arch.name
        for context in contexts:
            prompt, new = split_context(model, context, new_tokens)
            for precision in precisions:
                for gpu in gpus:
                    mem = predict_memory(model, precision, prompt, batch_size, new, gpu, nvidia_smi=False)
                    usable = gpu.usable_memory_bytes
                    speed = None
                    if family == DECODER:
                        speed = predict_decode(
                            model, precision, prompt, batch_size, new, gpu, records, profiles, engine=engine
                        )
                    fits.append(
                        Fit(
                            gpu=gpu.name,
                            memory_bytes=gpu.memory_bytes,
                            bandwidth_bytes_per_s=gpu.bandwidth_bytes_per_s,
                            price_usd=gpu.price_usd,
                            model=name,
                            precision=precision,
                            context_tokens=context,
                            prompt_tokens=prompt,
                            new_tokens=new,
                            batch_size=batch_size,
                            predicted_peak_bytes=mem.fit_bytes,
                            margin_bytes=usable - mem.fit_bytes,
                            verdict=_verdict(mem.fit_bytes, usable, headroom),
                            tokens_per_s=speed.predicted_tokens_per_s if speed else None,
                            speed_label=speed.label if speed else None,
                            measured_tokens_per_s=speed.measured_tokens_per_s if speed else None,
                            measured_peak_bytes=_measured_peak(peaks, gpu, (name, precision, prompt, new, batch_size)),
                            notes=mem.notes,
                            usable_bytes=usable,
                            usable_source=gpu.usable_source,
                            engine=engine,
                            speed_basis=speed.basis_text if speed else None,
                            kl_mean_nats=kl.get((name, precision)),
                        )
                    )
    return fits


def _rank_key(fit: Fit, by_price: bool) -> tuple[float, ...]:
    if by_price:
        return (float(fit.price_usd or math.inf), fit.memory_bytes, fit.bandwidth_bytes_per_s)
    return (fit.memory_bytes, fit.bandwidth_bytes_per_s)


def cheapest(fits: Sequence[Fit], requirement: Requirement) -> Fit | None:
    """The cheapest card (by ``price_usd`` when every candidate has one, else the smallest memory, then the
    lowest bandwidth) on which an allowed precision fits and reaches the required speed.

    Among the precisions that qualify on that card, the fastest is returned.
    """
    allowed = set(requirement.precisions) if requirement.precisions else None
    candidates = [
        f
        for f in fits
        if f.model == requirement.model
        and f.context_tokens == requirement.context_tokens
        and f.batch_size == requirement.batch_size
        and (allowed is None or f.precision in allowed)
        and f.meets(requirement.min_tokens_per_s)
        and f.within_kl(requirement.max_kl_nats)
    ]
    if not candidates:
        return None
    by_price = all(f.price_usd is not None for f in candidates)
    best_key = min(_rank_key(f, by_price) for f in candidates)
    on_card = [f for f in candidates if _rank_key(f, by_price) == best_key]
    return max(on_card, key=lambda f: (f.verdict == FITS, f.tokens_per_s or 0.0))


def fits_frame(fits: Sequence[Fit]) -> Any:
    """The fits as a pandas DataFrame (one row each)."""
    import pandas as pd

    return pd.DataFrame([f.to_dict() for f in fits])
