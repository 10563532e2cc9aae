"""The report's plots: one function per plot, each taking one device's records as a DataFrame.

Every function returns a matplotlib Figure (built without pyplot, so no global state and no
display; PNGs are written by the Agg renderer) or None when the records hold nothing to plot.
Colors are fixed per precision across all plots. Titles name what was measured, the model(s),
the device and "random weights" where that applies. Memory measured on a CPU is labelled host
RSS, never VRAM.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from bench.units import GiB as GIB
from bench.units import MiB as MIB

PRECISION_COLORS = {
    "fp32": "#7f7f7f",
    "fp16": "#1f77b4",
    "bf16": "#17becf",
    "int8": "#ff7f0e",
    "nf4": "#2ca02c",
    "nf4-dq": "#8c9d1f",
    "fp4": "#9467bd",
    "fp4-dq": "#e377c2",
    # GGUF (llama.cpp): the light shade of the bitsandbytes precision of the same width, so the runtimes pair up
    "f16": "#aec7e8",
    "q8_0": "#ffbb78",
    "q4_0": "#98df8a",
    "q4_k_m": "#c5b0d5",
    "q5_k_m": "#f7b6d2",
    "q6_k": "#c49c94",
    "gguf": "#dbdb8d",
}
_FALLBACK_COLORS = ("#8c564b", "#d62728", "#393b79", "#637939")
_MARKERS = ("o", "s", "^", "D", "v", "P")
_LINESTYLES = ("-", "--", ":", "-.")
ENGINE_LINESTYLES = {"compiled": "-", "eager": "--", "llama.cpp": "-."}
# Memory segments use colors no precision uses, so a bar is never read as a precision.
SEGMENT_COLORS = {
    "CUDA context": "#9e9e9e",
    "process before model load": "#9e9e9e",
    "weights": "#455a64",
    "KV cache": "#c9a227",
    "rest": "#d7ccc8",
}
DEFAULT_BUDGET_LINES: tuple[tuple[int, str], ...] = ((6 * GIB, "6 GiB"), (8 * GIB, "8 GiB"))
FIGSIZE = (7.0, 4.3)
LEGEND_INSIDE_MAX = 6


def precision_color(precision: str) -> str:
    """The color of a precision, the same in every plot."""
    if precision in PRECISION_COLORS:
        return PRECISION_COLORS[precision]
    return _FALLBACK_COLORS[sum(map(ord, precision)) % len(_FALLBACK_COLORS)]


def on_gpu(frame: pd.DataFrame) -> bool:
    """True when this device's records carry NVML device-memory numbers (a GPU run)."""
    if frame.empty or "nvml_process_peak_bytes" not in frame:
        return False
    cuda = frame["device"].astype(str).str.startswith("cuda").any()
    return bool(cuda and frame["nvml_process_peak_bytes"].notna().any())


def device_label(frame: pd.DataFrame) -> str:
    """ "<device name> (<device>)" of a one-device frame, e.g. "NVIDIA H200 (cuda:0)"."""
    names = [n for n in frame.get("device_name", pd.Series(dtype=str)).dropna().unique() if n]
    devices = [d for d in frame.get("device", pd.Series(dtype=str)).dropna().unique() if d]
    name = ", ".join(names) or "unknown device"
    return f"{name} ({', '.join(devices)})" if devices else name


def random_weights(frame: pd.DataFrame) -> bool:
    """True when any record of the frame used random weights."""
    weights = frame.get("weights", pd.Series(dtype=str)).astype(str)
    flags = frame.get("flags", pd.Series(dtype=str)).fillna("").astype(str)
    return bool((weights == "random").any() or flags.str.contains("random_weights").any())


def subtitle(frame: pd.DataFrame) -> str:
    """The second title line: model(s), device, and "random weights" where it applies."""
    models = ", ".join(sorted(frame["model"].unique()))
    parts = [models, device_label(frame)]
    if random_weights(frame):
        parts.append("random weights")
    return " · ".join(parts)


def _new_figure(bottom: float = 0.12) -> tuple[Figure, object]:
    """A figure with fixed margins (room for a two-line title and axis labels; faster than a layout engine)."""
    fig = Figure(figsize=FIGSIZE)
    fig.subplots_adjust(left=0.11, right=0.98, top=0.87, bottom=bottom)
    FigureCanvasAgg(fig)  # the Agg renderer, without pyplot's global state
    ax = fig.add_subplot()
    return fig, ax


def _finish(ax, title: str, frame: pd.DataFrame, xlabel: str, ylabel: str) -> None:
    ax.set_title(f"{title}\n{subtitle(frame)}", fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    handles, labels = ax.get_legend_handles_labels()
    if len(handles) > LEGEND_INSIDE_MAX:
        # Many lines: the legend goes to the right of the axes so that it never hides data.
        ax.figure.subplots_adjust(right=0.77)
        ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.85)
    elif handles:
        ax.legend(fontsize=8, loc="best", framealpha=0.85)


