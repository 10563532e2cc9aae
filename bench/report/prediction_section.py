"""The report's "Predicted against measured" section: each record's own prediction beside its measurement.

Reads only the figures stored in the records (``Record.prediction``, ``Record.memory``) and the gaps derived from
them (:func:`bench.results.metrics.prediction_gaps`); a record off by more than 5% carries ``predictor_drift``.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.report.document import Block, Heading, Para, Table
from bench.report.run_data import DeviceGroup
from bench.results import metrics
from bench.results.record import Record
from bench.units import fmt_mib


def _pct(gap: float | None) -> str:
    return "—" if gap is None else f"{100 * gap:+.1f} %"


def _row(label: str, r: Record) -> tuple[str, ...]:
    p = r.prediction
    gaps = metrics.prediction_gaps(r)
    measured_peak = metrics.measured_peak_for_prediction(r)
    return (
        label,
        r.spec.model,
        r.spec.precision,
        f"B{r.spec.batch_size} L{r.spec.context_tokens}+{r.spec.new_tokens}",
        p.bnb_4bit_path or r.quantization.get("bnb_4bit_kernel_path") or "—",
        fmt_mib(r.memory.weights_bytes),
        fmt_mib(p.predicted_weights_bytes),
        _pct(gaps.get("predicted_weights_gap_fraction")),
        fmt_mib(measured_peak) if measured_peak is not None else "—",
        fmt_mib(p.predicted_peak_bytes),
        _pct(gaps.get("predicted_peak_gap_fraction")),
        "⚠️ drift" if metrics.predictor_drifted(r) else "✅",
    )


def prediction_section(groups: Sequence[DeviceGroup]) -> list[Block]:
    """Each measured record's predicted weights and peak beside the measured ones, with the gaps; nothing when no
    record carries a prediction (records written before schema 4, or by a command that attaches none)."""
    rows, kinds, readings, assumptions = [], [], set(), []
    for g in groups:
        for r in g.records:
            if not r.ok or r.prediction.predicted_weights_bytes is None:
                continue
            rows.append(_row(g.label, r))
            kinds.append("bad" if metrics.predictor_drifted(r) else "")
            readings.add(r.prediction.peak_reading)
            assumptions += [f"{r.spec.label}: {a}" for a in r.prediction.assumptions]
    if not rows:
        return []
    blocks: list[Block] = [
        Heading("Predicted against measured", 2),
        Para(
            "Every record carries the predictor's figures for its own case (labelled predicted), on the "
            "bitsandbytes 4-bit path the record says it took. Gap = (predicted - measured) / measured; over "
            f"{100 * metrics.PREDICTOR_DRIFT_FRACTION:.0f} % flags the record predictor drift. Peak readings: "
            + "; ".join(sorted(r for r in readings if r))
            + f". A CPU record's peak is not held against the prediction ({metrics.PEAK_READING_HOST_RSS}: "
            "a worker measures a cold process), only its weights.",
            "note",
        ),
        Table(
            (
                "Device",
                "Model",
                "Precision",
                "Shape",
                "4-bit path",
                "Weights MiB",
                "predicted",
                "gap",
                "Peak MiB",
                "predicted",
                "gap",
                "Drift",
            ),
            tuple(rows),
            "lllllrrrrrrl",
            tuple(kinds),
        ),
    ]
    if assumptions:
        blocks.append(
            Para(
                "What the predictor assumed that the loaded models contradict, or had to guess: "
                + "; ".join(assumptions),
                "warn",
            )
        )
    return blocks
