"""The results of one device: its plots, its results tables and its telemetry (power, energy, a timeline)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from bench.report import plots, roofline_plot
from bench.report.document import Block, Heading, Image, Para
from bench.report.energy import telemetry_blocks
from bench.report.engine_timings import llamacpp_blocks
from bench.report.run_data import DeviceGroup
from bench.report.tables import results_tables
from bench.results.run_folder import RunFolder

PLOT_DPI = 120


def plot_images(frame: pd.DataFrame, folder: RunFolder, prefix: str) -> list[Image]:
    """Draw every plot the data allows into the run folder; returns them as report images."""
    images = []
    for stem, make, _ in (*plots.PLOTS, *roofline_plot.PLOTS):
        fig = make(frame)
        if fig is None:
            continue
        name = f"{prefix}{stem}.png"
        fig.savefig(folder.plot_file(name), dpi=PLOT_DPI, bbox_inches="tight", pad_inches=0.08)
        title = fig.axes[0].get_title().replace("\n", " — ")
        images.append(Image(name, title))
    return images


def device_section(group: DeviceGroup, folder: RunFolder, prefix: str, make_plots: bool = True) -> list[Block]:
    """The "Results on <device>" section; plot files are named ``<prefix><plot>.png``."""
    frame = group.frame()
    blocks: list[Block] = [Heading(f"Results on {group.label}", 2)]
    if not group.gpu:
        blocks.append(
            Para(
                f"Measured on {group.label}, not on a GPU: memory figures are host RSS (the process's peak resident "
                "memory), not VRAM.",
                "warn",
            )
        )
    if make_plots:
        blocks += plot_images(frame, folder, prefix)
    blocks += results_tables(frame, group.gpu)
    blocks += llamacpp_blocks(group.records, group.gpu)
    blocks += telemetry_blocks(group.records, frame, folder, prefix, group.label, make_plots)
    return blocks


def failure_gaps(groups: Sequence[DeviceGroup]) -> list[str]:
    """A gap for each case that errored, timed out or was skipped, with the first line of its error."""
    gaps = []
    for g in groups:
        for r in g.records:
            if r.status in ("error", "timeout", "skipped"):
                s = r.spec
                reason = (r.error or "").strip().splitlines()[0] if (r.error or "").strip() else "no message"
                gaps.append(
                    f"{g.label}: {s.model} {s.precision} {s.scenario} batch {s.batch_size} at "
                    f"{s.context_tokens} tokens: {r.status} ({reason})"
                )
    return gaps
