"""Metric formulas (the vLLM / GenAI-Perf / MLPerf definitions), derived from raw samples only."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Sample standard deviation over the mean; 0 for fewer than two samples."""
    if len(values) < 2:
        return 0.0
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean else math.nan


def token_times_to_sample(start_s: float, token_times_s: Sequence[float]) -> tuple[float, float, tuple[float, ...]]:
    """Turn one call's start and per-token arrival times into (TTFT, E2E, inter-token gaps)."""
    if not token_times_s:
        raise ValueError("a generation produced no token timestamps")
    ttft = token_times_s[0] - start_s
    e2e = token_times_s[-1] - start_s
    gaps = tuple(b - a for a, b in zip(token_times_s, token_times_s[1:], strict=False))
    return ttft, e2e, gaps


def generate_metrics(
    ttft_s: Sequence[float],
    e2e_s: Sequence[float],
    itl_s: Sequence[Sequence[float]],
    batch_size: int,
    context_tokens: int,
    new_tokens: int,
) -> dict[str, float]:
    """Summary of a generate case: medians over repetitions, ITL percentiles over all gaps.

    TTFT = first token - start; prefill tokens/s = B*L/TTFT; E2E = last token - start;
    TPOT = (E2E - TTFT)/(N - 1); decode tokens/s = B*(N - 1)/(E2E - TTFT).
    """
    if not ttft_s:
        return {}
    out = {
        "ttft_s": statistics.median(ttft_s),
        "e2e_s": statistics.median(e2e_s),
        "prefill_tokens_per_s": statistics.median(batch_size * context_tokens / t for t in ttft_s),
        "e2e_cv": coefficient_of_variation(e2e_s),
        "repetitions": float(len(e2e_s)),
    }
    if new_tokens > 1:
        decode = [e - t for t, e in zip(ttft_s, e2e_s, strict=True)]
        out["tpot_s"] = statistics.median(d / (new_tokens - 1) for d in decode)
        out["decode_tokens_per_s"] = statistics.median(
            batch_size * (new_tokens - 1) / d if d > 0 else math.inf for d in decode
        )
        gaps = [g for rep in itl_s for g in rep]
        out["itl_p50_s"] = percentile(gaps, 50)
        out["itl_p90_s"] = percentile(gaps, 90)
        out["itl_p99_s"] = percentile(gaps, 99)
    return out


def encode_metrics(latency_s: Sequence[float], batch_size: int, sequence_tokens: int) -> dict[str, float]:
    """Summary of an encode case: median latency, sequences/s = B/latency, tokens/s = B*L/latency."""
    if not latency_s:
        return {}
    median = statistics.median(latency_s)
    return {
        "latency_s": median,
        "latency_p90_s": percentile(latency_s, 90),
        "sequences_per_s": batch_size / median,
        "tokens_per_s": batch_size * sequence_tokens / median,
        "latency_cv": coefficient_of_variation(latency_s),
        "repetitions": float(len(latency_s)),
    }
