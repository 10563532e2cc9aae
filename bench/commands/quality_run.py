"""The ``--quality`` part of ``bench run``: refuse random weights, run the quality pass, say what it found.

The pass itself is :mod:`bench.measure.quality_stage`; this module only checks the input, prints one line per
precision (with its wall time) and the total, and hands back the function that puts each block into its records.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from bench.config.spec import CaseSpec
from bench.errors import BadInputError


def check_quality_args(args: Any, cases: Sequence[CaseSpec]) -> None:
    """Refuse ``--quality`` on random weights and a ``--quality-tokens`` below 2, before anything runs."""
    if getattr(args, "quality_tokens", None) is not None and not getattr(args, "quality", False):
        raise BadInputError("--quality-tokens needs --quality")
    if not getattr(args, "quality", False):
        return
    if args.quality_tokens is not None and args.quality_tokens < 2:
        raise BadInputError(f"--quality-tokens must be at least 2, got {args.quality_tokens}")
    from bench.measure.quality_stage import refuse_random_weights

    refuse_random_weights(cases)


def _line(job: Any, block: dict[str, Any]) -> str:
    head = f"bench: quality {job.model} {job.precision}:"
    if block.get("status") != "ok":
        return f"{head} failed ({block.get('error')}) after {block.get('wall_s', 0):.1f} s"
    if "kl_mean_nats" in block:
        what = (
            f"KL mean {block['kl_mean_nats']:.4f} nats, p99 {block['kl_p99_nats']:.4f} nats, "
            f"top-1 {100 * block['top1_agreement']:.1f} %, perplexity {block['perplexity']:.2f}"
        )
    else:
        what = f"embedding cosine mean {block['embedding_cosine_mean']:.5f}"
    ref = "" if block.get("reference_cached") else f", reference computed in {block['reference_wall_s']:.1f} s"
    return f"{head} {what} vs {block['reference_precision']} ({block['wall_s']:.1f} s{ref})"


def run_quality(args: Any, cases: Sequence[CaseSpec]) -> Callable[[Any], Any] | None:
    """With ``--quality``: score every precision of ``cases`` and return the records' annotator; else None."""
    if not getattr(args, "quality", False) or not cases:
        return None
    from bench.measure.quality_stage import jobs_for, run_quality_pass

    jobs = jobs_for(cases, max_tokens=args.quality_tokens)
    print(
        f"bench: quality pass: {len(jobs)} precision(s), each against its model's reference precision, "
        "teacher-forced over the shipped evaluation text",
        file=sys.stderr,
    )
    results = run_quality_pass(jobs, on_block=lambda job, block: print(_line(job, block), file=sys.stderr))
    print(
        f"bench: quality pass took {results.wall_s:.1f} s (before the timed cases, in its own process)", file=sys.stderr
    )
    return results.annotate
