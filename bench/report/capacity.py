"""Capacity presented: the largest context per precision x batch and the largest batch at a context, as an
80-column terminal table and a plot. The numbers come from :mod:`bench.predict.capacity`; this module only
lays them out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from bench.predict.capacity import MEMORY, NOTHING, POSITIONS, BatchCapacity, ContextCapacity
from bench.report.plots import precision_color
from bench.units import GiB

_LIMIT_WORDS = {MEMORY: "memory", POSITIONS: "model's positions", NOTHING: "nothing fits"}


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / GiB:.2f} GiB"


def render_capacity(
    card: str, usable_bytes: int, contexts: Sequence[ContextCapacity], batches: Sequence[BatchCapacity]
) -> list[str]:
    """The capacity tables as lines of at most 80 columns (predicted; fit judged on the fit figure)."""
    model = contexts[0].model if contexts else batches[0].model
    new = contexts[0].new_tokens if contexts else batches[0].new_tokens
    lines = [
        f"Capacity of {model} on {card}, predicted ({_gib(usable_bytes)} usable)",
        f"largest context = prompt + {new} new tokens whose fit figure fits",
        "",
        f"{'precision':<10} {'batch':>5} {'largest context':>18} {'fit figure':>12}  limited by",
        "-" * 78,
    ]
    for row in contexts:
        tokens = f"{row.max_context_tokens:,} tokens" if row.max_context_tokens else "-"
        lines.append(
            f"{row.precision:<10} {row.batch_size:>5} {tokens:>18} {_gib(row.fit_bytes):>12}  "
            f"{_LIMIT_WORDS[row.limited_by]}"
        )
    if batches:
        ctx = batches[0].context_tokens
        lines += ["", f"{'precision':<10} {'largest batch at ' + f'{ctx:,} tokens':>28}", "-" * 40]
        for b in batches:
            lines.append(f"{b.precision:<10} {b.max_batch if b.max_batch else 'none':>28}")
    lines += [
        "",
        "fit figure: context + the larger live peak (loading, generation) + slack,",
        "against the card's usable memory; nvidia-smi shows more (the allocator's",
        "cache): see bench predict. All figures predicted, not measured.",
    ]
    return lines


def plot_capacity(
    card: str, contexts: Sequence[ContextCapacity], path: Path, batches: Sequence[BatchCapacity] = ()
) -> Path:
    """Largest context against batch size, one line per precision (log-2 axes), written as a PNG."""
    fig = Figure(figsize=(7.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for precision in dict.fromkeys(r.precision for r in contexts):
        rows = [r for r in contexts if r.precision == precision and r.max_context_tokens > 0]
        if rows:
            ax.plot(
                [r.batch_size for r in rows],
                [r.max_context_tokens for r in rows],
                marker="o",
                label=precision,
                color=precision_color(precision),
            )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    plain = FuncFormatter(lambda v, _: f"{v:,.0f}")
    ax.xaxis.set_major_formatter(plain)
    ax.yaxis.set_major_formatter(plain)
    fig.subplots_adjust(bottom=0.2)
    ax.set_xlabel("batch size (sequences)")
    ax.set_ylabel("largest context (tokens)")
    model = contexts[0].model if contexts else ""
    ax.set_title(f"{model} on {card}: largest context that fits (predicted)", fontsize=10)
    if batches:
        text = ", ".join(f"{b.precision} {b.max_batch}" for b in batches)
        fig.text(0.01, 0.01, f"largest batch at {batches[0].context_tokens:,} tokens: {text}", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
