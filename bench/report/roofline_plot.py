"""The engines' plot: decode tokens/s against context per engine, with the bandwidth roofline's ceiling drawn.

One device's records (the report draws it per device, beside :mod:`bench.report.plots`' plots). The ceiling
is each record's ``decode_ceiling_tokens_per_s`` (batch / floor time per token, the bytes a step must read
over the bandwidth the record names), so a record without a bandwidth draws no ceiling.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from bench.report.plots import (
    ENGINE_LINESTYLES,
    _context_axis,
    _finish,
    _label,
    _lines,
    _new_figure,
    _ok,
    _style,
    precision_color,
)

ENGINE_MARKERS = {"compiled": "s", "eager": "o", "llama.cpp": "D"}


def decode_roofline(frame: pd.DataFrame) -> Figure | None:
    """Decode tokens/s against context per engine (solid compiled, dashed eager), with the bandwidth roofline's
    ceiling (B / floor time per token, dotted) of each model and precision; None without a bandwidth."""
    data = _ok(frame, "generate", "decode_ceiling_tokens_per_s")
    data = data[data["decode_tokens_per_s"].notna()] if not data.empty else data
    if data.empty:
        return None
    data = data.assign(engine=data["engine"] if "engine" in data else "eager")
    fig, ax = _new_figure()
    for line, part in _lines(data, ("model", "precision", "batch_size", "new_tokens", "engine")):
        engine = str(line["engine"])
        style = dict(
            _style(line, data), linestyle=ENGINE_LINESTYLES.get(engine, ":"), marker=ENGINE_MARKERS.get(engine, "^")
        )
        label = f"{_label(line, data.assign(engine='x'))} · {line['engine']}"
        ax.plot(part["context_tokens"], part["decode_tokens_per_s"], label=label, **style)
    for line, part in _lines(data, ("model", "precision", "batch_size", "new_tokens")):
        ceiling = part.groupby("context_tokens")["decode_ceiling_tokens_per_s"].median()
        color = precision_color(str(line["precision"]))
        label = f"{_label(line, data)} · roofline ceiling"
        ax.plot(ceiling.index, ceiling.values, color=color, linestyle=":", linewidth=1.4, label=label)
    _context_axis(ax, data["context_tokens"])
    low = float(data["decode_tokens_per_s"].min())
    high = float(data[["decode_tokens_per_s", "decode_ceiling_tokens_per_s"]].max().max())
    if low > 0 and high / low > 20:  # a CPU far below its ceiling: log scale keeps both readable
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, high * 1.12)
    sources = sorted(str(v) for v in data["memory_bandwidth_source"].dropna().unique())
    bandwidth = float(data["memory_bandwidth_bytes_per_s"].median())
    ax.text(
        0.01,
        0.02,
        f"ceiling = batch x {bandwidth / 1e9:,.1f} GB/s ({', '.join(sources)}) / bytes read per step",
        transform=ax.transAxes,
        fontsize=7.5,
        color="#555555",
    )
    _finish(
        ax,
        "Decode throughput vs context: engines and the bandwidth roofline",
        data,
        "context length (prompt tokens)",
        "decode throughput (tokens/s)",
    )
    return fig


# (file stem, function, description), drawn after bench.report.plots.PLOTS
PLOTS = (("decode-roofline", decode_roofline, "Decode tokens/s per engine vs context, with the bandwidth ceiling"),)
