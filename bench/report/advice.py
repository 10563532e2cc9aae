"""The report's short purchase advice: which cards hold Phi-3-mini at its full context, predicted."""

from __future__ import annotations

from collections.abc import Sequence

from bench.config.hardware import load_profiles
from bench.errors import BadInputError
from bench.predict.advisor import Fit, Requirement, advise, cheapest
from bench.report.document import Block, Heading, Para, Table
from bench.results.record import Record

ADVICE_MODEL = "phi-3-mini"
ADVICE_PRECISIONS = ("fp16", "int8", "nf4", "nf4-dq")
ADVICE_CONTEXT = 4096
ADVICE_MIN_TOKENS_PER_S = 20.0


def _cell(fit: Fit | None) -> str:
    if fit is None:
        return "—"
    mark = {"fits": "fits", "tight": "tight", "no": "no"}.get(fit.verdict, fit.verdict)
    peak = f"{fit.predicted_peak_bytes / 2**30:.1f} GiB"
    speed = ""
    if fit.tokens_per_s is not None:
        speed = f", {'≤' if fit.speed_label == 'ceiling' else '~'}{fit.tokens_per_s:,.0f} tok/s"
    return f"{mark} ({peak}{speed})"


def advice_blocks(records: Sequence[Record] = ()) -> list[Block]:
    """A short 'which card' section: every profiled GPU x precision at 4096 tokens, predicted, with the pick."""
    try:
        fits = advise(load_profiles(), [ADVICE_MODEL], list(ADVICE_PRECISIONS), [ADVICE_CONTEXT], records=records)
    except (BadInputError, OSError, ValueError) as exc:
        return [Heading("Which card? (predicted)", 2), Para(f"No advice: {exc}", "warn")]
    requirement = Requirement(ADVICE_MODEL, ADVICE_CONTEXT, ADVICE_PRECISIONS, ADVICE_MIN_TOKENS_PER_S)
    pick = cheapest(fits, requirement)
    speed_known = pick is None or pick.speed_label == "predicted"
    by_card: dict[str, dict[str, Fit]] = {}
    order: list[Fit] = sorted(fits, key=lambda f: (f.memory_bytes, f.bandwidth_bytes_per_s))
    for f in order:
        by_card.setdefault(f.gpu, {})[f.precision] = f
    rows = []
    for gpu, per in by_card.items():
        any_fit = next(iter(per.values()))
        rows.append((gpu, f"{any_fit.memory_bytes / 2**30:.0f} GiB", *(_cell(per.get(p)) for p in ADVICE_PRECISIONS)))
    blocks: list[Block] = [Heading("Which card? (predicted)", 2)]
    if pick is not None:
        blocks.append(
            Para(
                f"Smallest card for {requirement.describe()}: {pick.gpu} with {pick.precision} "
                f"(predicted peak {pick.predicted_peak_bytes / 2**30:.2f} GiB; decode "
                f"{'at most' if pick.speed_label == 'ceiling' else 'about'} {pick.tokens_per_s:,.0f} tokens/s). "
                + (
                    ""
                    if speed_known
                    else "No GPU run calibrates decode speed yet: this card meets the speed only if it reaches its "
                    "memory-bandwidth ceiling, which bitsandbytes kernels do not (pass a GPU run to 'bench advise "
                    "--results'). "
                )
                + "Predictions from the model's config and the card's datasheet, not measurements; "
                "'≤' marks a memory-bandwidth ceiling, '~' a ceiling scaled by an efficiency measured on real runs.",
                "note",
            )
        )
    else:
        blocks.append(Para(f"No profiled card meets {requirement.describe()} (predicted).", "warn"))
    blocks.append(
        Table(
            ("GPU", "Memory", *ADVICE_PRECISIONS),
            tuple(rows),
            "lr" + "l" * len(ADVICE_PRECISIONS),
            caption=f"{ADVICE_MODEL} at {ADVICE_CONTEXT} tokens (prompt + 64 new), batch 1: predicted "
            "peak device memory and decode speed per card; run 'bench advise' for other requirements",
        )
    )
    return blocks
