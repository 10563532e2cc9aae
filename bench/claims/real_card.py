"""The second line of a verdict: the claim judged "on a real 8 GB card", against usable memory, not the box.

A claim keeps its stated budget ("8 GB" on the box is 8 GiB). A card sold with that box exposes less: what
its driver reports as the total (a T4 sold as 16 GB reports 15110 MiB with ECC on). The real card of a
budget is the shipped profile of that box size with the smallest usable memory
(:attr:`~bench.config.hardware.HardwareProfile.usable_memory_bytes`, cited, measured or, labelled, assumed);
the same records and predictions are judged again against it. Profiles are passed in, so the verdict code
reads no files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.claims.definitions import Claim
from bench.claims.verdicts import ClaimVerdict, Predictor, judge_claim
from bench.config.hardware import HardwareProfile
from bench.results.record import Record
from bench.units import MiB


@dataclass(frozen=True)
class RealCard:
    """The card of a budget's box size that exposes the least memory, and where its figure comes from."""

    name: str
    box_bytes: int
    usable_bytes: int
    usable_source: str  # "measured: ...", "cited: ..." or "assumed: ..."

    @property
    def assumed(self) -> bool:
        """True when the usable figure is the assumed fallback (no public figure for that card)."""
        return self.usable_source.startswith("assumed")

    def describe(self) -> str:
        """"GeForce RTX 4060: 7,987 MiB usable (assumed)"."""
        kind = self.usable_source.split(":", 1)[0]
        return f"{self.name}: {self.usable_bytes / MiB:,.0f} MiB usable ({kind})"


def real_card(budget_bytes: int, profiles: Iterable[HardwareProfile]) -> RealCard | None:
    """The GPU profile whose box is ``budget_bytes`` with the smallest usable memory; None when no card has that box."""
    same = [p for p in profiles if p.kind == "cuda" and p.memory_bytes == budget_bytes]
    if not same:
        return None
    card = min(same, key=lambda p: (p.usable_memory_bytes, p.name))
    return RealCard(card.name, card.memory_bytes, card.usable_memory_bytes, card.usable_source)


@dataclass(frozen=True)
class RealCardVerdict:
    """A claim judged against its real card's usable memory (``verdict`` None: no shipped card of that box)."""

    claim: Claim
    card: RealCard | None
    verdict: ClaimVerdict | None

    @property
    def heading(self) -> str:
        """"on a real 8 GiB card (GeForce RTX 4060: 7,987 MiB usable (assumed))"."""
        budget = self.claim.budget_text
        if self.card is None:
            return f"on a real {budget} card: no shipped card profile has a {budget} box"
        return f"on a real {budget} card ({self.card.describe()})"

    @property
    def symbol(self) -> str:
        """The verdict's symbol (⚠️ without a card)."""
        return self.verdict.symbol if self.verdict is not None else "⚠️"

    @property
    def text(self) -> str:
        """The heading and the verdict in words."""
        if self.verdict is None:
            return self.heading
        return f"{self.heading}: {self.verdict.text}"


def judge_on_real_card(
    claim: Claim,
    records: Sequence[Record],
    profiles: Sequence[HardwareProfile],
    *,
    predict: Predictor | None = None,
    device: str = "",
    device_name: str = "",
    smi_predict: Predictor | None = None,
) -> RealCardVerdict:
    """The claim's records (and predictions) judged again, against the usable memory of its real card."""
    card = real_card(claim.budget_bytes, profiles)
    if card is None:
        return RealCardVerdict(claim, None, None)
    on_card = dataclasses.replace(
        claim, budget_bytes=card.usable_bytes, budget_text=f"{card.usable_bytes / MiB:,.0f} MiB usable on {card.name}"
    )
    verdict = judge_claim(
        on_card, records, predict=predict, device=device, device_name=device_name, smi_predict=smi_predict
    )
    return RealCardVerdict(claim, card, verdict)