def _context_axis(ax, values: Sequence[float]) -> None:
    """Log-2 x axis with plain integer ticks when contexts span a factor of 64 or more, else linear."""
    vals = sorted({int(v) for v in values if pd.notna(v) and v > 0})
    if len(vals) >= 2 and vals[-1] / vals[0] >= 64:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_minor_formatter(NullFormatter())
    if len(vals) <= 12:
        ax.set_xticks(vals)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(round(v))}"))


def _lines(frame: pd.DataFrame, keys: Sequence[str]) -> list[tuple[dict[str, object], pd.DataFrame]]:
    """The frame split into plotted lines by ``keys``, each sorted by context."""
    out = []
    for values, part in frame.groupby(list(keys), sort=True):
        values = values if isinstance(values, tuple) else (values,)
        out.append((dict(zip(keys, values, strict=True)), part.sort_values("context_tokens")))
    return sorted(out, key=lambda item: tuple(_sort_key(k, item[0][k]) for k in keys))


_PRECISION_ORDER = tuple(PRECISION_COLORS)


def _sort_key(key: str, value: object) -> tuple[int, str]:
    """Precisions in their usual order (fp32, fp16, bf16, int8, nf4, ...), everything else as is."""
    if key == "precision" and value in _PRECISION_ORDER:
        return (_PRECISION_ORDER.index(str(value)), "")
    return (len(_PRECISION_ORDER), f"{value:>12}" if isinstance(value, (int, float)) else str(value))


def _label(line: dict[str, object], frame: pd.DataFrame) -> str:
    """Precision, plus whatever else varies in the frame (model, batch size, new tokens)."""
    parts = []
    if frame["model"].nunique() > 1:
        parts.append(str(line["model"]))
    parts.append(str(line["precision"]))
    if "batch_size" in line and frame["batch_size"].nunique() > 1:
        parts.append(f"batch {line['batch_size']}")
    if "new_tokens" in line and frame["new_tokens"].nunique() > 1:
        parts.append(f"{line['new_tokens']} new")
    if "engine" in line and frame["engine"].nunique() > 1:
        parts.append(str(line["engine"]))
    return " · ".join(parts)


def _style(line: dict[str, object], frame: pd.DataFrame) -> dict[str, object]:
    """Color by precision; marker by batch size; line style by model, or by batch size for a single model."""
    models = sorted(frame["model"].unique())
    batches = sorted(frame["batch_size"].unique())
    batch_index = batches.index(line.get("batch_size", batches[0]))
    style_index = models.index(line["model"]) if len(models) > 1 else batch_index
    linestyle = _LINESTYLES[style_index % len(_LINESTYLES)]
    if "engine" in line and frame["engine"].nunique() > 1:
        linestyle = ENGINE_LINESTYLES.get(str(line["engine"]), ":")  # engines apart: solid compiled, dashed eager
    return {
        "color": precision_color(str(line["precision"])),
        "linestyle": linestyle,
        "marker": _MARKERS[batch_index % len(_MARKERS)],
        "markersize": 5,
        "linewidth": 1.8,
    }


def _ok(frame: pd.DataFrame, scenario: str, column: str) -> pd.DataFrame:
    if frame.empty or column not in frame:
        return frame.iloc[0:0]
    part = frame[(frame["scenario"] == scenario) & (frame["status"] == "ok")]
    return part[part[column].notna()]


def _line_plot(
    frame: pd.DataFrame,
    scenario: str,
    column: str,
    scale: float,
    title: str,
    xlabel: str,
    ylabel: str,
    keys: Sequence[str] = ("model", "precision", "batch_size", "new_tokens", "engine"),
) -> Figure | None:
    data = _ok(frame, scenario, column)
    if data.empty:
        return None
    keys = [k for k in keys if k in data]
    fig, ax = _new_figure()
    for line, part in _lines(data, keys):
        ax.plot(part["context_tokens"], part[column] * scale, label=_label(line, data), **_style(line, data))
    _context_axis(ax, data["context_tokens"])
    ax.set_ylim(0, max(float((data[column] * scale).max()) * 1.12, 1e-9))
    _finish(ax, title, data, xlabel, ylabel)
    return fig


def decode_throughput(frame: pd.DataFrame) -> Figure | None:
    """Decode tokens/s against context length, one line per precision (generate cases)."""
    return _line_plot(
        frame,
        "generate",
        "decode_tokens_per_s",
        1.0,
        "Decode throughput vs context length",
        "context length (prompt tokens)",
        "decode throughput (tokens/s)",
    )


