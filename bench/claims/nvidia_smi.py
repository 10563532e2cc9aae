"""Beside each verdict: what nvidia-smi would show for the process, and why it differs from the fit figure.

A verdict is judged on the live peak over loading and generation plus the memory outside the allocator
(:func:`bench.results.metrics.measured_fit_bytes`, or the predictor's ``fit_bytes``). nvidia-smi shows
something else: the caching allocator's whole pool, which keeps the blocks freed while loading
(bitsandbytes quantizes each 16-bit weight on the device) and while generating, plus the CUDA context.
Both are true; the verdict names each. The nvidia-smi figure is the record's user view when it has one
(NVML process reading after the load and one generation, no clean-up: "measured"), else the injected
predictor's (``predict(spec) -> bytes | None``: "predicted").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.results.metrics import measured_nvidia_smi_bytes
from bench.results.record import Record
from bench.units import fmt_mib

MEASURED = "measured"
PREDICTED = "predicted"
SOURCE_LABELS = {
    MEASURED: "measured: NVML process reading after loading and one generation, no clean-up (user view)",
    PREDICTED: "predicted: after loading and one generation, no clean-up",
}
# Why a card's own nvidia-smi line can show more than any per-process figure: said once, in the report's legend.
CARD_LEVEL_WORDS = (
    "nvidia-smi's device line adds what other processes hold (a desktop's compositor and browser on a "
    "display card) to this process's reading; the driver's own reservation is outside the card's reported "
    "total, which the real-card line judges against."
)


@dataclass(frozen=True)
class NvidiaSmiView:
    """nvidia-smi's reading for the process (``bytes``), whether it was measured or predicted, and why it
    differs from the fit figure the verdict is judged on."""

    bytes: int | None
    source: str | None  # MEASURED | PREDICTED | None (neither)
    why: str = ""

    @property
    def text(self) -> str:
        """ "nvidia-smi would show 6,279 MiB (measured)"; "" when unknown."""
        if self.bytes is None:
            return ""
        verb = "showed" if self.source == MEASURED else "would show"
        return f"nvidia-smi {verb} {fmt_mib(self.bytes)} MiB ({self.source})"


def _measured_why(record: Record, smi: int, fit: int | None) -> str:
    view = record.user_view
    pool, live = view.reserved_after_bytes, view.peak_allocated_bytes
    parts = []
    if fit is not None:
        parts.append(f"{fmt_mib(smi - fit, True)} MiB against the fit figure")
    if pool is not None and live is not None:
        parts.append(
            f"the allocator's pool after the generation is {fmt_mib(pool)} MiB where its live peak over loading "
            f"and generation was {fmt_mib(live)} MiB: {fmt_mib(pool - live)} MiB are cached blocks freed while "
            "loading and generating, which nvidia-smi counts and an allocation that needs them gets back"
        )
    outside = smi - pool if pool is not None else None
    if outside is not None:
        parts.append(f"{fmt_mib(outside)} MiB outside the allocator (CUDA context, libraries)")
    return "; ".join(parts)


def _predicted_why(smi: int, fit: int | None) -> str:
    cache = (
        "the allocator's cache of blocks freed while loading (16-bit weights quantized on the device) and "
        "generating, which nvidia-smi counts and the fit figure leaves out"
    )
    if fit is None:
        return f"nvidia-smi counts {cache}"
    if smi == fit:
        return "the same as the predicted fit figure: this prediction does not model " + cache
    if smi > fit:
        return f"{fmt_mib(smi - fit, True)} MiB against the predicted fit figure: {cache}"
    return f"{fmt_mib(smi - fit, True)} MiB against the predicted fit figure, whose slack exceeds {cache}"


def nvidia_smi_view(
    record: Record | None,
    spec: Any,
    fit_bytes: int | None,
    predict: Callable[[Any], int | None] | None,
    *,
    measured_on_gpu: bool,
) -> NvidiaSmiView:
    """The nvidia-smi figure beside a verdict at ``spec`` (judged on ``fit_bytes``): the record's user view
    when it is a GPU record with one, else ``predict(spec)`` for a CUDA device, labelled; else unknown."""
    smi = measured_nvidia_smi_bytes(record) if record is not None and measured_on_gpu else None
    if smi is not None:
        return NvidiaSmiView(smi, MEASURED, _measured_why(record, smi, fit_bytes))  # type: ignore[arg-type]
    predicted = predict(spec.with_(device="cuda")) if predict is not None else None
    if predicted is None:
        return NvidiaSmiView(None, None)
    # a predicted nvidia-smi beside a measured fit: the difference mixes a prediction and a measurement
    return NvidiaSmiView(
        int(predicted), PREDICTED, _predicted_why(int(predicted), None if measured_on_gpu else fit_bytes)
    )
