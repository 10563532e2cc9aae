"""A timeline figure of one case's telemetry: power, SM clock and device memory (host CPU and RSS on a CPU)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from bench.results.telemetry_fields import BENIGN_REASONS, reason_names
from bench.units import GiB as GIB

# (row key, axis label, scale) in the order panels are stacked; a panel is drawn when its key has data.
_GPU_PANELS = (
    ("power_w", "power (W)", 1.0),
    ("sm_clock_mhz", "SM clock (MHz)", 1.0),
    ("memory", "device memory (GiB)", 1.0 / GIB),
)
_HOST_PANELS = (
    ("cpu_util_pct", "CPU (% of a core)", 1.0),
    ("rss_bytes", "host RSS (GiB)", 1.0 / GIB),
)


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float], str]:
    """(t, value, legend label) for one panel; "memory" is this process's bytes, else device used."""
    if key == "memory":
        for candidate, label in (("process_bytes", "this process"), ("device_used_bytes", "device used")):
            pts = [(r["t_s"], r[candidate]) for r in rows if r.get(candidate) is not None]
            if pts:
                return [t for t, _ in pts], [v for _, v in pts], label
        return [], [], ""
    pts = [(r["t_s"], r[key]) for r in rows if r.get(key) is not None]
    return [t for t, _ in pts], [v for _, v in pts], ""


def _throttled_spans(rows: Sequence[Mapping[str, Any]]) -> list[tuple[float, float]]:
    """Time intervals whose starting sample had a non-benign clock event reason."""
    spans = []
    for a, b in zip(rows, rows[1:], strict=False):
        mask = a.get("throttle_mask")
        if mask and set(reason_names(int(mask))) - BENIGN_REASONS:
            spans.append((a["t_s"], b["t_s"]))
    return spans


def plot_timeline(timeline_rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], title: str) -> Path:
    """Write a PNG of a case's telemetry timeline (rows as in ``Telemetry.timeline``) and return its path.

    GPU rows give stacked panels of power, SM clock and device memory (this process's, else the
    device's), with throttled intervals shaded; CPU-only rows give CPU utilization and RSS. Marked
    samples are drawn as vertical lines. With no samples the figure says so.
    """
    rows = sorted((r for r in timeline_rows if r.get("t_s") is not None), key=lambda r: r["t_s"])
    panels = [p for p in _GPU_PANELS if _series(rows, p[0])[0]]
    if not panels:
        panels = [p for p in _HOST_PANELS if _series(rows, p[0])[0]]
    fig = Figure(figsize=(8, 1.2 + 1.9 * max(1, len(panels))), layout="constrained")
    fig.suptitle(title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not panels:
        ax = fig.subplots()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no telemetry samples for this case", ha="center", va="center")
        fig.savefig(out, dpi=110)
        return out
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    spans = _throttled_spans(rows)
    marks = [(r["t_s"], str(r["mark"])) for r in rows if r.get("mark")]
    for ax, (key, label, scale) in zip(axes, panels, strict=True):
        t, v, legend = _series(rows, key)
        ax.plot(t, [x * scale for x in v], marker="." if len(t) < 50 else None, linewidth=1.2, label=legend or None)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        for start, end in spans:
            ax.axvspan(start, end, color="tab:red", alpha=0.15, linewidth=0)
        for t_mark, _ in marks:
            ax.axvline(t_mark, color="grey", linestyle="--", linewidth=0.8)
        if legend:
            ax.legend(loc="upper right", fontsize="small")
    for t_mark, text in marks:
        axes[0].annotate(
            text, (t_mark, 1.0), xycoords=("data", "axes fraction"), fontsize="x-small", rotation=90, va="top"
        )
    if spans:
        axes[0].set_title("shaded: clocks held down (power or thermal)", fontsize="small", loc="left")
    axes[-1].set_xlabel("time since sampler start (s)")
    fig.savefig(out, dpi=110)
    return out
