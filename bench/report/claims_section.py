"""The report's claims section: a summary table of every verdict, then one block per claim and device.

Each block states the budget in every unit a reader may think in, the cases it covers, the evidence
(GPU measurement, capped GPU, host memory or prediction) and a row per context with the figure judged (the
live peak over loading and generation plus the memory outside the allocator, or the predicted fit bytes),
the margin, and what nvidia-smi shows for the process beside it (measured in the user view, or predicted).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.claims.boundary import DEFAULT_TOLERANCE_TOKENS as BOUNDARY_TOLERANCE_TOKENS
from bench.claims.definitions import Claim
from bench.claims.evidence import READING_LABELS
from bench.claims.nvidia_smi import CARD_LEVEL_WORDS, SOURCE_LABELS
from bench.claims.real_card import RealCardVerdict, judge_on_real_card
from bench.claims.verdicts import (
    EVIDENCE_LABELS,
    EVIDENCE_SHORT,
    HOLDS_UP_TO,
    NO_EVIDENCE,
    PREDICTED,
    ClaimVerdict,
    Predictor,
    judge_claim,
)
from bench.report.document import Block, Bullets, Details, Heading, Para, Table
from bench.report.run_data import DeviceGroup
from bench.report.runtime_section import WindowExtraFn, predicted_window_extra, runtime_blocks
from bench.results.record import Record
from bench.units import fmt_gb, fmt_mib

MAX_INLINE_ROWS = 12  # longer per-context tables fold into a <details>


def budget_words(claim: Claim) -> str:
    """The budget in every unit a reader may think in: "8 GiB = 8,192 MiB = 8.59 GB"."""
    return f"{claim.budget_text} = {fmt_mib(claim.budget_bytes)} MiB = {fmt_gb(claim.budget_bytes)} GB"



def _verdict_kind(symbol: str) -> str:
    return {"✅": "ok", "❌": "bad"}.get(symbol, "warn")


def _context_rows(verdict: ClaimVerdict) -> Table:
    host = any(v.host_peak_rss_bytes is not None and not v.measured for v in verdict.contexts)
    predicted = any(v.evidence == PREDICTED for v in verdict.contexts)
    peak = "Fit: live peak + context" + (" or prediction" if predicted else "")
    headers = [
        "Model",
        "Precision",
        "Batch",
        "Context",
        "New",
        f"{peak} (MiB)",
        f"{peak} (GB)",
        "Budget (MiB)",
        "Margin (MiB)",
        "Margin (GB)",
        "Verdict",
        "Evidence",
        "nvidia-smi would show (MiB)",
    ]
    align = "llrrrrrrrrllr"
    if host:
        headers.insert(7, "Host peak RSS, loading or generation (MiB)")
        align = align[:7] + "r" + align[7:]
    rows, kinds = [], []
    for v in verdict.contexts:
        peak = v.peak_bytes
        peak_mib = fmt_mib(peak) if peak is not None else ("OOM" if v.oom else "—")
        row = [
            v.model,
            v.precision,
            str(v.batch_size),
            str(v.context_tokens),
            str(v.new_tokens),
            peak_mib,
            fmt_gb(peak),
            fmt_mib(v.budget_bytes),
            fmt_mib(v.margin_bytes, True),
            fmt_gb(v.margin_bytes, True),
            f"{v.symbol} {v.text}",
            EVIDENCE_SHORT[v.evidence],
            f"{fmt_mib(v.nvidia_smi.bytes)} ({v.nvidia_smi.source})" if v.nvidia_smi.bytes is not None else "—",
        ]
        if host:
            row.insert(7, fmt_mib(v.host_peak_rss_bytes) if not v.measured else "—")
        rows.append(tuple(row))
        kinds.append(_verdict_kind(v.symbol))
    return Table(tuple(headers), tuple(rows), align, tuple(kinds))


def _series_table(verdict: ClaimVerdict) -> Table | None:
    lines = [s for s in verdict.series if s.status == HOLDS_UP_TO]
    if not lines:
        return None
    rows = []
    for s in lines:
        width = (s.fails_from or 0) - (s.holds_up_to or 0)
        located = "yes" if width <= BOUNDARY_TOLERANCE_TOKENS else "no: run 'bench report DIR --find-boundary'"
        rows.append(
            (s.model, s.precision, str(s.batch_size), str(s.holds_up_to), str(s.fails_from), str(width), located)
        )
    return Table(
        (
            "Model",
            "Precision",
            "Batch",
            "Holds up to (tokens)",
            "Fails from (tokens)",
            "Interval (tokens)",
            f"Located to within {BOUNDARY_TOLERANCE_TOKENS} tokens",
        ),
        tuple(rows),
        "llrrrrl",
        caption="Where the claim breaks (largest holding and smallest failing context)",
    )


def _largest_holding(verdict: ClaimVerdict) -> str:
    if verdict.holds_up_to is None:
        return "—"
    text = f"{verdict.holds_up_to} tokens"
    return text if verdict.fails_from is None else f"{text} (fails at {verdict.fails_from})"


def _evidence_words(verdict: ClaimVerdict) -> str:
    if verdict.evidence is None:
        return "none"
    words = EVIDENCE_LABELS[verdict.evidence]
    others = [k for k in verdict.evidence_kinds if k != verdict.evidence]
    if others:
        words += "; also " + ", ".join(EVIDENCE_LABELS[k] for k in others)
    return words


def _evidence_short(verdict: ClaimVerdict) -> str:
    if verdict.evidence is None:
        return "none"
    return " + ".join(EVIDENCE_SHORT[k] for k in dict.fromkeys((verdict.evidence, *verdict.evidence_kinds)))


def _capped_summary(capped: ClaimVerdict | None) -> str:
    if capped is None:
        return "not run"
    return f"{capped.symbol} {capped.text}"


def _capped_blocks(capped: ClaimVerdict, device_label: str) -> list[Block]:
    """The second check of a claim: its cases rerun under a per-process memory cap."""
    caps = sorted({v.memory_cap_bytes for v in capped.contexts if v.memory_cap_bytes})
    cap_text = ", ".join(f"{fmt_mib(c)} MiB" for c in caps) or "unknown"
    blocks: list[Block] = [Heading("Second check: the same cases under a per-process memory cap", 4)]
    blocks.append(
        Para(
            f"{capped.symbol} {capped.text}. Simulated card of {cap_text} on {capped.device_name or device_label}: "
            f"the allocator was capped at that minus the CUDA context each worker measured.",
            _verdict_kind(capped.symbol),
        )
    )
    if capped.contexts:
        blocks.append(_context_rows(capped))
    return blocks


def _real_card_blocks(real: RealCardVerdict | None) -> list[Block]:
    """The verdict's second line, against the usable memory of a real card of the budget's box size."""
    if real is None:
        return []
    blocks: list[Block] = [Para(f"{real.symbol} {real.text}.", _verdict_kind(real.symbol))]
    if real.verdict is not None and real.verdict.contexts:
        blocks.append(Details(f"{real.heading}: margins against its usable memory", (_context_rows(real.verdict),)))
    return blocks


def _reading_bullets(verdict: ClaimVerdict) -> list[str]:
    return [f"Reading: {READING_LABELS[r]}" for r in verdict.readings]


def _smi_bullets(verdict: ClaimVerdict) -> list[str]:
    """Per context with an nvidia-smi figure: what it is and why it differs from the figure judged."""
    out = []
    for v in verdict.contexts:
        smi = v.nvidia_smi
        if smi.bytes is None:
            continue
        where = f"{v.model} {v.precision} b{v.batch_size} at {v.context_tokens} tokens"
        out.append(f"{where}: {smi.text}, {SOURCE_LABELS[smi.source]}" + (f"; {smi.why}" if smi.why else ""))
    return out


def _claim_blocks(
    verdict: ClaimVerdict, capped: ClaimVerdict | None, device_label: str, real: RealCardVerdict | None = None
) -> list[Block]:
    claim = verdict.claim
    blocks: list[Block] = [Heading(f"{claim.title} — {device_label}", 3)]
    blocks.append(Para(f"{verdict.symbol} {verdict.text}.", _verdict_kind(verdict.symbol)))
    blocks += _real_card_blocks(real)
    facts = [
        f"Budget: {budget_words(claim)}" + (f' (stated as "{claim.stated_as}")' if claim.stated_as else ""),
        f"Covers: {claim.describe_cases()}; judged on what the card must hold to load and run the case: the "
        "allocator's live peak over loading and generation plus the memory outside the allocator (CUDA context, "
        "libraries); an out-of-memory case does not fit. nvidia-smi shows more: the allocator's cached blocks too",
        f"Evidence: {_evidence_words(verdict)}",
        *_reading_bullets(verdict),
    ]
    if claim.source:
        facts.append(f"Source: {claim.source}")
    if claim.note:
        facts.append(f"Note: {claim.note}")
    blocks.append(Bullets(tuple(facts)))
    smi = _smi_bullets(verdict)
    if smi:
        title = f"What nvidia-smi shows beside the fit figure ({len(smi)} cases)"
        blocks.append(Details(title, (Bullets(tuple(smi)),)))
    if verdict.contexts:
        table = _context_rows(verdict)
        if len(verdict.contexts) > MAX_INLINE_ROWS:
            counts = Counter(
                "fit" if v.fits else "not judged" if v.fits is None else "do not fit" for v in verdict.contexts
            )
            tally = ", ".join(f"{counts[k]} {k}" for k in ("fit", "do not fit", "not judged") if counts[k])
            blocks.append(Details(f"{len(verdict.contexts)} cases ({tally}): show the table", (table,)))
        else:
            blocks.append(table)
    series = _series_table(verdict)
    if series is not None:
        blocks.append(series)
    if capped is not None:
        blocks += _capped_blocks(capped, device_label)
    if verdict.gaps:
        blocks.append(Para(f"Gaps ({len(verdict.gaps)}):", "warn"))
        blocks.append(Bullets(tuple(verdict.gaps)))
    return blocks


@dataclass
class ClaimResults:
    """The verdicts of every claim on every device group (and the capped second check)."""

    verdicts: list[tuple[DeviceGroup | None, ClaimVerdict, ClaimVerdict | None]]
    real: list[RealCardVerdict | None] = field(default_factory=list)  # by index of ``verdicts``


def _shipped_profiles() -> list[Any]:
    from bench.config.hardware import load_profiles
    from bench.errors import BadInputError

    try:
        return load_profiles()
    except BadInputError:
        return []


def _with_real_cards(
    results: ClaimResults, profiles: Sequence[Any], predict: Predictor | None, smi_predict: Predictor | None = None
) -> ClaimResults:
    """Each verdict judged again on the real card of its budget's box size (the second line)."""
    for g, v, _ in results.verdicts:
        records = g.records if g else []
        results.real.append(
            judge_on_real_card(
                v.claim,
                records,
                profiles,
                predict=predict,
                device=v.device,
                device_name=v.device_name,
                smi_predict=smi_predict,
            )
        )
    return results


