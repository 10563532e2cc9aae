"""The purchase advisor: for every GPU profile, which model x precision x context fits, and how fast it decodes.

Everything here is a prediction (``bench.predict.predictor``) unless a record measured on that card says
otherwise; measured figures are shown beside the predicted ones, never instead of them silently.
"Context" here is the window the KV cache fills: a prompt of ``context - new_tokens`` tokens plus
``new_tokens`` generated ones (an encoder reads ``context`` tokens).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.config.hardware import HardwareProfile, find_profile
from bench.config.models import DECODER, get_model
from bench.config.precision import get_precision
from bench.errors import BadInputError
from bench.predict.predictor import predict_decode, predict_memory
from bench.units import GiB

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

    def describe(self) -> str:
        """A one-line statement of the requirement."""
        parts = [self.model, f"{self.context_tokens} context"]
        if self.precisions:
            parts.append("/".join(self.precisions))
        if self.batch_size != 1:
            parts.append(f"batch {self.batch_size}")
        if self.min_tokens_per_s:
            parts.append(f"at least {self.min_tokens_per_s:g} tokens/s")
        return ", ".join(parts)


@dataclass(frozen=True)
class Fit:
    """One card x model x precision x context: the predicted peak against the card, and decode speed."""

    gpu: str
    memory_bytes: int
    bandwidth_bytes_per_s: float
    price_usd: float | None
    model: str
    precision: str
    context_tokens: int
    prompt_tokens: int
    new_tokens: int
    batch_size: int
    predicted_peak_bytes: int
    margin_bytes: int
    verdict: str  # fits | tight | no
    tokens_per_s: float | None  # predicted (efficiency applied) or the ceiling; None for encoders
    speed_label: str | None  # "predicted" | "ceiling"
    measured_tokens_per_s: float | None = None
    measured_peak_bytes: int | None = None
    notes: tuple[str, ...] = ()

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


def split_context(model: str, context_tokens: int, new_tokens: int) -> tuple[int, int]:
    """``(prompt tokens, new tokens)`` that fill a window of ``context_tokens``; errors name the model's limit."""
    entry = get_model(model)
    limit = entry.max_positions
    if context_tokens > limit:
        raise BadInputError(
            f"context {context_tokens} exceeds {model}'s maximum of {limit} tokens; use --context {limit} or less"
        )
    if entry.family != DECODER:
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
) -> list[Fit]:
    """Every GPU profile x model x precision x context: predicted fit and decode speed (and measured, if any)."""
    for p in precisions:
        get_precision(p)
    records = list(records)
    peaks = _measured_peaks(records)
    fits: list[Fit] = []
    gpus = [p for p in profiles if p.kind == "cuda"]
    if not gpus:
        raise BadInputError("no GPU profiles to advise on; check --profiles")
    for model in models:
        family = get_model(model).family
        for context in contexts:
            prompt, new = split_context(model, context, new_tokens)
            for precision in precisions:
                for gpu in gpus:
                    mem = predict_memory(model, precision, prompt, batch_size, new, gpu)
                    speed = None
                    if family == DECODER:
                        speed = predict_decode(model, precision, prompt, batch_size, new, gpu, records, profiles)
                    measured_peak = None
                    for (dev, *rest), value in peaks.items():
                        if (
                            tuple(rest) == (model, precision, prompt, new, batch_size)
                            and find_profile(dev, [gpu]) is not None
                        ):
                            measured_peak = value
                    fits.append(
                        Fit(
                            gpu=gpu.name,
                            memory_bytes=gpu.memory_bytes,
                            bandwidth_bytes_per_s=gpu.bandwidth_bytes_per_s,
                            price_usd=gpu.price_usd,
                            model=model,
                            precision=precision,
                            context_tokens=context,
                            prompt_tokens=prompt,
                            new_tokens=new,
                            batch_size=batch_size,
                            predicted_peak_bytes=mem.total_bytes,
                            margin_bytes=gpu.memory_bytes - mem.total_bytes,
                            verdict=_verdict(mem.total_bytes, gpu.memory_bytes, headroom),
                            tokens_per_s=speed.predicted_tokens_per_s if speed else None,
                            speed_label=speed.label if speed else None,
                            measured_tokens_per_s=speed.measured_tokens_per_s if speed else None,
                            measured_peak_bytes=measured_peak,
                            notes=mem.notes,
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


def _speed_text(fit: Fit) -> str:
    """Tokens/s as text; a bandwidth ceiling (no measured efficiency) is marked with "≤"."""
    if fit.tokens_per_s is None:
        return "-"
    text = ("" if fit.speed_label == "predicted" else "≤") + f"{fit.tokens_per_s:,.0f}"
    if fit.measured_tokens_per_s is not None:
        text += f"; measured {fit.measured_tokens_per_s:,.0f}"
    return text


def _fit_text(fit: Fit) -> str:
    """The verdict and margin as text, with the measured peak where a record has one."""
    margin = fit.margin_bytes / GiB
    word = {FITS: "fits", TIGHT: "tight", NO: "no"}[fit.verdict]
    text = f"{word} {margin:+.1f} GiB"
    if fit.measured_peak_bytes is not None:
        text += f"; measured peak {fit.measured_peak_bytes / GiB:.2f} GiB"
    return text


def render_table(fits: Sequence[Fit], title: str = "What fits where (predicted)") -> Any:
    """A rich table: one row per card x model x context, a column per precision with fit, margin and tokens/s."""
    from rich.table import Table

    table = Table(
        title=title,
        caption="fit: card memory minus predicted peak (tight: within 5%); tokens/s: "
        "bandwidth ceiling x measured efficiency, or '≤ ceiling' where no "
        "efficiency was measured",
    )
    precisions = list(dict.fromkeys(f.precision for f in fits))
    for col in ("GPU", "memory", "model", "context"):
        table.add_column(col, justify="right" if col in ("memory", "context") else "left")
    for p in precisions:
        table.add_column(f"{p} (predicted)")
    rows: dict[tuple[str, str, int], dict[str, Fit]] = {}
    order: list[tuple[str, str, int]] = []
    for f in fits:
        key = (f.gpu, f.model, f.context_tokens)
        if key not in rows:
            rows[key] = {}
            order.append(key)
        rows[key][f.precision] = f
    for key in order:
        cells = rows[key]
        first = next(iter(cells.values()))
        styled = []
        for p in precisions:
            f = cells.get(p)
            if f is None:
                styled.append("")
                continue
            colour = {FITS: "green", TIGHT: "yellow", NO: "red"}[f.verdict]
            speed = f", {_speed_text(f)} tok/s" if f.fits and f.tokens_per_s is not None else ""
            styled.append(f"[{colour}]{_fit_text(f)}[/{colour}]{speed}")
        table.add_row(key[0], f"{first.memory_bytes / GiB:.0f} GiB", key[1], str(key[2]), *styled)
    return table


def plot_advice(fits: Sequence[Fit], path: str | Path, requirement: Requirement | None = None) -> Path:
    """A PNG per model and context: predicted decode tokens/s per card and precision (hatched where it does
    not fit), cards ordered by memory, the required speed as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch

    if not fits:
        raise BadInputError("nothing to plot: no fits")
    panels = list(dict.fromkeys((f.model, f.context_tokens) for f in fits))
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(10, 0.38 * len({f.gpu for f in fits}) * len(panels) + 1.5), squeeze=False
    )
    for ax, (model, context) in zip(axes[:, 0], panels, strict=True):
        sub = [f for f in fits if f.model == model and f.context_tokens == context]
        gpus = list(dict.fromkeys(f.gpu for f in sorted(sub, key=lambda f: (f.memory_bytes, f.bandwidth_bytes_per_s))))
        precisions = list(dict.fromkeys(f.precision for f in sub))
        height = 0.8 / max(len(precisions), 1)
        y = np.arange(len(gpus))
        handles = []
        for i, p in enumerate(precisions):
            values, hatches = [], []
            for g in gpus:
                f = next((x for x in sub if x.gpu == g and x.precision == p), None)
                speed = f.tokens_per_s if f and f.tokens_per_s is not None else 0.0
                values.append(speed)
                hatches.append(f is not None and not f.fits)
            bars = ax.barh(y + i * height - 0.4 + height / 2, values, height=height, label=p)
            handles.append(Patch(color=bars.patches[0].get_facecolor(), label=p))
            for bar, hatch in zip(bars, hatches, strict=True):
                if hatch:
                    bar.set_hatch("///")
                    bar.set_alpha(0.35)
        ax.set_yticks(y)
        ax.set_yticklabels(
            [f"{g} ({next(f.memory_bytes for f in sub if f.gpu == g) / GiB:.0f} GiB)" for g in gpus], fontsize=8
        )
        ax.set_xlabel("decode tokens/s (predicted; bandwidth ceiling where no efficiency was measured)")
        ax.set_title(f"{model}, {context}-token context: predicted, not measured (hatched: does not fit)")
        handles.append(Patch(facecolor="white", edgecolor="grey", hatch="///", label="does not fit"))
        if requirement and requirement.min_tokens_per_s and requirement.model == model:
            handles.append(
                ax.axvline(
                    requirement.min_tokens_per_s,
                    color="black",
                    linestyle="--",
                    linewidth=1,
                    label=f"required {requirement.min_tokens_per_s:g} tokens/s",
                )
            )
        ax.legend(handles=handles, fontsize=8, loc="lower right")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def advisor_summary_markdown(fits: Sequence[Fit], requirement: Requirement | None = None, *, max_rows: int = 20) -> str:
    """A short Markdown section for a report: the smallest card meeting the requirement and, for that model
    and context (else each model's largest context), one row per card with every precision's fit and speed.

    Every figure is labelled predicted; measured figures, where records exist, are shown beside them.
    """
    lines = ["### Which card (predicted)", ""]
    if requirement is not None:
        best = cheapest(fits, requirement)
        if best is None:
            lines.append(f"No profiled card meets **{requirement.describe()}** (predicted).")
        else:
            speed = (
                ""
                if best.tokens_per_s is None
                else (
                    f", {_speed_text(best)} tokens/s"
                    + (" (bandwidth ceiling)" if best.speed_label == "ceiling" else "")
                )
            )
            lines.append(
                f"Smallest card meeting **{requirement.describe()}**: **{best.gpu}** "
                f"({best.memory_bytes / GiB:.0f} GiB) at {best.precision}: predicted peak "
                f"{best.predicted_peak_bytes / GiB:.2f} GiB ({_fit_text(best)}){speed}."
            )
        lines.append("")
        panels = [(requirement.model, requirement.context_tokens)]
    else:
        panels = []
        for model in dict.fromkeys(f.model for f in fits):
            panels.append((model, max(f.context_tokens for f in fits if f.model == model)))
    precisions = list(dict.fromkeys(f.precision for f in fits))
    for model, context in panels:
        sub = sorted(
            (f for f in fits if f.model == model and f.context_tokens == context),
            key=lambda f: (f.memory_bytes, f.bandwidth_bytes_per_s),
        )
        if not sub:
            continue
        lines.append(
            f"{model}, {context}-token context (margin = card memory minus predicted peak; "
            "≤ marks a bandwidth ceiling):"
        )
        lines.append("")
        lines.append("| GPU | memory | " + " | ".join(precisions) + " |")
        lines.append("|---|---:|" + "---|" * len(precisions))
        gpus = list(dict.fromkeys(f.gpu for f in sub))
        for gpu in gpus[:max_rows]:
            cells = {f.precision: f for f in sub if f.gpu == gpu}
            row = []
            for p in precisions:
                f = cells.get(p)
                if f is None:
                    row.append("")
                elif not f.fits:
                    row.append(f"no ({f.margin_bytes / GiB:+.1f} GiB)")
                else:
                    speed = "" if f.tokens_per_s is None else f", {_speed_text(f)} tok/s"
                    row.append(f"{f.verdict} ({f.margin_bytes / GiB:+.1f} GiB{speed})")
            memory = next(iter(cells.values())).memory_bytes / GiB
            lines.append(f"| {gpu} | {memory:.0f} GiB | " + " | ".join(row) + " |")
        if len(gpus) > max_rows:
            lines.append(f"\n{len(gpus) - max_rows} more cards: run `bench advise` for the full table.")
        lines.append("")
    lines.append(
        "All figures are predictions from the model's architecture and the cards' datasheets (`bench "
        "predict` shows the breakdown), not measurements."
    )
    return "\n".join(lines) + "\n"
