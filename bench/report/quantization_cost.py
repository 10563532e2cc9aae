"""What quantization costs: one table per model, weights and engine on a device, precision by precision, with
what it saves (weights, peak memory), how fast it decodes, and how far its predictions move from the reference
precision (KL divergence, top-1 agreement, perplexity); and a plot of quality cost against memory saved.

Only reads records: the quality numbers are the records' ``quality`` blocks (measured by ``bench run
--quality``, formulas in :mod:`bench.results.quality`); peak memory is the device's reading the other tables use
(NVML process peak on a GPU, host peak RSS on a CPU), decode speed the record's median.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.report import plots
from bench.report.document import Block, Heading, Image, Para, Table
from bench.report.run_data import DeviceGroup
from bench.results.record import Record
from bench.results.run_folder import RunFolder
from bench.units import MiB, fmt_num, slugify

PLOT_DPI = 120


@dataclass(frozen=True)
class CostRow:
    """One precision of one table: the record its memory and speed come from, and its quality block."""

    precision: str
    record: Record
    quality: dict[str, Any]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(batch, context, new tokens) of the record."""
        s = self.record.spec
        return (s.batch_size, s.context_tokens, s.new_tokens)


def _order(precision: str) -> tuple[int, str]:
    known = tuple(plots.PRECISION_COLORS)
    return (known.index(precision), "") if precision in known else (len(known), precision)


def cost_tables(records: Sequence[Record]) -> dict[tuple[str, str, str], list[CostRow]]:
    """Records with a measured quality block, by (model, weights, engine): one row per precision.

    Where a precision has records of several shapes, the row takes the smallest shape every precision of the
    table has (else the precision's own smallest), so memory and speed compare like with like.
    """
    by_table: dict[tuple[str, str, str], dict[str, list[Record]]] = {}
    for r in records:
        if r.ok and r.quality.get("status") == "ok":
            key = (r.spec.model, r.spec.weights, r.spec.engine)
            by_table.setdefault(key, {}).setdefault(r.spec.precision, []).append(r)
    out: dict[tuple[str, str, str], list[CostRow]] = {}
    for key, per in by_table.items():
        shapes = [{(r.spec.batch_size, r.spec.context_tokens, r.spec.new_tokens) for r in rs} for rs in per.values()]
        common = sorted(set.intersection(*shapes))
        rows = []
        for precision in sorted(per, key=_order):
            rs = sorted(per[precision], key=lambda r: (r.spec.batch_size, r.spec.context_tokens, r.spec.new_tokens))
            pick = next(
                (
                    r
                    for r in rs
                    if common and (r.spec.batch_size, r.spec.context_tokens, r.spec.new_tokens) == common[0]
                ),
                rs[0],
            )
            rows.append(CostRow(precision, pick, pick.quality))
        out[key] = rows
    return out


def _mib(value: Any) -> str:
    return "—" if value is None else f"{value / MiB:,.1f}"


def _nats(value: Any) -> str:
    return "—" if value is None else f"{value:.4f}" if value < 10 else f"{value:.1f}"


def _encoder(rows: Sequence[CostRow]) -> bool:
    return any("embedding_cosine_mean" in r.quality for r in rows)


def _row(row: CostRow, memory_field: str, encoder: bool) -> tuple[str, ...]:
    q, mem = row.quality, row.record.memory
    head = (
        row.precision + (" (reference)" if row.precision == q.get("reference_precision") else ""),
        _mib(mem.weights_bytes),
        _mib(getattr(mem, memory_field)),
    )
    if encoder:
        cos_mean, cos_min = q.get("embedding_cosine_mean"), q.get("embedding_cosine_min")
        return (
            *head,
            fmt_num(row.record.metrics.get("sequences_per_s")),
            "—" if cos_mean is None else f"{cos_mean:.5f}",
            "—" if cos_min is None else f"{cos_min:.5f}",
        )
    top1 = q.get("top1_agreement")
    return (
        *head,
        fmt_num(row.record.metrics.get("decode_tokens_per_s")),
        _nats(q.get("kl_mean_nats")),
        _nats(q.get("kl_p99_nats")),
        "—" if top1 is None else f"{100 * top1:.1f}",
        fmt_num(q.get("perplexity"), 3),
    )


def _headers(mem_header: str, encoder: bool) -> tuple[str, ...]:
    head = ("Precision", "Weights (MiB)", mem_header)
    if encoder:
        return (*head, "Sequences/s", "Cosine mean", "Cosine min")
    return (*head, "Decode (tokens/s)", "KL mean (nats)", "KL p99 (nats)", "Top-1 (%)", "Perplexity")


