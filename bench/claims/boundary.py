"""Locate where a claim stops holding: bisection on context length between measured points.

For each line of a claim (model, precision, scenario, batch, new tokens) that holds at some measured
context and fails at a larger one, extra cases are run between the largest holding and the smallest
failing context until the two are at most ``tolerance`` tokens apart. Cases are run by an injected
``run_cases(cases, policy, options)`` (``bench.measure.runner.run_cases`` in real use), so this module never
measures anything itself and is tested with a fake runner.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.claims.claim_verdicts import (
    HOLDS_UP_TO,
    HOST_MEMORY,
    Claim,
    ContextVerdict,
    evidence_of,
    gpu_context_verdict,
    judge_claim,
)
from bench.config.spec import CaseSpec, TimingPolicy
from bench.errors import BadInputError
from bench.results.record import Record

DEFAULT_TOLERANCE_TOKENS = 64

RunCases = Callable[[Sequence[CaseSpec], TimingPolicy, Any], list[Record]]


@dataclass(frozen=True)
class Boundary:
    """Where one line of a claim breaks: it holds at ``holds_at`` and fails at ``fails_at`` tokens."""

    claim_id: str
    model: str
    precision: str
    scenario: str
    batch_size: int
    new_tokens: int
    holds_at: int
    fails_at: int
    steps: tuple[ContextVerdict, ...] = ()
    note: str = ""

    @property
    def width(self) -> int:
        """Tokens between the largest holding and the smallest failing context."""
        return self.fails_at - self.holds_at

    def resolved(self, tolerance: int = DEFAULT_TOLERANCE_TOKENS) -> bool:
        """True when the boundary is located to within ``tolerance`` tokens."""
        return self.width <= tolerance


def _series_of(spec: CaseSpec) -> tuple[str, str, str, int, int]:
    return (spec.model, spec.precision, spec.scenario, spec.batch_size, spec.new_tokens)


def _template(records: Sequence[Record], series: tuple[str, str, str, int, int], context: int) -> CaseSpec:
    for r in records:
        if _series_of(r.spec) == series and r.spec.context_tokens == context:
            return r.spec
    raise LookupError(f"no record of {series} at {context} tokens")


def _policy(records: Sequence[Record], series: tuple[str, str, str, int, int]) -> TimingPolicy:
    for r in records:
        if _series_of(r.spec) == series and r.status == "ok":
            return r.policy
    return TimingPolicy()


def _judge_one(claim: Claim, spec: CaseSpec, records: Sequence[Record]) -> ContextVerdict | str:
    """The verdict of the record the runner returned for ``spec``, or why there is none."""
    mine = [r for r in records if r.spec.key == spec.key] or list(records[-1:])
    if not mine:
        return "the runner returned no record"
    record = mine[-1]
    if record.status not in ("ok", "oom"):
        reason = (record.error or "").strip().splitlines()[0] if (record.error or "").strip() else "no message"
        return f"the case at {spec.context_tokens} tokens ended with status {record.status} ({reason})"
    evidence = evidence_of(record)
    if evidence == HOST_MEMORY:
        return f"the case at {spec.context_tokens} tokens was not measured on a GPU (device {record.device})"
    return gpu_context_verdict(claim, record, evidence)


def bisect_series(
    claim: Claim,
    template: CaseSpec,
    policy: TimingPolicy,
    holds_at: int,
    fails_at: int,
    run_cases: RunCases,
    options: Any,
    tolerance: int = DEFAULT_TOLERANCE_TOKENS,
) -> Boundary:
    """Bisect one line between a holding and a failing context until they are ``tolerance`` tokens apart."""
    if tolerance < 1:
        raise BadInputError(f"boundary tolerance {tolerance} must be at least 1 token")
    if not holds_at < fails_at:
        raise ValueError(f"bisection needs holds_at < fails_at, got {holds_at} and {fails_at}")
    lo, hi = holds_at, fails_at
    steps: list[ContextVerdict] = []
    note = ""
    while hi - lo > tolerance:
        mid = (lo + hi) // 2
        spec = template.with_(context_tokens=mid)
        outcome = _judge_one(claim, spec, run_cases([spec], policy, options))
        if isinstance(outcome, str):
            note = f"stopped: {outcome}"
            break
        steps.append(outcome)
        if outcome.fits:
            lo = mid
        else:
            hi = mid
    model, precision, scenario, batch, new = _series_of(template)
    return Boundary(claim.id, model, precision, scenario, batch, new, lo, hi, tuple(steps), note)


def find_boundaries(
    claim: Claim,
    records: Sequence[Record],
    run_cases: RunCases,
    options: Any,
    tolerance: int = DEFAULT_TOLERANCE_TOKENS,
) -> list[Boundary]:
    """Bisect every line of ``claim`` that holds at a measured context and fails at a larger one.

    ``records`` are one GPU's records; lines measured only on a CPU are not searched (there is no GPU
    number to judge). ``options`` is passed through to ``run_cases`` (a ``bench.measure.run_options.RunOptions``).
    """
    verdict = judge_claim(claim, records)
    boundaries = []
    for line in verdict.series:
        if line.status != HOLDS_UP_TO or line.holds_up_to is None or line.fails_from is None:
            continue
        if line.evidence not in ("measured-gpu", "measured-gpu-capped"):
            continue
        series = (line.model, line.precision, line.scenario, line.batch_size, line.new_tokens)
        template = _template(records, series, line.holds_up_to)
        boundaries.append(
            bisect_series(
                claim,
                template,
                _policy(records, series),
                line.holds_up_to,
                line.fails_from,
                run_cases,
                options,
                tolerance,
            )
        )
    return boundaries