def judge_groups(
    claims: Sequence[Claim],
    groups: Sequence[DeviceGroup],
    capped: dict[str, list[Record]],
    predict: Predictor | None = None,
    profiles: Sequence[Any] | None = None,
    smi_predict: Predictor | None = None,
) -> ClaimResults:
    """Judge each claim on each device group; a claim with evidence nowhere is shown once, with its gaps.

    Each verdict also gets its second line, on the real card of the budget's box size: the shipped GPU
    profile of that size with the smallest usable memory (``profiles``, default: the shipped profiles).
    ``predict``: the predicted fit bytes; ``smi_predict``: the predicted nvidia-smi reading.
    """
    out: list[tuple[DeviceGroup | None, ClaimVerdict, ClaimVerdict | None]] = []
    for claim in claims:
        per_group = []
        for g in groups:
            v = judge_claim(
                claim, g.records, predict=predict, device=g.device, device_name=g.device_name, smi_predict=smi_predict
            )
            capped_recs = [r for r in capped.get(claim.id, []) if r.host == g.host and r.device_name == g.device_name]
            c = judge_claim(claim, capped_recs, device=g.device, device_name=g.device_name) if capped_recs else None
            per_group.append((g, v, c))
        with_evidence = [t for t in per_group if t[1].status != NO_EVIDENCE or t[2] is not None]
        if with_evidence:
            out.extend(with_evidence)
        elif per_group:
            out.append(per_group[0])
        else:
            out.append((None, judge_claim(claim, [], predict=predict, smi_predict=smi_predict), None))
    shipped = _shipped_profiles() if profiles is None else profiles
    return _with_real_cards(ClaimResults(out), shipped, predict, smi_predict)