def ttft(frame: pd.DataFrame) -> Figure | None:
    """Time to first token (prefill latency) against context length, one line per precision."""
    return _line_plot(
        frame,
        "generate",
        "ttft_s",
        1000.0,
        "Time to first token (prefill) vs context length",
        "context length (prompt tokens)",
        "TTFT, median (ms)",
    )


def bert_throughput(frame: pd.DataFrame) -> Figure | None:
    """Encoder sequences/s against sequence length, per precision and batch size."""
    return _line_plot(
        frame,
        "encode",
        "sequences_per_s",
        1.0,
        "Encoder throughput vs sequence length",
        "sequence length (tokens)",
        "throughput (sequences/s)",
        keys=("model", "precision", "batch_size"),
    )


def bert_latency(frame: pd.DataFrame) -> Figure | None:
    """Encoder forward latency against sequence length, per precision and batch size."""
    return _line_plot(
        frame,
        "encode",
        "latency_s",
        1000.0,
        "Encoder forward latency vs sequence length",
        "sequence length (tokens)",
        "latency, median (ms)",
        keys=("model", "precision", "batch_size"),
    )


def memory_column(frame: pd.DataFrame) -> tuple[str, str]:
    """The memory column a device's plots use and how it is labelled: NVML peak on a GPU, host RSS on a CPU."""
    if on_gpu(frame):
        return "nvml_process_peak_bytes", "peak VRAM, NVML process peak"
    return "host_peak_rss_bytes", "peak host RSS (not GPU memory)"


def memory_unit(values_bytes: Sequence[float], gpu: bool) -> tuple[float, str]:
    """GiB on a GPU (where the budgets live) or for large numbers; MiB below 2 GiB on a CPU."""
    top = max((float(v) for v in values_bytes if pd.notna(v)), default=0.0)
    return (GIB, "GiB") if gpu or top >= 2 * GIB else (MIB, "MiB")


def peak_memory(
    frame: pd.DataFrame,
    scenario: str = "generate",
    budget_lines: Sequence[tuple[int, str]] = DEFAULT_BUDGET_LINES,
) -> Figure | None:
    """Peak memory against context length per precision; on a GPU with budget lines; OOM cases marked.

    On a GPU this is the NVML process peak (VRAM as nvidia-smi shows it); on a CPU it is the
    peak host RSS, labelled as such, without VRAM budget lines.
    """
    if frame.empty:
        return None
    column, what = memory_column(frame)
    part = frame[frame["scenario"] == scenario]
    data = part[(part["status"] == "ok") & part[column].notna()] if column in part else part.iloc[0:0]
    ooms = part[part["status"] == "oom"]
    if data.empty and ooms.empty:
        return None
    gpu = on_gpu(frame)
    fig, ax = _new_figure()
    keys = (
        ("model", "precision", "batch_size", "new_tokens", "engine")
        if scenario == "generate"
        else ("model", "precision", "batch_size")
    )
    keys = tuple(k for k in keys if k in part)
    shown = data if not data.empty else ooms
    scale, unit = memory_unit(data[column] if not data.empty else [], gpu)
    for line, rows in _lines(data, keys) if not data.empty else []:
        ax.plot(rows["context_tokens"], rows[column] / scale, label=_label(line, shown), **_style(line, shown))
    top = float(data[column].max()) / scale if not data.empty else 0.0
    if gpu and scenario == "generate":
        for i, (value, text) in enumerate(sorted(budget_lines)):
            ax.axhline(
                value / GIB, color=("#b22222", "#555555")[i % 2], linestyle="--", linewidth=1.2, label=f"{text} budget"
            )
            top = max(top, value / GIB)
    ax.set_ylim(0, max(top * 1.12, 0.01))
    if not ooms.empty:
        xform = ax.get_xaxis_transform()
        both = pd.concat([data, ooms])
        for line, rows in _lines(ooms, keys):
            ax.scatter(
                rows["context_tokens"],
                [0.97] * len(rows),
                transform=xform,
                marker="X",
                s=70,
                color=precision_color(str(line["precision"])),
                edgecolors="black",
                linewidths=0.6,
                zorder=5,
                label=f"{_label(line, both)} (OOM)",
            )
    _context_axis(ax, pd.concat([data["context_tokens"], ooms["context_tokens"]]))
    title = "Peak VRAM vs context length" if gpu else "Peak host RSS vs context length (CPU run, not GPU memory)"
    if scenario == "encode":
        title = title.replace("context length", "sequence length")
    xlabel = "context length (prompt tokens)" if scenario == "generate" else "sequence length (tokens)"
    _finish(ax, title, shown, xlabel, f"{what} ({unit})")
    return fig


