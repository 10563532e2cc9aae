"""Extra GPU measurements ``bench report`` can take for its claims, before it writes the report.

:func:`find_claim_boundaries` bisects on context length where a claim holds at one measured context and fails
at the next, to within 64 tokens; :func:`check_claims_under_cap` reruns each claim's cases under a per-process
memory cap on a GPU larger than the budget. Both need the GPU the run was measured on and write their records
into the run folder (``boundary/``, ``capped/<claim>/``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.claims.boundary import DEFAULT_TOLERANCE_TOKENS, find_boundaries
from bench.claims.capcheck import run_capped_check
from bench.claims.definitions import Claim
from bench.errors import BadInputError
from bench.report.run_data import group_by_device, load_run
from bench.results.run_folder import RunFolder


def _runner() -> tuple[Callable[..., Any], type]:
    try:
        from bench.measure.run_options import RunOptions
        from bench.measure.runner import run_cases
    except ImportError as exc:  # pragma: no cover - the runner ships with the package
        raise BadInputError(f"extra measurements need bench.measure.runner, which cannot be imported ({exc})") from exc
    return run_cases, RunOptions


def _prediction_annotator() -> Callable[[Any], Any]:
    """Each extra record's own prediction, as ``bench run`` attaches it (bench.predict.record_check)."""
    from bench.predict.record_check import prediction_annotator

    return prediction_annotator()


def _local_gpu_names() -> list[str]:
    """Names of the CUDA GPUs this process can use (empty without CUDA)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return []
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def _gpu_groups_here(groups: list[Any], what: str, notes: list[str]) -> list[Any]:
    """The GPU groups whose GPU model this machine has; notes say why others are left out."""
    names = _local_gpu_names()
    usable = []
    for g in groups:
        if g.device_name in names:
            usable.append(g)
        else:
            here = ", ".join(names) or "no CUDA GPU"
            notes.append(f"{what} not run for {g.label}: it needs that GPU, and this machine has {here}.")
    return usable


def find_claim_boundaries(
    run_dir: Path,
    claims: list[Claim],
    run_cases: Callable[..., Any] | None = None,
    make_options: Callable[[Path], Any] | None = None,
) -> list[str]:
    """Bisect every claim line that breaks between two measured contexts; returns notes for the report."""
    data = load_run(run_dir)
    local = run_cases is None or make_options is None
    if run_cases is None or make_options is None:
        run_cases, options_cls = _runner()
        run_id = data.records[0].run_id

        def make_options(out: Path) -> Any:
            return options_cls(out_dir=out, run_id=run_id, annotate=_prediction_annotator())

    options = make_options(RunFolder(run_dir).boundary().root)
    notes: list[str] = []
    gpu_groups = [g for g in group_by_device(data.records + data.boundary_records) if g.gpu]
    if not gpu_groups:
        return ["Boundary search not run: this run has no GPU records (a boundary needs GPU measurements)."]
    if local:
        gpu_groups = _gpu_groups_here(gpu_groups, "Boundary search", notes)
    for group in gpu_groups:
        for claim in claims:
            for b in find_boundaries(claim, group.records, run_cases, options, DEFAULT_TOLERANCE_TOKENS):
                where = f"{b.model} {b.precision} batch {b.batch_size} on {group.label}"
                state = "located" if b.resolved() else "not located"
                notes.append(
                    f"Boundary of '{claim.id}' for {where}: holds at {b.holds_at}, fails at {b.fails_at} "
                    f"tokens ({state} to within {DEFAULT_TOLERANCE_TOKENS}; {len(b.steps)} extra case(s))"
                    + (f"; {b.note}" if b.note else "")
                )
    return notes or ["Boundary search: no claim holds at one measured context and fails at a larger one."]


def check_claims_under_cap(
    run_dir: Path,
    claims: list[Claim],
    run_cases: Callable[..., Any] | None = None,
    make_options: Callable[[Path, int], Any] | None = None,
) -> list[str]:
    """Rerun each claim's GPU cases under a per-process cap (budget minus CUDA context); returns notes."""
    data = load_run(run_dir)
    local = run_cases is None or make_options is None
    if run_cases is None or make_options is None:
        run_cases, options_cls = _runner()
        run_id = data.records[0].run_id

        def make_options(out: Path, cap: int) -> Any:
            return options_cls(out_dir=out, memory_cap_bytes=cap, run_id=run_id, annotate=_prediction_annotator())

    notes: list[str] = []
    gpu_groups = [g for g in group_by_device(data.records) if g.gpu]
    if not gpu_groups:
        return ["Memory-cap check not run: this run has no GPU records (it needs a GPU larger than the budget)."]
    if local:
        gpu_groups = _gpu_groups_here(gpu_groups, "Memory-cap check", notes)
    for group in gpu_groups:
        for claim in claims:
            plan, verdict = run_capped_check(claim, group.records, run_cases, make_options, run_dir)
            if verdict is None:
                notes.append(f"Memory-cap check of '{claim.id}' on {group.label} not run: {plan.reason}.")
            else:
                notes.append(
                    f"Memory-cap check of '{claim.id}' on {group.label}: {len(plan.cases)} case(s) under a "
                    f"cap of {plan.cap_bytes / (1 << 20):,.0f} MiB: {verdict.symbol} {verdict.text}."
                )
    return notes