def _real_card_table(results: ClaimResults) -> Table | None:
    rows, kinds = [], []
    for (g, v, _), real in zip(results.verdicts, results.real, strict=False):
        if real is None:
            continue
        card = real.card.describe() if real.card else "no shipped card of that box size"
        verdict = f"{real.symbol} {real.verdict.text}" if real.verdict else "—"
        rows.append((v.claim.title, v.claim.budget_text, g.label if g else "—", card, verdict))
        kinds.append(_verdict_kind(real.symbol))
    if not rows:
        return None
    return Table(
        ("Claim", "Budget", "Device", "Real card (smallest usable memory of that box size)", "Verdict on it"),
        tuple(rows),
        "lllll",
        tuple(kinds),
        caption="The same evidence judged against what a real card of the budget's box size exposes",
    )


def claims_section(
    results: ClaimResults,
    envelopes: Sequence[dict[str, Any]] = (),
    window_extra: WindowExtraFn | None = predicted_window_extra,
) -> list[Block]:
    """The "Claims" section: a summary row per verdict, a legend, the verdicts on real cards, the runtime they
    hold for (``envelopes``: the run's environment envelopes; ``window_extra``: the predicted bytes a runtime
    without the sliding window holds more, None to leave it out), then each claim's block."""
    blocks: list[Block] = [Heading("Claims", 2)]
    rows, kinds = [], []
    for g, v, c in results.verdicts:
        rows.append(
            (
                v.claim.title,
                v.claim.budget_text,
                g.label if g else "—",
                f"{v.symbol} {v.text}",
                _largest_holding(v),
                _evidence_short(v),
                _capped_summary(c),
            )
        )
        kinds.append(_verdict_kind(v.symbol))
    blocks.append(
        Table(
            ("Claim", "Budget", "Device", "Verdict", "Largest context that holds", "Evidence", "Capped check"),
            tuple(rows),
            "lllllll",
            tuple(kinds),
        )
    )
    blocks.append(
        Para(
            "✅ / ❌: measured on a GPU: the allocator's live peak over loading and generation plus the memory outside "
            "it (CUDA context, libraries), which is what must fit (the allocator returns its cached blocks before an "
            "allocation fails). nvidia-smi shows more, the cached blocks too (from quantizing while loading, and from "
            "generating): it is given beside each verdict, measured after a load and one generation without clean-up "
            f"where the run has that user view, else predicted, labelled. {CARD_LEVEL_WORDS} "
            "☑️ / ✖️: measured on a GPU, but on a weaker reading (device-wide, a guessed process, a GPU another "
            "process used, or a record without its loading phase), named beside the verdict. "
            "⚠️: holds only up to a context, or not a GPU measurement (host memory or a prediction), or no evidence. "
            "Margins: budget minus peak, positive is headroom; MiB = 2^20 bytes, GB = 10^9 bytes.",
            "note",
        )
    )
    real_table = _real_card_table(results)
    if real_table is not None:
        blocks.append(real_table)
    groups = {id(g): g for g, _, _ in results.verdicts if g is not None}
    shown = [(g.label, g.records) for g in groups.values()]
    blocks += runtime_blocks(shown, [v for _, v, _ in results.verdicts], envelopes, window_extra)
    reals = list(results.real) + [None] * (len(results.verdicts) - len(results.real))
    for (g, v, c), real in zip(results.verdicts, reals, strict=True):
        blocks += _claim_blocks(v, c, g.label if g else "no device", real)
    return blocks
