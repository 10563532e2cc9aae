"""Capacity: the largest context and the largest batch that fit a card's usable memory, predicted.

Fit is judged on the predicted fit figure (``fit_bytes``: the larger live peak of loading and generation, plus
the CUDA context and slack) against the card's usable memory, as everywhere in the predictor. A context here
is the window a generation fills: prompt plus new tokens, as in ``bench advise``. The search is a bisection
on the prediction, which grows with context and with batch (a sliding window only flattens it: then the
model's position limit decides).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.config.hardware import HardwareProfile
from bench.config.models import DECODER
from bench.errors import BadInputError
from bench.predict.architecture import architecture
from bench.predict.memory import largest_batch, predict_memory

MEMORY = "memory"
POSITIONS = "positions"
NOTHING = "nothing fits"


@dataclass(frozen=True)
class ContextCapacity:
    """The largest window (prompt + new tokens) of one precision x batch on a card, and what limits it."""

    model: str
    precision: str
    batch_size: int
    new_tokens: int
    max_context_tokens: int  # 0 when not even the shortest prompt fits
    fit_bytes: int | None  # the predicted fit figure at that context (None when nothing fits)
    usable_bytes: int
    limited_by: str  # MEMORY | POSITIONS | NOTHING
    label: str = "predicted"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


@dataclass(frozen=True)
class BatchCapacity:
    """The largest batch of one precision at a given context on a card (0: not even one sequence fits)."""

    model: str
    precision: str
    context_tokens: int
    new_tokens: int
    max_batch: int
    usable_bytes: int
    label: str = "predicted"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


def _fits(model: Any, precision: str, prompt: int, batch: int, new: int, card: HardwareProfile, cache: str) -> Any:
    pred = predict_memory(model, precision, prompt, batch, new, card, cache=cache, nvidia_smi=False)
    return pred if pred.fit_bytes <= card.usable_memory_bytes else None


def new_tokens_for(model: Any, new_tokens: int) -> int:
    """The new tokens of a generation for this model: none for an encoder (one forward pass)."""
    return new_tokens if architecture(model).family == DECODER else 0


def largest_context(
    model: Any, precision: str, batch_size: int, new_tokens: int, card: HardwareProfile, *, cache: str = "config"
) -> ContextCapacity:
    """The largest window (prompt + ``new_tokens``) whose predicted fit figure fits ``card``'s usable memory."""
    if card.kind != "cuda":
        raise BadInputError(f"{card.name} is not a GPU profile: capacity is predicted for CUDA cards; pick a --gpu")
    arch = architecture(model)
    new = new_tokens_for(model, new_tokens)
    usable = card.usable_memory_bytes
    top = arch.max_positions - new
    if top < 1:
        raise BadInputError(
            f"{new} new tokens leave no room for a prompt in {arch.name}'s {arch.max_positions} positions; "
            "use fewer --new-tokens"
        )

    def result(prompt: int, pred: Any, limit: str) -> ContextCapacity:
        fit = pred.fit_bytes if pred is not None else None
        tokens = prompt + new if prompt else 0
        return ContextCapacity(arch.name, precision, batch_size, new, tokens, fit, usable, limit)

    first = _fits(model, precision, 1, batch_size, new, card, cache)
    if first is None:
        return result(0, None, NOTHING)
    last = _fits(model, precision, top, batch_size, new, card, cache)
    if last is not None:
        return result(top, last, POSITIONS)
    lo, hi, best = 1, top, first
    while hi - lo > 1:
        mid = (lo + hi) // 2
        pred = _fits(model, precision, mid, batch_size, new, card, cache)
        if pred is not None:
            lo, best = mid, pred
        else:
            hi = mid
    return result(lo, best, MEMORY)


def batch_capacity(
    model: Any,
    precision: str,
    context_tokens: int,
    new_tokens: int,
    card: HardwareProfile,
    *,
    cache: str = "config",
    limit: int = 4096,
) -> BatchCapacity:
    """The largest batch at a window of ``context_tokens`` (prompt + new tokens) on ``card``, predicted."""
    arch = architecture(model)
    new = new_tokens_for(model, new_tokens)
    prompt = context_tokens - new
    if prompt < 1:
        raise BadInputError(
            f"context {context_tokens} leaves no room for a prompt before {new} new tokens; use a larger --context"
        )
    if context_tokens > arch.max_positions:
        raise BadInputError(
            f"context {context_tokens} exceeds {arch.name}'s maximum of {arch.max_positions} positions; "
            f"use --context {arch.max_positions} or less"
        )
    best = largest_batch(model, precision, prompt, new, card, limit, cache=cache)
    return BatchCapacity(arch.name, precision, context_tokens, new, best, card.usable_memory_bytes)


def capacity(
    model: Any,
    precisions: Sequence[str],
    batches: Sequence[int],
    new_tokens: int,
    context_tokens: int,
    card: HardwareProfile,
    *,
    cache: str = "config",
) -> tuple[list[ContextCapacity], list[BatchCapacity]]:
    """For each precision and batch the largest context, and for each precision the largest batch at
    ``context_tokens``, on ``card`` (predicted)."""
    contexts = [largest_context(model, p, b, new_tokens, card, cache=cache) for p in precisions for b in batches]
    batch_rows = [batch_capacity(model, p, context_tokens, new_tokens, card, cache=cache) for p in precisions]
    return contexts, batch_rows
