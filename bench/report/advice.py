"""The purchase advisor drawn: its terminal table, its plot, its Markdown summary and the report's section.

The advisor (:mod:`bench.predict.advisor`) decides what fits where; this module only presents its fits.
:func:`advice_blocks` is the report's short section: which cards hold Phi-3-mini at its full context,
predicted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.config.hardware import HardwareProfile, load_profiles
from bench.errors import BadInputError
from bench.predict.advisor import FITS, NO, TIGHT, Fit, Requirement, advise, cheapest
from bench.report.document import Block, Heading, Para, Table
from bench.results.record import Record
from bench.units import GiB

ADVICE_MODEL = "phi-3-mini"
ADVICE_PRECISIONS = ("fp16", "int8", "nf4", "nf4-dq")
ADVICE_CONTEXT = 4096
ADVICE_MIN_TOKENS_PER_S = 20.0


def _cell(fit: Fit | None) -> str:
    if fit is None:
        return "—"
    mark = {"fits": "fits", "tight": "tight", "no": "no"}.get(fit.verdict, fit.verdict)
    peak = f"{fit.predicted_peak_bytes / 2**30:.1f} GiB"
    speed = ""
    if fit.tokens_per_s is not None:
        speed = f", {'≤' if fit.speed_label == 'ceiling' else '~'}{fit.tokens_per_s:,.0f} tok/s"
    return f"{mark} ({peak}{speed})"


def advice_blocks(records: Sequence[Record] = ()) -> list[Block]:
    """A short 'which card' section: every profiled GPU x precision at 4096 tokens, predicted, with the pick."""
    try:
        profiles = load_profiles()
        fits = advise(profiles, [ADVICE_MODEL], list(ADVICE_PRECISIONS), [ADVICE_CONTEXT], records=records)
    except (BadInputError, OSError, ValueError) as exc:
        return [Heading("Which card? (predicted)", 2), Para(f"No advice: {exc}", "warn")]
    requirement = Requirement(ADVICE_MODEL, ADVICE_CONTEXT, ADVICE_PRECISIONS, ADVICE_MIN_TOKENS_PER_S)
    pick = cheapest(fits, requirement)
    speed_known = pick is None or pick.speed_label == "predicted"
    by_card: dict[str, dict[str, Fit]] = {}
    order: list[Fit] = sorted(fits, key=lambda f: (f.memory_bytes, f.bandwidth_bytes_per_s))
    for f in order:
        by_card.setdefault(f.gpu, {})[f.precision] = f
    rows = []
    for gpu, per in by_card.items():
        any_fit = next(iter(per.values()))
        rows.append((gpu, f"{any_fit.memory_bytes / 2**30:.0f} GiB", *(_cell(per.get(p)) for p in ADVICE_PRECISIONS)))
    blocks: list[Block] = [Heading("Which card? (predicted)", 2)]
    if pick is not None:
        blocks.append(
            Para(
                f"Smallest card for {requirement.describe()}: {pick.gpu} with {pick.precision} "
                f"(predicted peak {pick.predicted_peak_bytes / 2**30:.2f} GiB; decode "
                f"{'at most' if pick.speed_label == 'ceiling' else 'about'} {pick.tokens_per_s:,.0f} tokens/s). "
                + (
                    ""
                    if speed_known
                    else "No GPU run calibrates decode speed yet: this card meets the speed only if it reaches its "
                    "memory-bandwidth ceiling, which bitsandbytes kernels do not (pass a GPU run to 'bench advise "
                    "--results'). "
                )
                + "Predictions from the model's config and the card's datasheet, not measurements; "
                "'≤' marks a memory-bandwidth ceiling, '~' a ceiling scaled by an efficiency measured on real runs.",
                "note",
            )
        )
    else:
        blocks.append(Para(f"No profiled card meets {requirement.describe()} (predicted).", "warn"))
    blocks.append(
        Table(
            ("GPU", "Memory", *ADVICE_PRECISIONS),
            tuple(rows),
            "lr" + "l" * len(ADVICE_PRECISIONS),
            caption=f"{ADVICE_MODEL} at {ADVICE_CONTEXT} tokens (prompt + 64 new), batch 1: predicted "
            "peak device memory and decode speed per card; run 'bench advise' for other requirements"
            + "".join(f". {note}" for note in hand_entered_notes(profiles)),
        )
    )
    return blocks


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


def hand_entered_notes(profiles: Sequence[HardwareProfile]) -> list[str]:
    """One line per profile whose measured figures were typed in by hand (approximate, not 'bench profile')."""
    notes = []
    for p in profiles:
        if p.measured is not None and p.measured.hand_entered and p.measured.memory_bandwidth_bytes_per_s:
            tbs = p.measured.memory_bandwidth_bytes_per_s / 1e12
            notes.append(
                f"{p.name}: its bandwidth ({tbs:.1f} TB/s) is a hand-entered approximation from one run, "
                "not 'bench profile' output"
            )
    return notes


_FIT_WORDS = {FITS: "fits", TIGHT: "tight", NO: "no"}
_FIT_COLOURS = {FITS: "green", TIGHT: "yellow", NO: "red"}


def render_table(fits: Sequence[Fit], title: str = "What fits where (predicted)", notes: Sequence[str] = ()) -> Any:
    """A rich table for an 80-column terminal: one row per card x context x precision with short cells (the
    fit word, the margin, decode tokens/s); measured figures and ``notes`` below it. Several models give one
    table each (a rich Group)."""
    from rich.console import Group

    models = list(dict.fromkeys(f.model for f in fits))
    tables = [_advice_table([f for f in fits if f.model == m], f"{title}: {m}", notes) for m in models]
    return tables[0] if len(tables) == 1 else Group(*tables)


def _advice_table(fits: Sequence[Fit], title: str, notes: Sequence[str]) -> Any:
    """One model's fits: cards in the order given, each card's contexts and precisions on their own rows."""
    from rich.table import Table

    contexts = list(dict.fromkeys(f.context_tokens for f in fits))
    gpus = {g: i for i, g in enumerate(dict.fromkeys(f.gpu for f in fits))}
    precisions = {p: i for i, p in enumerate(dict.fromkeys(f.precision for f in fits))}
    fits = sorted(fits, key=lambda f: (gpus[f.gpu], contexts.index(f.context_tokens), precisions[f.precision]))
    if len(contexts) == 1:
        title += f", {contexts[0]} tokens"
    first = fits[0] if fits else None
    if first is not None:
        title += f" (prompt + {first.new_tokens} new), batch {first.batch_size}"
    table = Table(
        title=title, box=None, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold", title_justify="left"
    )
    table.add_column("GPU", max_width=25, no_wrap=True, overflow="ellipsis")
    table.add_column("memory", justify="right", no_wrap=True)
    if len(contexts) > 1:
        table.add_column("context", justify="right", no_wrap=True)
    for name, justify in (("precision", "left"), ("fit", "left"), ("margin", "right"), ("tok/s", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    shown_gpu = shown_context = None
    for f in fits:
        gpu = "" if f.gpu == shown_gpu else f.gpu
        cells = [gpu, f"{f.memory_bytes / GiB:.0f} GiB" if gpu else ""]
        if len(contexts) > 1:
            cells.append(str(f.context_tokens) if gpu or f.context_tokens != shown_context else "")
        speed = "" if not f.fits or f.tokens_per_s is None else _short_speed(f)
        colour = _FIT_COLOURS[f.verdict]
        fit = f"[{colour}]{_FIT_WORDS[f.verdict]}[/{colour}]"
        cells += [f.precision, fit, f"{f.margin_bytes / GiB:+.1f} GiB", speed]
        table.add_row(*cells)
        shown_gpu, shown_context = f.gpu, f.context_tokens
    measured = [_measured_line(f) for f in fits if f.measured_peak_bytes is not None or f.measured_tokens_per_s]
    table.caption = "\n".join(
        [
            "fit: usable card memory minus predicted peak (tight: within 5%). tok/s: decode, ≤ a memory-bandwidth "
            "ceiling, ~ the ceiling scaled by an efficiency measured on real runs.",
            *measured,
            *notes,
        ]
    )
    table.caption_justify = "left"
    return table


def _short_speed(fit: Fit) -> str:
    """Decode tokens/s in a few characters: "≤88" for a bandwidth ceiling, "~41" for a calibrated prediction."""
    return ("~" if fit.speed_label == "predicted" else "≤") + f"{fit.tokens_per_s:,.0f}"


def _measured_line(fit: Fit) -> str:
    """What a record measured for a fit, in one line below the table."""
    parts = []
    if fit.measured_peak_bytes is not None:
        parts.append(f"peak {fit.measured_peak_bytes / GiB:.2f} GiB")
    if fit.measured_tokens_per_s is not None:
        parts.append(f"{fit.measured_tokens_per_s:,.0f} tok/s")
    return f"measured: {fit.gpu} {fit.precision} at {fit.context_tokens} tokens: {', '.join(parts)}"


def plot_advice(fits: Sequence[Fit], path: str | Path, requirement: Requirement | None = None) -> Path:
    """A PNG per model and context: predicted decode tokens/s per card and precision (hatched where it does
    not fit), cards ordered by memory, the required speed as a line."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: its import alone costs more than drawing the chart
    from matplotlib.patches import Patch

    if not fits:
        raise BadInputError("nothing to plot: no fits")
    panels = list(dict.fromkeys((f.model, f.context_tokens) for f in fits))
    fig = Figure(figsize=(10, 0.38 * len({f.gpu for f in fits}) * len(panels) + 1.5))
    axes = fig.subplots(len(panels), 1, squeeze=False)
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
                    + (f" ({best.speed_basis})" if best.speed_basis else "")
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
            f"{model}, {context}-token context (margin = usable card memory minus predicted peak; "
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
