"""The report's telemetry section: energy per token per precision, and a timeline of one case."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from bench.report.document import Block, Heading, Image, Para, Table
from bench.report.timeline import plot_timeline
from bench.results.record import Record
from bench.results.run_folder import RunFolder


def _median(frame: pd.DataFrame, column: str) -> float | None:
    if column not in frame or frame[column].dropna().empty:
        return None
    return float(frame[column].dropna().median())


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def energy_table(frame: pd.DataFrame) -> Table | None:
    """Per model x precision: median joules per token (or sequence), mean power, peak temperature, throttling."""
    ok = frame[frame["status"] == "ok"]
    if ok.empty or "telemetry_energy_j" not in ok or ok["telemetry_energy_j"].dropna().empty:
        return None
    rows = []
    for (model, precision), g in ok.groupby(["model", "precision"], sort=True):
        per_token = _median(g, "telemetry_joules_per_token")
        per_seq = _median(g, "telemetry_joules_per_sequence")
        throttled = int(g.get("telemetry_throttled", pd.Series(dtype=bool)).fillna(False).astype(bool).sum())
        rows.append(
            (
                str(model),
                str(precision),
                _fmt(per_token, 3),
                _fmt(per_seq, 3),
                _fmt(_median(g, "telemetry_power_mean_w"), 0),
                _fmt(_median(g, "telemetry_power_max_w"), 0),
                _fmt(_median(g, "telemetry_temperature_max_c"), 0),
                f"{throttled} of {len(g)}",
            )
        )
    return Table(
        (
            "Model",
            "Precision",
            "J/token",
            "J/sequence",
            "Mean power (W)",
            "Max power (W)",
            "Max temp (°C)",
            "Throttled cases",
        ),
        tuple(rows),
        "llrrrrrr",
        caption="Energy over the timed repetitions (whole card, NVML energy counter or integrated power), "
        "median over the cases of each precision",
    )


def pick_timeline_case(records: Sequence[Record], timelines: dict[str, list[dict]]) -> Record | None:
    """The case whose timeline is most telling: the longest successful one that has a timeline."""
    candidates = [r for r in records if r.ok and r.spec.key in timelines]
    if not candidates:
        return None
    return max(
        candidates,
        key=lambda r: (
            (r.metrics.get("e2e_s") or r.metrics.get("latency_s") or 0.0)
            * max(1, len(r.samples.e2e_s or r.samples.latency_s))
        ),
    )


def telemetry_blocks(
    records: Sequence[Record],
    frame: pd.DataFrame,
    folder: RunFolder,
    prefix: str,
    label: str,
    make_plots: bool = True,
) -> list[Block]:
    """The telemetry section of one device's results."""
    blocks: list[Block] = [Heading(f"Power, energy and clocks on {label}", 3)]
    table = energy_table(frame)
    gpu = any(r.device.startswith("cuda") for r in records)
    if table is not None:
        blocks.append(table)
    elif gpu:
        blocks.append(
            Para(
                "No energy readings: NVML could not report power or energy on this GPU "
                "(see each record's telemetry 'unavailable' reasons).",
                "warn",
            )
        )
    else:
        blocks.append(
            Para("Energy is not measured on a CPU; the timeline shows CPU utilisation and resident memory.", "note")
        )
    timelines = folder.read_timelines()
    case = pick_timeline_case(records, timelines)
    if case is not None and make_plots:
        s = case.spec
        title = (
            f"Telemetry timeline: {s.model} {s.precision} {s.scenario} B={s.batch_size} "
            f"L={s.context_tokens} on {case.device_name or case.device}"
        )
        name = f"{prefix}timeline.png"
        plot_timeline(timelines[s.key], folder.plot_file(name), title)
        blocks.append(Image(name, title))
    return blocks
