"""The library versions whose allocation patterns the loading and user-view replays follow.

The steady-state predictor follows the installed stack. The replays of :mod:`.loading` and :mod:`.user_view`
depend on a few behaviours that changed between transformers releases; each is named here, with the
version it was read from, so a published measurement taken with an older stack is predicted with that
stack's behaviour rather than a calibrated number.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Runtime:
    """Allocation behaviours of one transformers / bitsandbytes stack."""

    name: str
    load_order: str  # "sorted" (dot_natural_key, transformers >= 5) | "module" (the checkpoint's order, 4.x)
    cache_release: str  # "layer": a layer's old keys are freed as its new ones exist (DynamicCache);
    # "step": the previous step's tuple cache lives until the whole forward returns (4.35 and older)
    logits: str  # "last": prefill computes logits for the last position only (5.x); "all": for every position
    logits_kept: bool  # generate keeps a view of a step's float32 logits until the next step's forward (4.x)
    fused_4bit_max_rows: int  # 4-bit matmuls of up to this many rows skip the dequantized copy


CURRENT = Runtime(
    "transformers 5.25, bitsandbytes 0.50.2 (installed)",
    load_order="sorted",
    cache_release="layer",
    logits="last",
    logits_kept=False,
    fused_4bit_max_rows=4,
)
# transformers 4.32-4.35 (legacy tuple caches, full logits, greedy_search keeping outputs.logits[:, -1, :]),
# bitsandbytes 0.41 (gemv_4bit only for a single row)
TRANSFORMERS_4_35 = Runtime(
    "transformers 4.32-4.35, bitsandbytes 0.41",
    load_order="module",
    cache_release="step",
    logits="all",
    logits_kept=True,
    fused_4bit_max_rows=1,
)