def breakdown_rows(frame: pd.DataFrame, scenario: str = "generate") -> pd.DataFrame:
    """Per line (model, precision, batch), the largest measured context split into memory segments, in bytes.

    On a GPU: CUDA context (baseline), weights, KV cache, rest = NVML peak minus those. On a CPU:
    weights, KV cache, rest of the process = peak host RSS minus those. ``rest`` is clipped at 0
    (``rest_clipped_bytes`` keeps what was cut).
    """
    column, _ = memory_column(frame)
    gpu = on_gpu(frame)
    data = _ok(frame, scenario, column)
    rows = []
    for (model, precision, batch), part in data.groupby(["model", "precision", "batch_size"], sort=True):
        row = part.sort_values("context_tokens").iloc[-1]
        total = int(row[column])
        base = row.get("baseline_bytes") if gpu else None
        segments = {
            ("CUDA context" if gpu else "process before model load"): _bytes(base),
            "weights": _bytes(row.get("weights_bytes")),
            "KV cache": _bytes(row.get("kv_cache_bytes")),
        }
        rest = total - sum(segments.values())
        rows.append(
            {
                "model": model,
                "precision": precision,
                "batch_size": int(batch),
                "context_tokens": int(row["context_tokens"]),
                "total_bytes": total,
                **segments,
                "rest": max(rest, 0),
                "rest_clipped_bytes": min(rest, 0),
            }
        )
    return pd.DataFrame(rows)


def _bytes(value: object) -> int:
    return int(value) if value is not None and pd.notna(value) else 0


def memory_breakdown(
    frame: pd.DataFrame,
    scenario: str = "generate",
    budget_lines: Sequence[tuple[int, str]] = DEFAULT_BUDGET_LINES,
) -> Figure | None:
    """Stacked bars of what the peak is made of at each line's largest context."""
    rows = breakdown_rows(frame, scenario)
    if rows.empty:
        return None
    gpu = on_gpu(frame)
    segments = ["CUDA context" if gpu else "process before model load", "weights", "KV cache", "rest"]
    segments = [s for s in segments if rows[s].sum() > 0]
    fig, ax = _new_figure(bottom=0.25)
    labels = []
    multi_model = rows["model"].nunique() > 1
    multi_batch = rows["batch_size"].nunique() > 1
    for _, row in rows.iterrows():
        parts = ([row["model"]] if multi_model else []) + [row["precision"]]
        if multi_batch:
            parts.append(f"batch {row['batch_size']}")
        labels.append(" · ".join(parts) + f"\n{row['context_tokens']} tokens")
    x = list(range(len(rows)))
    bottom = [0.0] * len(rows)
    scale, unit = memory_unit(rows["total_bytes"], gpu)
    for seg in segments:
        heights = [v / scale for v in rows[seg]]
        name = (
            "rest (activations, allocator slack)"
            if seg == "rest" and gpu
            else ("rest of the process (Python, torch, activations)" if seg == "rest" else seg)
        )
        ax.bar(x, heights, bottom=bottom, color=SEGMENT_COLORS[seg], edgecolor="white", width=0.6, label=name)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    for xi, total in zip(x, rows["total_bytes"], strict=True):
        ax.annotate(
            f"{total / scale:,.2f} {unit}" if unit == "GiB" else f"{total / scale:,.0f} {unit}",
            (xi, total / scale),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
    top = max(bottom) if bottom else 0.0
    if gpu and scenario == "generate":
        for i, (value, text) in enumerate(sorted(budget_lines)):
            ax.axhline(
                value / GIB, color=("#b22222", "#555555")[i % 2], linestyle="--", linewidth=1.2, label=f"{text} budget"
            )
            top = max(top, value / GIB)
    ax.set_ylim(0, max(top * 1.15, 0.01))
    ax.set_xticks(x, labels, fontsize=8)
    if gpu:
        title = "Peak VRAM breakdown at each line's largest context"
        ylabel = f"NVML process peak ({unit})"
    else:
        title = "Peak host RSS breakdown at each line's largest context (CPU run, not GPU memory)"
        ylabel = f"peak host RSS ({unit})"
    data = frame[frame["scenario"] == scenario]
    _finish(ax, title, data, "", ylabel)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncols=3, framealpha=0.85)
    ax.grid(False, axis="x")
    return fig


# (file stem, function, scenario-independent description) in report order.
PLOTS = (
    ("decode-throughput", decode_throughput, "Decode tokens/s vs context length"),
    ("ttft", ttft, "Time to first token vs context length"),
    ("peak-memory", peak_memory, "Peak memory vs context length"),
    ("memory-breakdown", memory_breakdown, "Peak memory breakdown at the largest context"),
    ("bert-throughput", bert_throughput, "Encoder sequences/s vs sequence length"),
    ("bert-latency", bert_latency, "Encoder latency vs sequence length"),
    ("bert-peak-memory", lambda f: peak_memory(f, "encode"), "Encoder peak memory vs sequence length"),
)