def _caption(rows: Sequence[CostRow], gpu: bool, engine: str) -> str:
    q = rows[0].quality
    shapes = sorted({r.shape for r in rows})
    encoder = _encoder(rows)
    if encoder:
        shape = "; ".join(f"batch {b}, {c} tokens" for b, c, _ in shapes)
        what = "cosine similarity of each window's pooled embedding (mean of the last hidden state) to the reference's"
        speed = "sequences/s"
    else:
        shape = "; ".join(f"batch {b}, {c} prompt tokens, {n} new" for b, c, n in shapes)
        what = "KL(reference ‖ precision) in nats"
        speed = "decode speed (median tokens/s)"
    memory = "peak VRAM, NVML process peak" if gpu else "peak host RSS (not GPU memory)"
    random = " RANDOM WEIGHTS: the quality columns mean nothing about a real model." if q.get("random_weights") else ""
    forward = "" if engine == "eager" else " Quality is the transformers forward pass's, the same for every engine."
    return (
        f"Quality against {q.get('reference_precision')} (the checkpoint's dtype, same device), teacher-forced over "
        f"{q.get('eval_text')} ({q.get('eval_text_chars'):,} characters, {q.get('tokens_scored'):,} tokens scored in "
        f"windows of {q.get('window_tokens')}); {what}; memory in MiB ({memory}) and {speed} at {shape}."
        f"{forward}{random}"
    )


def cost_plot(rows: Sequence[CostRow], title_tail: str) -> Figure | None:
    """Mean KL (filled) and p99 KL (hollow) against weights saved versus the reference; None without a reference row."""
    ref = next((r for r in rows if r.precision == r.quality.get("reference_precision")), None)
    if ref is None or ref.record.memory.weights_bytes is None or len(rows) < 2:
        return None
    fig = Figure(figsize=plots.FIGSIZE)
    FigureCanvasAgg(fig)  # the Agg renderer, without pyplot's global state
    ax = fig.add_subplot()
    base = ref.record.memory.weights_bytes
    for r in rows:
        if r.record.memory.weights_bytes is None or r.quality.get("kl_mean_nats") is None:
            continue
        saved = (base - r.record.memory.weights_bytes) / MiB
        color = plots.precision_color(r.precision)
        ax.scatter([saved], [r.quality["kl_mean_nats"]], color=color, s=50, label=f"{r.precision} mean KL", zorder=3)
        ax.scatter([saved], [r.quality["kl_p99_nats"]], facecolors="none", edgecolors=color, s=50, zorder=3)
        ax.annotate(
            r.precision, (saved, r.quality["kl_mean_nats"]), textcoords="offset points", xytext=(6, 4), fontsize=8
        )
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.margins(x=0.12)
    ax.set_title(f"Quality cost vs weights saved (hollow: p99 KL)\n{title_tail}", fontsize=11)
    ax.set_xlabel(f"weights saved vs {ref.precision} (MiB)")
    ax.set_ylabel("KL divergence from the reference (nats)")
    ax.grid(True, alpha=0.35)
    ax.legend(fontsize=8, loc="best", framealpha=0.85)
    return fig


def quantization_cost_blocks(
    group: DeviceGroup, folder: RunFolder, prefix: str, make_plots: bool = True
) -> list[Block]:
    """The "What quantization costs" section of one device; nothing when no record of it has quality."""
    tables = cost_tables(group.records)
    if not tables:
        return []
    memory_field = "nvml_process_peak_bytes" if group.gpu else "host_peak_rss_bytes"
    mem_header = "Peak VRAM, NVML (MiB)" if group.gpu else "Peak host RSS (MiB)"
    blocks: list[Block] = [Heading(f"What quantization costs on {group.label}", 2)]
    for (model, weights, engine), rows in tables.items():
        name = f"{model} [{weights}]" + ("" if engine == "eager" else f" · {engine}")
        blocks.append(Heading(name, 3))
        encoder = _encoder(rows)
        headers = _headers(mem_header, encoder)
        body = tuple(_row(r, memory_field, encoder) for r in rows)
        blocks.append(Table(headers, body, "l" + "r" * (len(headers) - 1), caption=_caption(rows, group.gpu, engine)))
        ref_ppl = rows[0].quality.get("reference_perplexity")
        ppl = "" if ref_ppl is None else f"Reference perplexity {fmt_num(ref_ppl, 3)}. "
        blocks.append(Para(f"{ppl}{rows[0].quality.get('eval_text_source', '')}", "note"))
        if make_plots and not encoder:
            fig = cost_plot(rows, f"{model} · {group.label}")
            if fig is not None:
                file = f"{prefix}quality-cost-{slugify(model)}-{engine}.png"
                fig.savefig(folder.plot_file(file), dpi=PLOT_DPI, bbox_inches="tight", pad_inches=0.08)
                blocks.append(Image(file, f"Quality cost vs weights saved: {model} on {group.label}"))
    failed = sorted({r.spec.precision for r in group.records if r.quality.get("status") == "error"})
    if failed:
        blocks.append(Para(f"Quality pass failed for: {', '.join(failed)} (see the records' quality.error).", "warn"))
    return blocks
