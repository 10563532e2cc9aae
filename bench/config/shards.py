"""Splitting a suite over machines: ``bench run --shard K/N`` (joining the results: ``bench.results.merge``).

A shard is a deterministic slice: every machine that runs shard K of N with the same case list
gets the same cases, whatever order the list came in, and the N slices together hold every case
exactly once. Slices are balanced by expected cost (longest-expected-first, each case to the
least-loaded shard). ``bench merge`` joins the shards' run folders afterwards.

A Slurm job array uses the same pair::

    #SBATCH --array=1-4
    bench run --suite gpu --shard ${SLURM_ARRAY_TASK_ID}/4 --out runs/$SLURM_ARRAY_JOB_ID/$SLURM_ARRAY_TASK_ID
    # then, after the array (sbatch --dependency=afterok:<array job id>):
    bench merge runs/<array job id>/* --out runs/<array job id>/merged
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence

from bench.config.models import DECODER, resolve_source
from bench.config.spec import CaseSpec
from bench.errors import BadInputError

# Rough time per parameter-token relative to fp16 on a GPU: LLM.int8 and 4-bit dequantization are slower.
PRECISION_COST = {
    "fp32": 2.0,
    "fp16": 1.0,
    "bf16": 1.0,
    "int8": 2.5,
    "nf4": 1.3,
    "nf4-dq": 1.4,
    "fp4": 1.3,
    "fp4-dq": 1.4,
}
_FALLBACK_PARAMETERS = 1e9  # a model whose config cannot be read (a checkpoint missing on this machine)


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"K/N"`` (1 <= K <= N) into ``(K, N)``; anything else raises BadInputError."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise BadInputError(f"shard {text!r} must look like K/N, e.g. 1/4 for the first of four slices")
    k, n = int(match.group(1)), int(match.group(2))
    if n < 1:
        raise BadInputError(f"shard {text!r}: the number of slices N must be at least 1")
    if not 1 <= k <= n:
        raise BadInputError(f"shard {text!r}: K must lie between 1 and {n} (slices are numbered from 1)")
    return k, n


def _count_parameters(config: object, family: str) -> float:
    """Parameters of a transformer from its config: embeddings plus layers of attention and MLP."""
    h = int(getattr(config, "hidden_size", 0) or 0)
    layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    inter = int(getattr(config, "intermediate_size", 0) or 4 * h)
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    mlp_matrices = 3 if family == DECODER else 2  # gated MLP (Phi-3, Llama) vs plain (BERT)
    total = vocab * h + layers * (4 * h * h + mlp_matrices * h * inter)
    return float(total) if total > 0 else _FALLBACK_PARAMETERS


@functools.cache
def model_parameters(model: str, weights: str) -> float:
    """An estimate of a case's parameter count from its model config (a fallback when it cannot be read)."""
    try:
        source = resolve_source(model, weights)
        return _count_parameters(source.config_factory(), source.family)
    except (BadInputError, OSError, ValueError, TypeError, AttributeError):
        return _FALLBACK_PARAMETERS


def expected_cost(spec: CaseSpec) -> float:
    """Relative expected run time of a case: parameters x precision factor x (context + new tokens) x batch."""
    factor = PRECISION_COST.get(spec.precision, 1.0)
    return model_parameters(spec.model, spec.weights) * factor * max(1, spec.total_tokens) * max(1, spec.batch_size)


def assign_shards(cases: Sequence[CaseSpec], n: int, cost: Callable[[CaseSpec], float] = expected_cost) -> list[int]:
    """The 0-based shard of each case: costliest first (ties by key), each to the least-loaded shard (ties: lowest)."""
    if n < 1:
        raise BadInputError(f"cannot split cases into {n} shards; use at least 1")
    costs = [float(cost(c)) for c in cases]
    order = sorted(range(len(cases)), key=lambda i: (-costs[i], cases[i].key, i))
    loads = [0.0] * n
    shard = [0] * len(cases)
    for i in order:
        j = min(range(n), key=lambda s: (loads[s], s))
        shard[i] = j
        loads[j] += costs[i]
    return shard


def select_shard(
    cases: Sequence[CaseSpec], k: int, n: int, cost: Callable[[CaseSpec], float] = expected_cost
) -> list[CaseSpec]:
    """The cases of shard ``k`` of ``n`` (1-based ``k``), in their original order; may be empty when N > cases."""
    if not 1 <= k <= n:
        raise BadInputError(f"shard {k}/{n}: K must lie between 1 and N")
    shard = assign_shards(cases, n, cost)
    return [c for c, s in zip(cases, shard, strict=True) if s == k - 1]
