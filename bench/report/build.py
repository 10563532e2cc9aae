"""The run report: report.md, report.html (self-contained), the plots as PNG and the records as CSV.

Reporting never measures: it reads a run folder (its records, its envelopes, and the extra records of
a boundary search or a capped check in its sub-runs), groups the records by device (never averaging
two devices together), judges the claims on each device's records and writes everything into the run
folder. Missing data makes a partial report with its gaps listed; unusable input (no folder, no
results, no valid record) raises :class:`~bench.errors.BadInputError`.

The sections live in their own modules: :mod:`~bench.report.run_data` (reading and grouping),
:mod:`~bench.report.claims_section`, :mod:`~bench.report.device_section` (plots,
:mod:`~bench.report.tables`, telemetry) and :mod:`~bench.report.sections` (environment, quality flags).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.claims.claim_verdicts import ClaimVerdict, Predictor
from bench.claims.definitions import Claim, load_claims
from bench.report.advice import advice_blocks
from bench.report.claims_section import ClaimResults, claims_section, judge_groups
from bench.report.device_section import device_section, failure_gaps
from bench.report.document import Block, Bullets, Heading, Image, Para, render_html, render_markdown
from bench.report.load_section import loading_section
from bench.report.prediction_section import prediction_section
from bench.report.quantization_cost import quantization_cost_blocks
from bench.report.run_data import DeviceGroup, RunData, group_by_device, load_run
from bench.report.sections import environment_section, quality_section
from bench.results.frame import records_to_frame


@dataclass(frozen=True)
class ReportFiles:
    """What a report wrote into the run folder."""

    markdown: Path
    html: Path
    csv: Path
    plots: tuple[Path, ...]
    gaps: tuple[str, ...]
    verdicts: tuple[ClaimVerdict, ...]


def records_frame(data: RunData) -> pd.DataFrame:
    """Every record of the run and its sub-runs, with a ``record_source`` column ("run", "boundary", ...)."""
    parts = []
    for source, recs in data.sources():
        if recs:
            frame = records_to_frame(recs)
            frame.insert(0, "record_source", source)
            parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def _report_gaps(data: RunData, groups: Sequence[DeviceGroup], results: ClaimResults) -> list[str]:
    gaps = list(data.gaps) + failure_gaps(groups)
    for g, v, _ in results.verdicts:
        gaps += [f"claim '{v.claim.id}' on {g.label if g else 'no device'}: {gap}" for gap in v.gaps]
    return gaps


def _title(data: RunData, env: dict[str, Any]) -> str:
    suite = env.get("suite") or ", ".join(sorted({r.spec.suite for r in data.records}))
    return f"Benchmark report: {suite}" if suite else "Benchmark report"


def _intro(
    data: RunData, groups: Sequence[DeviceGroup], env: dict[str, Any], gaps: Sequence[str], notes: Sequence[str]
) -> list[Block]:
    blocks: list[Block] = [Heading(_title(data, env), 1)]
    blocks.append(
        Para(
            f"Run folder {data.folder.name}: {len(data.records)} record(s) on {len(groups)} device(s): "
            + "; ".join(g.label for g in groups)
            + "."
            + (f" Run id {env['run_id']}." if env.get("run_id") else "")
        )
    )
    if not any(g.gpu for g in groups):
        blocks.append(
            Para(
                'No GPU in this run: every memory verdict says "not measured on a GPU"; memory figures '
                "are host RSS, and predictions (where shown) are labelled as predictions.",
                "warn",
            )
        )
    if gaps:
        blocks.append(Para(f"Partial report: {len(gaps)} gap(s), listed under Gaps at the end.", "warn"))
    blocks += [Para(note, "note") for note in notes]
    return blocks


def build_report(
    run_dir: str | Path,
    claims: Sequence[Claim] | None = None,
    *,
    predict: Predictor | None = None,
    notes: Sequence[str] = (),
    make_plots: bool = True,
    smi_predict: Predictor | None = None,
) -> ReportFiles:
    """Write report.md, report.html, the plots and records.csv into ``run_dir``; returns what was written.

    ``make_plots=False`` leaves the plots out (tables and verdicts only, much faster). ``predict``: the
    predicted fit bytes of a case; ``smi_predict``: its predicted nvidia-smi reading (both labelled).
    """
    data = load_run(run_dir)
    folder = data.folder
    claims = list(claims) if claims is not None else load_claims()
    groups = group_by_device(data.records + data.boundary_records)
    results = judge_groups(claims, groups, data.capped, predict, smi_predict=smi_predict)
    gaps = _report_gaps(data, groups, results)
    env = data.envelopes[0] if data.envelopes else {}

    blocks = _intro(data, groups, env, gaps, notes)
    blocks += claims_section(results, data.envelopes)
    blocks += loading_section(data.records)
    prefix_needed = len(groups) > 1
    for g in groups:
        blocks += device_section(g, folder, f"{g.slug}--" if prefix_needed else "", make_plots)
        blocks += quantization_cost_blocks(g, folder, f"{g.slug}--" if prefix_needed else "", make_plots)
    blocks += advice_blocks(data.records)
    blocks += environment_section(data, groups)
    blocks += quality_section(groups)
    blocks += prediction_section(groups)
    blocks.append(Heading("Gaps", 2))
    blocks.append(Bullets(tuple(gaps)) if gaps else Para("None: every expected case has a record.", "ok"))

    images = [b for b in blocks if isinstance(b, Image)]
    files = [folder.report_md.name, folder.report_html.name, folder.records_csv.name] + [i.filename for i in images]
    blocks.append(Heading("Files", 2))
    blocks.append(Bullets(tuple(files)))

    title = _title(data, env)
    md_path, html_path = folder.write_report(render_markdown(blocks), render_html(blocks, title, folder.plots_dir))
    csv_path = folder.write_records_csv(records_frame(data))
    return ReportFiles(
        md_path,
        html_path,
        csv_path,
        tuple(folder.plot_file(i.filename) for i in images),
        tuple(gaps),
        tuple(v for _, v, _ in results.verdicts),
    )
