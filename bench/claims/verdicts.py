"""Claims as data, and the pure verdict logic that judges them on records (DESIGN.md, "Claims").

A claim names a model, its precisions, a scenario and a byte budget. Memory is judged on
``memory.nvml_process_peak_bytes`` (what nvidia-smi shows: CUDA context plus allocator
reservations); a record with status ``oom`` on a GPU is a measurement that the case does not fit.
Where no GPU measured a case, the verdict says so: host-memory evidence is shown but never judged,
and a prediction (from an injected ``predict(spec) -> bytes | None``) is labelled a prediction.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bench.config.spec import CaseSpec
from bench.errors import BadInputError
from bench.results.record import Record
from bench.units import GB
from bench.units import GiB as GIB
from bench.units import MiB as MIB

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Evidence kinds, strongest first.
MEASURED_GPU = "measured-gpu"
MEASURED_GPU_CAPPED = "measured-gpu-capped"
HOST_MEMORY = "host-memory"
PREDICTED = "predicted"
EVIDENCE_KINDS = (MEASURED_GPU, MEASURED_GPU_CAPPED, PREDICTED, HOST_MEMORY)
EVIDENCE_LABELS = {
    MEASURED_GPU: "measured on a GPU (NVML process peak)",
    MEASURED_GPU_CAPPED: "measured on a GPU under a per-process memory cap (a simulated smaller card)",
    PREDICTED: "predicted, not measured on a GPU",
    HOST_MEMORY: "not measured on a GPU (host memory only)",
}
EVIDENCE_SHORT = {
    MEASURED_GPU: "GPU (NVML peak)",
    MEASURED_GPU_CAPPED: "GPU under a memory cap",
    PREDICTED: "prediction, no GPU",
    HOST_MEMORY: "host memory only, no GPU",
}

# Claim statuses.
HOLDS = "holds"
FAILS = "fails"
HOLDS_UP_TO = "holds up to"
NOT_MEASURED = "not measured on a GPU"
NO_EVIDENCE = "no evidence"

SYMBOLS = {True: "✅", False: "❌", None: "⚠️"}

Predictor = Callable[[CaseSpec], "int | None"]

_UNITS = {
    "b": 1,
    "byte": 1,
    "bytes": 1,
    "kib": 1 << 10,
    "mib": MIB,
    "gib": GIB,
    "tib": 1 << 40,
    "kb": 10**3,
    "mb": 10**6,
    "gb": GB,
    "tb": 10**12,
}
_BUDGET_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)\s*$")


def parse_bytes(text: str | int) -> int:
    """A byte count from "8 GiB", "6144 MiB", "16 GB" (decimal: 16e9) or a plain integer of bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text <= 0:
            raise BadInputError(f"budget {text} must be a positive number of bytes")
        return text
    match = _BUDGET_RE.match(str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise BadInputError(
            f"budget {text!r} is not a size with a unit; write e.g. '8 GiB' (8192 MiB, what a card's box calls 8 GB), "
            "'6144 MiB' or '16 GB' (decimal, 16e9 bytes)"
        )
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value <= 0:
        raise BadInputError(f"budget {text!r} must be larger than zero")
    return int(round(value))


@dataclass(frozen=True)
class Claim:
    """A memory claim: which cases (model, precisions, scenario, batch sizes) must fit in how many bytes.

    ``"*"`` matches any model, precision or scenario. ``contexts`` are the contexts the claim expects
    to see judged (a missing one is a gap; empty means "whatever was measured"); records at other
    contexts (e.g. from a boundary search) are judged too. ``new_tokens`` is used only to build the
    specs of missing cases for a prediction.
    """

    id: str
    title: str
    budget_bytes: int
    budget_text: str
    stated_as: str = ""
    model: str = "*"
    precisions: tuple[str, ...] = ("*",)
    scenario: str = "*"
    batch_sizes: tuple[int, ...] = ()
    contexts: tuple[int, ...] = ()
    new_tokens: int | None = None
    source: str = ""
    note: str = ""

    def matches(self, spec: CaseSpec) -> bool:
        """True when a case falls under this claim."""
        return (
            self.model in ("*", spec.model)
            and ("*" in self.precisions or spec.precision in self.precisions)
            and self.scenario in ("*", spec.scenario)
            and (not self.batch_sizes or spec.batch_size in self.batch_sizes)
        )

    @property
    def concrete(self) -> bool:
        """True when model, precisions and scenario are named (so missing cases can be listed)."""
        return self.model != "*" and "*" not in self.precisions and self.scenario != "*"

    def describe_cases(self) -> str:
        """The cases the claim covers, in words."""
        model = "every model" if self.model == "*" else self.model
        precisions = "every precision" if "*" in self.precisions else "/".join(self.precisions)
        scenario = "every scenario" if self.scenario == "*" else self.scenario
        return f"{model}, {precisions}, {scenario}"


def _claim_from_table(data: dict[str, Any], where: str) -> Claim:
    def need(key: str) -> Any:
        if key not in data:
            raise BadInputError(f"{where}: claim {data.get('id', '?')!r} has no {key!r}; add it")
        return data[key]

    known = {
        "id",
        "title",
        "budget",
        "stated_as",
        "model",
        "precisions",
        "scenario",
        "batch_sizes",
        "contexts",
        "new_tokens",
        "source",
        "note",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise BadInputError(
            f"{where}: claim {data.get('id', '?')!r} has unknown key(s) {', '.join(unknown)}; "
            f"valid keys: {', '.join(sorted(known))}"
        )
    precisions = need("precisions") if "precisions" in data else ["*"]
    if isinstance(precisions, str):
        precisions = [precisions]
    contexts = data.get("contexts", [])
    if not all(isinstance(c, int) and c > 0 for c in contexts):
        raise BadInputError(f"{where}: claim {data['id']!r} contexts {contexts!r} must be positive integers")
    budget = need("budget")
    return Claim(
        id=str(need("id")),
        title=str(need("title")),
        budget_bytes=parse_bytes(budget),
        budget_text=str(budget),
        stated_as=str(data.get("stated_as", "")),
        model=str(data.get("model", "*")),
        precisions=tuple(str(p) for p in precisions),
        scenario=str(data.get("scenario", "*")),
        batch_sizes=tuple(int(b) for b in data.get("batch_sizes", [])),
        contexts=tuple(sorted(set(contexts))),
        new_tokens=data.get("new_tokens"),
        source=str(data.get("source", "")),
        note=str(data.get("note", "")),
    )


def parse_claims(text: str, where: str = "claims file") -> list[Claim]:
    """Claims from TOML text: a list of ``[[claim]]`` tables."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(f"{where} is not valid TOML ({exc}); fix it or pass another --claims file") from exc
    tables = data.get("claim")
    if not isinstance(tables, list) or not tables:
        raise BadInputError(f"{where} has no [[claim]] tables; see bench/claims/default.toml for the format")
    claims = [_claim_from_table(t, where) for t in tables]
    ids = Counter(c.id for c in claims)
    repeated = [i for i, n in ids.items() if n > 1]
    if repeated:
        raise BadInputError(f"{where}: claim id(s) {', '.join(repeated)} appear more than once; make ids unique")
    return claims


def default_claims_text() -> str:
    """The TOML text of the claims shipped with the package."""
    return resources.files("bench").joinpath("claims", "default.toml").read_text(encoding="utf-8")


def load_claims(path: str | Path | None = None) -> list[Claim]:
    """The claims of a user's TOML file, or the shipped defaults when ``path`` is None."""
    if path is None:
        return parse_claims(default_claims_text(), "bench/claims/default.toml")
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"claims file {p} does not exist; pass a TOML file with [[claim]] tables")
    return parse_claims(p.read_text(encoding="utf-8"), str(p))


def evidence_of(record: Record) -> str:
    """How a record's memory number was obtained: on a GPU, on a GPU under a cap, or host memory only."""
    on_gpu = record.device.startswith("cuda") and (
        record.memory.nvml_process_peak_bytes is not None or record.status == "oom"
    )
    if not on_gpu:
        return HOST_MEMORY
    return MEASURED_GPU_CAPPED if record.memory.memory_cap_bytes else MEASURED_GPU


@dataclass(frozen=True)
class ContextVerdict:
    """One case of a claim at one context: the peak judged, the budget, the margin and the verdict.

    ``fits`` is None when nothing judgeable exists (host memory only). ``peak_bytes`` is the number
    judged: the NVML process peak for GPU evidence, the predicted peak for a prediction.
    """

    model: str
    precision: str
    scenario: str
    batch_size: int
    context_tokens: int
    new_tokens: int
    evidence: str
    budget_bytes: int
    fits: bool | None
    peak_bytes: int | None = None
    status: str = "ok"
    oom: bool = False
    host_peak_rss_bytes: int | None = None
    predicted_bytes: int | None = None
    memory_cap_bytes: int | None = None
    device: str = ""
    device_name: str = ""
    key: str = ""

    @property
    def margin_bytes(self) -> int | None:
        """Budget minus the judged peak: positive is headroom, negative is over budget."""
        return None if self.peak_bytes is None else self.budget_bytes - self.peak_bytes

    @property
    def margin_mib(self) -> float | None:
        """The margin in MiB (2**20 bytes)."""
        m = self.margin_bytes
        return None if m is None else m / MIB

    @property
    def margin_gb(self) -> float | None:
        """The margin in decimal GB (1e9 bytes)."""
        m = self.margin_bytes
        return None if m is None else m / GB

    @property
    def measured(self) -> bool:
        """True when the verdict rests on a GPU measurement (capped or not)."""
        return self.evidence in (MEASURED_GPU, MEASURED_GPU_CAPPED)

    @property
    def series(self) -> tuple[str, str, str, int, int]:
        """The line this point belongs to: model, precision, scenario, batch size, new tokens."""
        return (self.model, self.precision, self.scenario, self.batch_size, self.new_tokens)

    @property
    def symbol(self) -> str:
        """✅ / ❌ for a GPU measurement; ⚠️ for anything that is not one."""
        return SYMBOLS[self.fits] if self.measured else SYMBOLS[None]

    @property
    def text(self) -> str:
        """The verdict in words, never hiding how it was obtained."""
        if self.evidence == HOST_MEMORY:
            if self.device.startswith("cuda"):
                return "not judged: no NVML process peak was recorded"
            return "not measured on a GPU"
        if self.evidence == PREDICTED:
            words = "predicted to fit" if self.fits else "predicted not to fit"
            return f"{words} (not measured on a GPU)"
        capped = " under the cap" if self.evidence == MEASURED_GPU_CAPPED else ""
        if self.fits is None:
            if self.oom:
                return f"inconclusive: out of memory{capped} on a card smaller than the budget"
            return "not judged: no NVML process peak was recorded"
        if self.fits:
            return f"fits{capped}"
        return f"does not fit{capped} (out of memory)" if self.oom else f"does not fit{capped}"


@dataclass(frozen=True)
class SeriesVerdict:
    """One line of a claim (model, precision, scenario, batch, new tokens): where it holds and where it breaks."""

    model: str
    precision: str
    scenario: str
    batch_size: int
    new_tokens: int
    status: str
    holds_up_to: int | None
    fails_from: int | None
    evidence: str


@dataclass(frozen=True)
class ClaimVerdict:
    """A claim judged on one device's records: per-context verdicts, the overall verdict, gaps."""

    claim: Claim
    device: str
    device_name: str
    status: str
    evidence: str | None
    contexts: tuple[ContextVerdict, ...]
    series: tuple[SeriesVerdict, ...] = ()
    holds_up_to: int | None = None
    fails_from: int | None = None
    gaps: tuple[str, ...] = ()
    evidence_kinds: tuple[str, ...] = field(default=())

    @property
    def symbol(self) -> str:
        """✅ holds, ❌ fails, ⚠️ holds only up to a context, or not a GPU measurement, or no evidence."""
        if self.evidence not in (MEASURED_GPU, MEASURED_GPU_CAPPED):
            return SYMBOLS[None]
        return {HOLDS: SYMBOLS[True], FAILS: SYMBOLS[False]}.get(self.status, SYMBOLS[None])

    @property
    def text(self) -> str:
        """The overall verdict in words, with how it was obtained."""
        if self.status == NO_EVIDENCE:
            where = "" if self.device.startswith("cuda") else "not measured on a GPU: "
            return f"{where}no evidence (no record of a case this claim covers)"
        if self.status == NOT_MEASURED:
            return "not measured on a GPU (host memory only; no prediction)"
        words = {
            HOLDS: "holds",
            FAILS: "fails",
            HOLDS_UP_TO: f"holds up to {self.holds_up_to} tokens of context",
        }[self.status]
        if self.status == HOLDS_UP_TO and self.fails_from is not None:
            words += f", fails from {self.fails_from}"
        if self.evidence == PREDICTED:
            return f"predicted: {words} (not measured on a GPU)"
        if self.evidence == MEASURED_GPU_CAPPED:
            return f"{words} under a per-process memory cap"
        return words

    @property
    def measured_on_gpu(self) -> bool:
        """True when the overall verdict rests on GPU measurements."""
        return self.evidence in (MEASURED_GPU, MEASURED_GPU_CAPPED)


def card_bytes(record: Record) -> int | None:
    """The memory of the card the record ran on: the simulated card under a cap, else the real one."""
    return record.memory.memory_cap_bytes or record.memory.device_total_bytes


def gpu_context_verdict(claim: Claim, record: Record, evidence: str) -> ContextVerdict:
    """A GPU record judged against a claim: its NVML peak within the budget; an OOM does not fit.

    A finished case is judged on its NVML peak under a cap too (the cap limits the allocator, not
    kernels and library workspaces). An OOM on a card, real or simulated, smaller than the budget
    says nothing about the budget: that point is inconclusive (``fits`` None).
    """
    peak = record.memory.nvml_process_peak_bytes
    oom = record.status == "oom"
    if oom:
        card = card_bytes(record)
        fits: bool | None = None if card is not None and card < claim.budget_bytes else False
    else:
        fits = None if peak is None else peak <= claim.budget_bytes
    return _context(claim, record.spec, evidence, fits, record, peak_bytes=peak, oom=oom)


def _context(
    claim: Claim, spec: CaseSpec, evidence: str, fits: bool | None, record: Record | None = None, **extra: Any
) -> ContextVerdict:
    base: dict[str, Any] = {
        "model": spec.model,
        "precision": spec.precision,
        "scenario": spec.scenario,
        "batch_size": spec.batch_size,
        "context_tokens": spec.context_tokens,
        "new_tokens": spec.new_tokens,
        "evidence": evidence,
        "budget_bytes": claim.budget_bytes,
        "fits": fits,
        "key": spec.key,
    }
    if record is not None:
        base.update(
            status=record.status,
            host_peak_rss_bytes=record.memory.host_peak_rss_bytes,
            memory_cap_bytes=record.memory.memory_cap_bytes,
            device=record.device,
            device_name=record.device_name,
        )
    base.update(extra)
    return ContextVerdict(**base)


def _predicted(claim: Claim, spec: CaseSpec, predict: Predictor | None, record: Record | None) -> ContextVerdict:
    predicted = predict(spec.with_(device="cuda")) if predict is not None else None
    if predicted is None:
        return _context(claim, spec, HOST_MEMORY, None, record)
    predicted = int(predicted)
    return _context(
        claim, spec, PREDICTED, predicted <= claim.budget_bytes, record, peak_bytes=predicted, predicted_bytes=predicted
    )


def _describe(model: str, precision: str, scenario: str, context: int | None = None) -> str:
    where = f" at {context} tokens" if context is not None else ""
    return f"{model} {precision} {scenario}{where}"


def _series_verdicts(judged: Sequence[ContextVerdict]) -> tuple[SeriesVerdict, ...]:
    by_series: dict[tuple[str, str, str, int, int], list[ContextVerdict]] = {}
    for v in judged:
        by_series.setdefault(v.series, []).append(v)
    out = []
    for (model, precision, scenario, batch, new), points in sorted(by_series.items()):
        status, up_to, fails_from = _status_over_contexts(points)
        out.append(SeriesVerdict(model, precision, scenario, batch, new, status, up_to, fails_from, points[0].evidence))
    return tuple(out)


def _status_over_contexts(points: Sequence[ContextVerdict]) -> tuple[str, int | None, int | None]:
    """Holds / fails / holds up to C (the largest context below the first failing one)."""
    holds_at: dict[int, bool] = {}
    for v in points:
        if v.fits is None:
            continue
        holds_at[v.context_tokens] = holds_at.get(v.context_tokens, True) and bool(v.fits)
    contexts = sorted(holds_at)
    if not contexts:
        return NOT_MEASURED, None, None
    failing = [c for c in contexts if not holds_at[c]]
    if not failing:
        return HOLDS, contexts[-1], None
    first_fail = failing[0]
    below = [c for c in contexts if c < first_fail]
    if not below:
        return FAILS, None, first_fail
    return HOLDS_UP_TO, below[-1], first_fail


def _dominant_new_tokens(records: Sequence[Record]) -> int:
    counts = Counter(r.spec.new_tokens for r in records)
    return counts.most_common(1)[0][0] if counts else 0


def judge_claim(
    claim: Claim,
    records: Iterable[Record],
    *,
    predict: Predictor | None = None,
    device: str = "",
    device_name: str = "",
) -> ClaimVerdict:
    """Judge a claim on the records of one device (pass one device's records; never mix GPUs).

    GPU records are judged on the NVML process peak (OOM: does not fit). Records without a GPU
    measurement show host memory and, with ``predict``, a labelled prediction. Contexts the claim
    expects but no record has are gaps (predicted when ``predict`` is given). The overall verdict
    uses GPU measurements when there are any, else predictions.
    """
    matching = [r for r in records if claim.matches(r.spec)]
    if matching and not device:
        device, device_name = matching[0].device, matching[0].device_name
    gaps: list[str] = []
    verdicts: list[ContextVerdict] = []
    judged_at: set[tuple[str, int]] = set()
    accounted: set[tuple[str, int]] = set()
    for r in sorted(matching, key=lambda r: (r.spec.model, r.spec.precision, r.spec.batch_size, r.spec.context_tokens)):
        s = r.spec
        accounted.add((s.precision, s.context_tokens))
        if r.status not in ("ok", "oom"):
            reason = (r.error or "").strip().splitlines()[0] if (r.error or "").strip() else "no message"
            gaps.append(
                f"{_describe(s.model, s.precision, s.scenario, s.context_tokens)} (batch {s.batch_size}): "
                f"{r.status}: {reason}"
            )
            continue
        evidence = evidence_of(r)
        if evidence == HOST_MEMORY:
            verdicts.append(_predicted(claim, s, predict, r))
        else:
            verdicts.append(gpu_context_verdict(claim, r, evidence))
        judged_at.add((s.precision, s.context_tokens))
    if claim.concrete:
        new_tokens = claim.new_tokens if claim.new_tokens is not None else _dominant_new_tokens(matching)
        batch = claim.batch_sizes[0] if claim.batch_sizes else 1
        for precision in claim.precisions:
            if not claim.contexts and precision not in {p for p, _ in accounted}:
                gaps.append(f"no record of {_describe(claim.model, precision, claim.scenario)}")
            missing = [c for c in claim.contexts if (precision, c) not in accounted]
            if missing:
                listed = ", ".join(str(c) for c in missing)
                gaps.append(f"no record of {_describe(claim.model, precision, claim.scenario)} at {listed} tokens")
            for context in claim.contexts:
                if (precision, context) not in judged_at and predict is not None:
                    spec = CaseSpec(claim.model, precision, claim.scenario, batch, context, new_tokens)
                    v = _predicted(claim, spec, predict, None)
                    if v.evidence == PREDICTED:
                        verdicts.append(v)
    elif not matching:
        gaps.append(f"no record of any case this claim covers ({claim.describe_cases()})")

    measured = [v for v in verdicts if v.measured and v.fits is not None]
    predicted = [v for v in verdicts if v.evidence == PREDICTED]
    judged = measured or predicted
    kinds = tuple(k for k in EVIDENCE_KINDS if any(v.evidence == k for v in verdicts))
    evidence: str | None
    if judged:
        status, up_to, fails_from = _status_over_contexts(judged)
        if not measured:
            evidence = PREDICTED
        elif any(v.evidence == MEASURED_GPU_CAPPED for v in measured):
            evidence = MEASURED_GPU_CAPPED
        else:
            evidence = MEASURED_GPU
    else:
        status = NOT_MEASURED if verdicts else NO_EVIDENCE
        up_to = fails_from = None
        evidence = HOST_MEMORY if verdicts else None
    verdicts.sort(key=lambda v: (v.model, v.precision, v.scenario, v.batch_size, v.new_tokens, v.context_tokens))
    return ClaimVerdict(
        claim=claim,
        device=device,
        device_name=device_name,
        status=status,
        evidence=evidence,
        contexts=tuple(verdicts),
        series=_series_verdicts(judged),
        holds_up_to=up_to,
        fails_from=fails_from,
        gaps=tuple(gaps),
        evidence_kinds=kinds,
    )


def judge_claims(
    claims: Sequence[Claim],
    records: Sequence[Record],
    *,
    predict: Predictor | None = None,
    device: str = "",
    device_name: str = "",
) -> list[ClaimVerdict]:
    """Every claim judged on one device's records."""
    return [judge_claim(c, records, predict=predict, device=device, device_name=device_name) for c in claims]
