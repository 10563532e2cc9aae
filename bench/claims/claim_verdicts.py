"""The pure verdict logic that judges claims on records (DESIGN.md, "Claims").

Memory is judged on what a card must hold to load and run the case: the live peak over loading and
generation plus the memory outside the allocator (:func:`bench.results.metrics.measured_fit_bytes`; the
predictor's ``fit_bytes`` for a prediction). A record with status ``oom`` on a GPU is a measurement that the
case does not fit. Beside each point: what nvidia-smi shows (:mod:`bench.claims.nvidia_smi`), which counts
the allocator's cache too. Where no GPU measured a case, the verdict says so: host-memory evidence is
shown but never judged, and a prediction (from an injected ``predict(spec) -> bytes | None``) is labelled a
prediction. A claim is judged point by point (:func:`context_verdicts`), then each line of points
and the claim as a whole are rolled up (:func:`roll_up`); :func:`judge_claim` does both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.claims.definitions import Claim
from bench.claims.evidence import LOAD_NOT_RECORDED, STEADY_NVML_ONLY, WEAK_SYMBOLS, reading_words, weak_readings
from bench.claims.nvidia_smi import NvidiaSmiView, nvidia_smi_view
from bench.config.precision import get_precision
from bench.config.spec import CaseSpec
from bench.results.metrics import host_live_peak_rss_bytes, measured_fit_bytes
from bench.results.record import Record
from bench.units import GB
from bench.units import MiB as MIB

# Evidence kinds, strongest first.
MEASURED_GPU = "measured-gpu"
MEASURED_GPU_CAPPED = "measured-gpu-capped"
HOST_MEMORY = "host-memory"
PREDICTED = "predicted"
EVIDENCE_KINDS = (MEASURED_GPU, MEASURED_GPU_CAPPED, PREDICTED, HOST_MEMORY)
EVIDENCE_LABELS = {
    MEASURED_GPU: "measured on a GPU (live peak over loading and generation, plus context)",
    MEASURED_GPU_CAPPED: "measured on a GPU under a per-process memory cap (a simulated smaller card)",
    PREDICTED: "predicted, not measured on a GPU",
    HOST_MEMORY: "not measured on a GPU (host memory only)",
}
EVIDENCE_SHORT = {
    MEASURED_GPU: "GPU (live peak)",
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
    judged: for GPU evidence the live peak over loading and generation plus the memory outside the allocator
    (:func:`~bench.results.metrics.measured_fit_bytes`), for a prediction the predicted ``fit_bytes``.
    ``host_peak_rss_bytes``: the host's peak RSS over loading and generation (host evidence, never judged).
    ``nvidia_smi``: what nvidia-smi shows for the process after loading and one generation, measured or
    predicted, and why it differs from ``peak_bytes``.
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
    readings: tuple[str, ...] = ()  # weaknesses of the GPU reading (bench.claims.evidence); () for a firm one
    nvidia_smi: NvidiaSmiView = NvidiaSmiView(None, None)

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
        """✅ / ❌ for a firm GPU measurement, ☑️ / ✖️ for a weak reading; ⚠️ for anything that is not one."""
        if not self.measured:
            return SYMBOLS[None]
        if self.readings and self.fits is not None:
            return WEAK_SYMBOLS[self.fits]
        return SYMBOLS[self.fits]

    @property
    def text(self) -> str:
        """The verdict in words, never hiding how it was obtained (a weak reading is named)."""
        words = self._text
        return f"{words} ({reading_words(self.readings)})" if self.readings and self.measured else words

    @property
    def _text(self) -> str:
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
            return "not judged: no peak was recorded"
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
    readings: tuple[str, ...] = ()  # weak readings among the GPU points it rests on (bench.claims.evidence)

    @property
    def symbol(self) -> str:
        """✅ holds, ❌ fails (☑️ / ✖️ on a weak reading), ⚠️ holds only up to a context, or not a GPU
        measurement, or no evidence."""
        if self.evidence not in (MEASURED_GPU, MEASURED_GPU_CAPPED):
            return SYMBOLS[None]
        symbols = WEAK_SYMBOLS if self.readings else SYMBOLS
        return {HOLDS: symbols[True], FAILS: symbols[False]}.get(self.status, SYMBOLS[None])

    @property
    def text(self) -> str:
        """The overall verdict in words, with how it was obtained (and the weak readings it rests on)."""
        words = self._text
        return f"{words} ({reading_words(self.readings)})" if self.readings and self.measured_on_gpu else words

    @property
    def _text(self) -> str:
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


def gpu_context_verdict(
    claim: Claim, record: Record, evidence: str, smi_predict: Predictor | None = None
) -> ContextVerdict:
    """A GPU record judged against a claim: the live peak over loading and generation plus the memory
    outside the allocator within the budget (:func:`~bench.results.metrics.measured_fit_bytes`); an OOM
    does not fit.

    A record without a loading phase (older records) is judged on its steady state, named as a weaker
    reading; one whose fit figure cannot be derived, on its NVML process peak, named too. A finished case
    is judged the same way under a cap. An OOM on a card, real or simulated, smaller than the budget says
    nothing about the budget: that point is inconclusive (``fits`` None). ``smi_predict``: the predicted
    nvidia-smi reading where the record has no user view.
    """
    readings = weak_readings(record)
    peak = measured_fit_bytes(record)
    if peak is None:
        peak = record.memory.nvml_process_peak_bytes
        readings += (STEADY_NVML_ONLY,) if peak is not None else ()
    elif not record.load.recorded:
        readings += (LOAD_NOT_RECORDED,)
    oom = record.status == "oom"
    if oom:
        card = card_bytes(record)
        fits: bool | None = None if card is not None and card < claim.budget_bytes else False
    else:
        fits = None if peak is None else peak <= claim.budget_bytes
    smi = nvidia_smi_view(record, record.spec, peak, smi_predict, measured_on_gpu=True)
    return _context(
        claim, record.spec, evidence, fits, record, peak_bytes=peak, oom=oom, readings=readings, nvidia_smi=smi
    )


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
            host_peak_rss_bytes=host_live_peak_rss_bytes(record),
            memory_cap_bytes=record.memory.memory_cap_bytes,
            device=record.device,
            device_name=record.device_name,
        )
    base.update(extra)
    return ContextVerdict(**base)


def _predicted(
    claim: Claim,
    spec: CaseSpec,
    predict: Predictor | None,
    record: Record | None,
    smi_predict: Predictor | None = None,
) -> ContextVerdict:
    predicted = predict(spec.with_(device="cuda")) if predict is not None else None
    if predicted is None:
        smi = nvidia_smi_view(record, spec, None, smi_predict, measured_on_gpu=False)
        return _context(claim, spec, HOST_MEMORY, None, record, nvidia_smi=smi)
    predicted = int(predicted)
    smi = nvidia_smi_view(record, spec, predicted, smi_predict, measured_on_gpu=False)
    return _context(
        claim,
        spec,
        PREDICTED,
        predicted <= claim.budget_bytes,
        record,
        peak_bytes=predicted,
        predicted_bytes=predicted,
        nvidia_smi=smi,
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


def _judge_records(
    claim: Claim,
    matching: Sequence[Record],
    predict: Predictor | None,
    gaps: list[str],
    smi_predict: Predictor | None = None,
) -> tuple[list[ContextVerdict], set[tuple[str, int]], set[tuple[str, int]]]:
    """A verdict per measured record (a failed run is a gap); the (precision, context) judged and accounted for."""
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
            verdicts.append(_predicted(claim, s, predict, r, smi_predict))
        else:
            verdicts.append(gpu_context_verdict(claim, r, evidence, smi_predict))
        judged_at.add((s.precision, s.context_tokens))
    return verdicts, judged_at, accounted


def _expected_contexts(
    claim: Claim,
    matching: Sequence[Record],
    predict: Predictor | None,
    judged_at: set[tuple[str, int]],
    accounted: set[tuple[str, int]],
    gaps: list[str],
    smi_predict: Predictor | None = None,
) -> list[ContextVerdict]:
    """Gaps for a concrete claim's precisions and contexts no record has, and predictions where ``predict`` is given."""
    new_tokens = claim.new_tokens if claim.new_tokens is not None else _dominant_new_tokens(matching)
    batch = claim.batch_sizes[0] if claim.batch_sizes else 1
    verdicts: list[ContextVerdict] = []
    for precision in claim.precisions:
        if not claim.contexts and precision not in {p for p, _ in accounted}:
            gaps.append(f"no record of {_describe(claim.model, precision, claim.scenario)}")
        missing = [c for c in claim.contexts if (precision, c) not in accounted]
        if missing:
            listed = ", ".join(str(c) for c in missing)
            gaps.append(f"no record of {_describe(claim.model, precision, claim.scenario)} at {listed} tokens")
        for context in claim.contexts:
            if (precision, context) not in judged_at and predict is not None:
                engine = "llama.cpp" if get_precision(precision).is_gguf else "eager"  # GGUF types run in llama.cpp
                spec = CaseSpec(claim.model, precision, claim.scenario, batch, context, new_tokens, engine=engine)
                v = _predicted(claim, spec, predict, None, smi_predict)
                if v.evidence == PREDICTED:
                    verdicts.append(v)
    return verdicts


