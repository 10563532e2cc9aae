"""``bench report DIR``: the report of a run folder, with claim verdicts; optionally extra GPU measurements.

``--find-boundary`` and ``--memory-cap-check`` take those measurements (:mod:`bench.commands.claim_measurements`)
and write their records into the run folder before the report is written.
"""

from __future__ import annotations

import argparse
import sys
import webbrowser
from pathlib import Path
from typing import Any

from bench.claims.boundary import DEFAULT_TOLERANCE_TOKENS
from bench.claims.claim_verdicts import Predictor
from bench.claims.definitions import load_claims
from bench.commands.claim_measurements import check_claims_under_cap, find_claim_boundaries
from bench.report.run_data import load_run


def write_report(
    run_dir: str | Path, claims_file: str | Path | None = None, *, predict: Predictor | None = None
) -> Path:
    """Write report.md, report.html, plots and records.csv into ``run_dir``; returns the report.md path.

    This is what ``bench run`` calls when its cases are done. Claim contexts without a GPU measurement
    get labelled predictions (``predict``, default: the predictor for a generic CUDA GPU).
    """
    from bench.predict.claims_adapter import claims_nvidia_smi_predictor, claims_predictor
    from bench.report.build import build_report  # pandas and matplotlib load here, not for every command

    predict = predict if predict is not None else claims_predictor()
    smi = claims_nvidia_smi_predictor()
    return build_report(run_dir, load_claims(claims_file), predict=predict, smi_predict=smi).markdown


def _cmd(args: argparse.Namespace) -> int:
    from bench.predict.claims_adapter import claims_nvidia_smi_predictor, claims_predictor
    from bench.report.build import build_report

    run_dir = Path(args.run_dir)
    load_run(run_dir)  # unusable input fails here, before any extra measurement
    claims = load_claims(args.claims)
    notes: list[str] = []
    if args.find_boundary:
        notes += find_claim_boundaries(run_dir, claims)
    if args.memory_cap_check:
        notes += check_claims_under_cap(run_dir, claims)
    files = build_report(
        run_dir, claims, notes=notes, predict=claims_predictor(), smi_predict=claims_nvidia_smi_predictor()
    )
    for note in notes:
        print(note, file=sys.stderr)
    for v in files.verdicts:
        print(f"{v.symbol} {v.claim.title} [{v.device_name or 'no device'}]: {v.text}")
    if files.gaps:
        print(f"partial report: {len(files.gaps)} gap(s), listed in {files.markdown.name}", file=sys.stderr)
    print(f"wrote {files.markdown}, {files.html.name}, {files.csv.name} and {len(files.plots)} plot(s)")
    if args.open:
        webbrowser.open(files.html.resolve().as_uri())
    return 0


def register(subparsers: Any) -> None:
    """Add ``bench report``."""
    p = subparsers.add_parser(
        "report",
        help="write report.md, report.html, plots and records.csv for a run folder, with claim verdicts",
        description="Write the report of a run folder: Markdown (for a CI job summary), a self-contained HTML page, "
        "the plots as PNG and the records as CSV, with a verdict for each memory claim.",
    )
    p.add_argument("run_dir", metavar="DIR", help="a run folder (the --out of 'bench run')")
    p.add_argument(
        "--claims",
        metavar="FILE",
        default=None,
        help="a TOML file of [[claim]] tables (default: the claims shipped in bench/claims/default.toml)",
    )
    p.add_argument(
        "--find-boundary",
        action="store_true",
        help=f"run extra cases to locate where each claim breaks, to within {DEFAULT_TOLERANCE_TOKENS} "
        "tokens (needs the run's GPU)",
    )
    p.add_argument(
        "--memory-cap-check",
        action="store_true",
        help="rerun each claim's cases under a per-process memory cap of the budget minus the CUDA context "
        "(needs a GPU larger than the budget)",
    )
    p.add_argument("--open", action="store_true", help="open report.html in a browser when done")
    p.set_defaults(func=_cmd)
