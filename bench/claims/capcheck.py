"""The second, independent check of a memory claim: its cases rerun under a per-process memory cap.

On a GPU with more memory than a claim's budget, the claim's cases are run again on a simulated
card of the budget's size: each worker measures its CUDA context and caps the allocator at the
budget minus that context (the context is not allocator memory). A case that runs out of memory
does not fit; one that finishes is judged on its NVML peak (kernels and library workspaces live
outside the allocator's cap). Cases are run by an injected ``run_cases(cases, policy, options)``; each claim writes
into its own folder (``DIR/capped/<claim id>``) so that the same case under two caps never collides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.claims.claim_verdicts import MEASURED_GPU, Claim, ClaimVerdict, evidence_of, judge_claim
from bench.config.spec import CaseSpec, TimingPolicy
from bench.results.record import Record
from bench.results.run_folder import RunFolder

RunCases = Callable[[Sequence[CaseSpec], TimingPolicy, Any], list[Record]]
MakeOptions = Callable[[Path, int], Any]


@dataclass(frozen=True)
class CapPlan:
    """What a capped check would run, or why it cannot: the cap, the context it subtracts, the cases."""

    claim_id: str
    cap_bytes: int | None
    context_bytes: int | None
    device_total_bytes: int | None
    cases: tuple[CaseSpec, ...]
    reason: str = ""

    @property
    def runnable(self) -> bool:
        """True when there is a cap and at least one case to run under it."""
        return self.cap_bytes is not None and bool(self.cases) and not self.reason


def plan_capped_check(claim: Claim, records: Sequence[Record]) -> CapPlan:
    """The simulated card (the budget; workers subtract their own CUDA context) and the claim's GPU cases."""
    gpu = [r for r in records if claim.matches(r.spec) and evidence_of(r) == MEASURED_GPU]
    if not gpu:
        return CapPlan(claim.id, None, None, None, (), "no GPU measurement of a case this claim covers")
    totals = [r.memory.device_total_bytes for r in gpu if r.memory.device_total_bytes]
    total = max(totals) if totals else None
    if total is None:
        return CapPlan(claim.id, None, None, None, (), "the records do not say how much memory the GPU has")
    if total <= claim.budget_bytes:
        return CapPlan(
            claim.id,
            None,
            None,
            total,
            (),
            f"the GPU holds {total / (1 << 30):.1f} GiB, not more than the {claim.budget_text} budget: "
            "the plain measurement already is the real test",
        )
    contexts = [r.memory.baseline_bytes for r in gpu if r.memory.baseline_bytes]
    if not contexts:
        return CapPlan(claim.id, None, None, total, (), "no record measured the CUDA context (baseline_bytes)")
    context = max(contexts)
    cap = claim.budget_bytes
    if cap - context <= 0:
        reason = f"the CUDA context alone ({context} bytes) exceeds the budget"
        return CapPlan(claim.id, None, context, total, (), reason)
    cases = tuple(dict.fromkeys(r.spec for r in sorted(gpu, key=lambda r: r.spec)))
    return CapPlan(claim.id, cap, context, total, cases)


def run_capped_check(
    claim: Claim,
    records: Sequence[Record],
    run_cases: RunCases,
    make_options: MakeOptions,
    run_dir: Path,
) -> tuple[CapPlan, ClaimVerdict | None]:
    """Run a claim's GPU cases under the cap; returns the plan and the verdict on the capped records.

    ``make_options(out_dir, cap_bytes)`` builds the runner's options (``RunOptions(out_dir=...,
    memory_cap_bytes=...)``). Records the runner returns without ``memory_cap_bytes`` get it filled in.
    """
    plan = plan_capped_check(claim, records)
    if not plan.runnable or plan.cap_bytes is None:
        return plan, None
    policy = next((r.policy for r in records if r.spec in plan.cases and r.status == "ok"), TimingPolicy())
    out = run_cases(list(plan.cases), policy, make_options(RunFolder(run_dir).capped(claim.id).root, plan.cap_bytes))
    capped = [_with_cap(r, plan.cap_bytes) for r in out]
    return plan, judge_claim(claim, capped)


def _with_cap(record: Record, cap: int) -> Record:
    if record.memory.memory_cap_bytes:
        return record
    from dataclasses import replace

    return record.replace(memory=replace(record.memory, memory_cap_bytes=cap))