def context_verdicts(
    claim: Claim, records: Iterable[Record], *, predict: Predictor | None = None, smi_predict: Predictor | None = None
) -> tuple[list[ContextVerdict], list[str]]:
    """A claim judged point by point on one device's records: the per-context verdicts and the gaps.

    GPU records are judged on the live peak over loading and generation plus the memory outside the
    allocator (OOM: does not fit). Records without a GPU measurement show host memory and, with ``predict``
    (the predicted fit bytes), a labelled prediction; ``smi_predict`` gives the predicted nvidia-smi
    reading wherever no user view measured it. Contexts a concrete
    claim expects but no record has are gaps (predicted when ``predict`` is given). The verdicts
    come in the order judged (records by model, precision, batch, context; then predictions).
    """
    matching = [r for r in records if claim.matches(r.spec)]
    gaps: list[str] = []
    verdicts, judged_at, accounted = _judge_records(claim, matching, predict, gaps, smi_predict)
    if claim.concrete:
        verdicts += _expected_contexts(claim, matching, predict, judged_at, accounted, gaps, smi_predict)
    elif not matching:
        gaps.append(f"no record of any case this claim covers ({claim.describe_cases()})")
    return verdicts, gaps


def _overall_evidence(measured: Sequence[ContextVerdict]) -> str:
    """The evidence a judged claim rests on: predictions, or GPU measurements (capped if any was)."""
    if not measured:
        return PREDICTED
    if any(v.evidence == MEASURED_GPU_CAPPED for v in measured):
        return MEASURED_GPU_CAPPED
    return MEASURED_GPU


