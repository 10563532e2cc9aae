"""The runtime a claim verdict holds for: the transformers version and the KV-cache policy the records show.

A verdict on Phi-3-mini's memory holds for the runtime that measured it. Under transformers 5.x the real
checkpoint's config (``sliding_window: 2047``) gives a ``DynamicSlidingWindowLayer`` cache that keeps 2046
tokens per layer; a runtime that ignores the window (transformers 4.x with eager or sdpa attention, as in
the book's original notebooks) keeps every token. The statement names the version (environment envelope)
and the cache (the records' ``cache_policy``, ``cache_window_tokens``, ``cache_layer_classes``) and, where
the predictor knows it, how many bytes more the full cache holds (predicted, full minus window).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.claims.claim_verdicts import ClaimVerdict
from bench.config.spec import CaseSpec
from bench.report.document import Block, Bullets, Heading, Para
from bench.results.record import Record
from bench.units import fmt_mib

IGNORES_WINDOW = "transformers 4.x with eager or sdpa attention, as in the book's original notebooks"


@dataclass(frozen=True)
class WindowExtra:
    """Predicted bytes a runtime without the window holds more than one with it (full minus window)."""

    final_kv_bytes: int  # KV cache at the end of generation
    peak_bytes: int  # predicted peak
    window_tokens: int


WindowExtraFn = Callable[[CaseSpec], "WindowExtra | None"]


def predicted_window_extra(spec: CaseSpec) -> WindowExtra | None:
    """The predictor's full-minus-window difference for a decoder spec (generic CUDA GPU); None without a window."""
    from bench.errors import BadInputError
    from bench.predict.memory import predict_memory

    try:
        args = (spec.model, spec.precision, spec.context_tokens, spec.batch_size, spec.new_tokens)
        window = predict_memory(*args, attn_implementation=spec.attn_implementation, cache="config")
        if window.cache_window_tokens is None:
            return None
        full = predict_memory(*args, attn_implementation=spec.attn_implementation, cache="full")
    except BadInputError:
        return None
    return WindowExtra(
        full.kv_cache_final_bytes - window.kv_cache_final_bytes,
        full.total_bytes - window.total_bytes,
        window.cache_window_tokens,
    )


def transformers_versions(records: Iterable[Record], envelopes: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The transformers versions of the envelopes whose run ids the records carry (all envelopes if none match)."""
    run_ids = {r.run_id for r in records if r.run_id}
    matching = [e for e in envelopes if e.get("run_id") in run_ids] or list(envelopes)
    return tuple(sorted({str(e["transformers"]) for e in matching if e.get("transformers")}))


def cache_descriptions(records: Iterable[Record]) -> tuple[str, ...]:
    """What the decoder records' caches held, in words ("sliding window of 2047 tokens (DynamicSlidingWindowLayer)")."""
    out: list[str] = []
    for r in records:
        m = r.memory
        if r.spec.scenario != "generate" or r.status != "ok":
            continue
        classes = ", ".join(m.cache_layer_classes)
        where = f" ({classes})" if classes else ""
        if m.cache_policy == "window" and m.cache_window_tokens:
            window = m.cache_window_tokens
            out.append(f"sliding window of {window} tokens, {window - 1} kept per layer{where}")
        elif m.cache_policy == "full":
            removed = " (--cache full: the window removed)" if getattr(r.spec, "cache", "") == "full" else ""
            out.append(f"full cache, every token kept{where}{removed}")
        else:
            out.append("not recorded (a record written before the cache was recorded)")
    return tuple(dict.fromkeys(out))


def _extra_lines(verdicts: Sequence[ClaimVerdict], window_extra: WindowExtraFn) -> list[str]:
    """One line per claim series at its largest context: the predicted extra bytes of a full cache."""
    lines: list[str] = []
    seen: set[tuple[str, str, int, int, int]] = set()
    for v in verdicts:
        largest: dict[tuple[str, str, int, int], Any] = {}
        for point in v.contexts:
            if point.scenario != "generate":
                continue
            key = (point.model, point.precision, point.batch_size, point.new_tokens)
            if key not in largest or point.context_tokens > largest[key].context_tokens:
                largest[key] = point
        for (model, precision, batch, new), point in sorted(largest.items()):
            ident = (model, precision, batch, new, point.context_tokens)
            if ident in seen:
                continue
            seen.add(ident)
            spec = CaseSpec(model, precision, "generate", batch, point.context_tokens, new, device="cuda")
            extra = window_extra(spec)
            if extra is None or extra.final_kv_bytes <= 0:  # within the window a full cache holds the same
                continue
            lines.append(
                f"{model} {precision} at {point.context_tokens} + {new} tokens: the full cache holds "
                f"{fmt_mib(extra.final_kv_bytes)} MiB more KV cache at the end of generation than the "
                f"{extra.window_tokens}-token window; its predicted peak differs by {fmt_mib(extra.peak_bytes, True)} "
                "MiB (the peak is the prefill, which holds the whole prompt's K/V either way) — predicted, not measured"
            )
    return lines


def runtime_blocks(
    groups: Sequence[tuple[str, Sequence[Record]]],
    verdicts: Sequence[ClaimVerdict],
    envelopes: Sequence[dict[str, Any]] = (),
    window_extra: WindowExtraFn | None = predicted_window_extra,
) -> list[Block]:
    """The "Runtime the verdicts hold for" part of the claims section: per device, transformers and the cache."""
    blocks: list[Block] = [Heading("Runtime the verdicts hold for", 3)]
    facts = []
    for label, records in groups:
        versions = ", ".join(transformers_versions(records, envelopes)) or "not recorded (no environment envelope)"
        caches = "; ".join(cache_descriptions(records)) or "no decoder record"
        facts.append(f"{label}: transformers {versions}; KV cache: {caches}")
    if facts:
        blocks.append(Bullets(tuple(facts)))
    blocks.append(
        Para(
            f"A runtime that ignores the sliding window ({IGNORES_WINDOW}) keeps every token in the KV cache, so it "
            "holds more than these records show; `bench run --cache full` measures that case.",
            "note",
        )
    )
    extra = _extra_lines(verdicts, window_extra) if window_extra is not None else []
    if extra:
        blocks.append(Bullets(tuple(extra)))
    return blocks