def roll_up(
    claim: Claim,
    verdicts: Sequence[ContextVerdict],
    gaps: Sequence[str] = (),
    *,
    device: str = "",
    device_name: str = "",
) -> ClaimVerdict:
    """The claim's verdict from its per-context verdicts: per series and overall holds / fails / holds up to C.

    The roll-up uses GPU measurements when there are any, else predictions; host-memory points
    alone give "not measured on a GPU", no point at all "no evidence".
    """
    measured = [v for v in verdicts if v.measured and v.fits is not None]
    predicted = [v for v in verdicts if v.evidence == PREDICTED]
    judged = measured or predicted
    kinds = tuple(k for k in EVIDENCE_KINDS if any(v.evidence == k for v in verdicts))
    evidence: str | None
    if judged:
        status, up_to, fails_from = _status_over_contexts(judged)
        evidence = _overall_evidence(measured)
    else:
        status = NOT_MEASURED if verdicts else NO_EVIDENCE
        up_to = fails_from = None
        evidence = HOST_MEMORY if verdicts else None
    ordered = sorted(
        verdicts, key=lambda v: (v.model, v.precision, v.scenario, v.batch_size, v.new_tokens, v.context_tokens)
    )
    return ClaimVerdict(
        claim=claim,
        device=device,
        device_name=device_name,
        status=status,
        evidence=evidence,
        contexts=tuple(ordered),
        series=_series_verdicts(judged),
        holds_up_to=up_to,
        fails_from=fails_from,
        gaps=tuple(gaps),
        evidence_kinds=kinds,
        readings=tuple(dict.fromkeys(r for v in measured for r in v.readings)),
    )


def judge_claim(
    claim: Claim,
    records: Iterable[Record],
    *,
    predict: Predictor | None = None,
    device: str = "",
    device_name: str = "",
    smi_predict: Predictor | None = None,
) -> ClaimVerdict:
    """Judge a claim on the records of one device (pass one device's records; never mix GPUs).

    :func:`context_verdicts` judges every point, :func:`roll_up` gives the series and the overall
    verdict; ``device`` and ``device_name`` default to the first matching record's.
    """
    matching = [r for r in records if claim.matches(r.spec)]
    if matching and not device:
        device, device_name = matching[0].device, matching[0].device_name
    verdicts, gaps = context_verdicts(claim, matching, predict=predict, smi_predict=smi_predict)
    return roll_up(claim, verdicts, gaps, device=device, device_name=device_name)


def judge_claims(
    claims: Sequence[Claim],
    records: Sequence[Record],
    *,
    predict: Predictor | None = None,
    device: str = "",
    device_name: str = "",
    smi_predict: Predictor | None = None,
) -> list[ClaimVerdict]:
    """Every claim judged on one device's records."""
    return [
        judge_claim(c, records, predict=predict, device=device, device_name=device_name, smi_predict=smi_predict)
        for c in claims
    ]
