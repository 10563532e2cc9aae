"""Metric formulas (the vLLM / GenAI-Perf / MLPerf definitions), derived from raw samples only.

Per repetition: :func:`prefill_rates`, :func:`decode_rates`, :func:`tpot_values`,
:func:`encode_token_rates`, and :func:`speed_samples` (the series the regression gate tests and
the exports' ranges use). Per case: :func:`generate_metrics` and :func:`encode_metrics`, medians
over those series; ``Record.metrics`` calls them. The bandwidth roofline of decoding:
:func:`roofline_metrics` (``decode_roofline_fraction`` = the floor time per token over the measured TPOT).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # record.py imports this module
    from bench.results.record import Record


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


# --------------------------------------------------------------------------- per repetition


def prefill_rates(ttft_s: Sequence[float], batch_size: int, context_tokens: int) -> list[float]:
    """Prefill tokens/s of every repetition: B*L / TTFT (inf where the TTFT is not positive)."""
    return [batch_size * context_tokens / t if t > 0 else math.inf for t in ttft_s]


def decode_seconds(ttft_s: Sequence[float], e2e_s: Sequence[float]) -> list[float]:
    """Decode time of every repetition: E2E - TTFT (the repetitions' lists must be equally long)."""
    return [e - t for t, e in zip(ttft_s, e2e_s, strict=True)]


def decode_rates(ttft_s: Sequence[float], e2e_s: Sequence[float], batch_size: int, new_tokens: int) -> list[float]:
    """Decode tokens/s of every repetition: B*(N - 1) / (E2E - TTFT) (inf where decoding took no time); [] for N < 2."""
    if new_tokens < 2:
        return []
    return [batch_size * (new_tokens - 1) / d if d > 0 else math.inf for d in decode_seconds(ttft_s, e2e_s)]


def tpot_values(ttft_s: Sequence[float], e2e_s: Sequence[float], new_tokens: int) -> list[float]:
    """Time per output token of every repetition: (E2E - TTFT) / (N - 1); [] for N < 2."""
    if new_tokens < 2:
        return []
    return [d / (new_tokens - 1) for d in decode_seconds(ttft_s, e2e_s)]


def encode_token_rates(latency_s: Sequence[float], batch_size: int, sequence_tokens: int) -> list[float]:
    """Encoded tokens/s of every repetition: B*L / latency (inf where the latency is not positive)."""
    return [batch_size * sequence_tokens / t if t > 0 else math.inf for t in latency_s]


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def speed_samples(record: Record, metric: str) -> list[float]:
    """Per-repetition values of a speed metric of a record, from its raw samples with the formulas above.

    ``metric``: ``ttft_s``, ``e2e_s``, ``latency_s`` (the samples themselves), or a rate:
    ``prefill_tokens_per_s``, ``decode_tokens_per_s``, ``tokens_per_s`` (encode). A repetition
    without a finite rate (a non-positive duration) is left out.
    """
    s, smp = record.spec, record.samples
    if metric == "ttft_s":
        return list(smp.ttft_s)
    if metric == "e2e_s":
        return list(smp.e2e_s)
    if metric == "latency_s":
        return list(smp.latency_s)
    if metric == "prefill_tokens_per_s":
        return _finite(prefill_rates(smp.ttft_s, s.batch_size, s.context_tokens))
    if metric == "decode_tokens_per_s":
        return _finite(decode_rates(smp.ttft_s, smp.e2e_s, s.batch_size, s.new_tokens))
    if metric == "tokens_per_s":
        return _finite(encode_token_rates(smp.latency_s, s.batch_size, s.context_tokens))
    raise ValueError(f"{metric!r} is not a speed metric")


# --------------------------------------------------------------------------- per case


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
        "prefill_tokens_per_s": statistics.median(prefill_rates(ttft_s, batch_size, context_tokens)),
        "e2e_cv": coefficient_of_variation(e2e_s),
        "repetitions": float(len(e2e_s)),
    }
    if new_tokens > 1:
        out["tpot_s"] = statistics.median(tpot_values(ttft_s, e2e_s, new_tokens))
        out["decode_tokens_per_s"] = statistics.median(decode_rates(ttft_s, e2e_s, batch_size, new_tokens))
        gaps = [g for rep in itl_s for g in rep]
        out["itl_p50_s"] = percentile(gaps, 50)
        out["itl_p90_s"] = percentile(gaps, 90)
        out["itl_p99_s"] = percentile(gaps, 99)
    return out


def engine_timing_metrics(
    ttft_s: Sequence[float],
    e2e_s: Sequence[float],
    prompt_eval_s: Sequence[float],
    eval_s: Sequence[float],
    new_tokens: int,
) -> dict[str, float]:
    """The harness's timings against the engine's own (llama.cpp's ``llama_perf_context``), repetition by repetition.

    The engine times its prompt evaluation (``t_p_eval``) and its single-token evaluations (``t_eval``, N - 1 of
    them); the harness's TTFT adds the call into the binding and the first argmax, its decode time (E2E - TTFT)
    the per-token Python loop. Medians: ``engine_prompt_eval_s``, ``engine_eval_s``, ``engine_decode_tokens_per_s``
    = (N - 1) / t_eval, and the ratios ``ttft_over_engine_prompt`` = TTFT / t_p_eval and
    ``decode_over_engine_eval`` = (E2E - TTFT) / t_eval (1.0 = the same time; 1.02 = the harness reads 2% more).
    """
    n = min(len(ttft_s), len(prompt_eval_s), len(eval_s))
    if n == 0:
        return {}
    out = {
        "engine_prompt_eval_s": statistics.median(prompt_eval_s[:n]),
        "ttft_over_engine_prompt": statistics.median(
            [t / p if p > 0 else math.inf for t, p in zip(ttft_s[:n], prompt_eval_s[:n], strict=True)]
        ),
    }
    if new_tokens > 1:
        decode = decode_seconds(ttft_s[:n], e2e_s[:n])
        out["engine_eval_s"] = statistics.median(eval_s[:n])
        out["engine_decode_tokens_per_s"] = statistics.median(
            [(new_tokens - 1) / e if e > 0 else math.inf for e in eval_s[:n]]
        )
        out["decode_over_engine_eval"] = statistics.median(
            [d / e if e > 0 else math.inf for d, e in zip(decode, eval_s[:n], strict=True)]
        )
    return out


# --------------------------------------------------------------------------- bandwidth roofline of decoding


def decode_kv_tokens_read(context_tokens: int, new_tokens: int, window_tokens: int | None = None) -> float:
    """KV-cache tokens per sequence one timed decode step reads, on average over the steps TPOT covers.

    TPOT covers the N - 1 steps that produce tokens 2..N; the step producing token k attends over the prompt
    and the k - 1 tokens before it: L + k - 1 tokens, or the sliding window W where it is shorter (a windowed
    cache keeps W - 1 old tokens beside the new one). 0 for N < 2.
    """
    if new_tokens < 2:
        return 0.0
    reads = [context_tokens + k - 1 for k in range(2, new_tokens + 1)]
    if window_tokens:
        reads = [min(r, window_tokens) for r in reads]
    return sum(reads) / len(reads)


def decode_step_bytes(
    weights_read_bytes: float,
    kv_bytes_per_token: float,
    batch_size: int,
    context_tokens: int,
    new_tokens: int,
    window_tokens: int | None = None,
) -> float:
    """Bytes one decode step must read: the weights once (as stored) plus every sequence's KV cache at that
    position (:func:`decode_kv_tokens_read` tokens of ``kv_bytes_per_token`` each)."""
    kv_tokens = decode_kv_tokens_read(context_tokens, new_tokens, window_tokens)
    return float(weights_read_bytes) + batch_size * float(kv_bytes_per_token) * kv_tokens


def decode_floor_s(step_bytes: float, bandwidth_bytes_per_s: float) -> float:
    """The bandwidth floor of one decode step: the bytes it must read over the memory bandwidth."""
    if not bandwidth_bytes_per_s > 0:
        raise ValueError(f"memory bandwidth {bandwidth_bytes_per_s!r} must be positive")
    return step_bytes / bandwidth_bytes_per_s


def roofline_metrics(
    tpot_s: float | None,
    weights_read_bytes: float | None,
    kv_bytes_per_token: float | None,
    bandwidth_bytes_per_s: float | None,
    batch_size: int,
    context_tokens: int,
    new_tokens: int,
    window_tokens: int | None = None,
) -> dict[str, float]:
    """``decode_step_bytes``, ``decode_floor_s``, ``decode_ceiling_tokens_per_s`` = B / floor (the roofline's
    decode tokens/s) and ``decode_roofline_fraction`` = floor / measured TPOT.

    Each is left out where an input is unknown (no bandwidth: no floor and no fraction); the record says why.
    """
    if weights_read_bytes is None or kv_bytes_per_token is None or new_tokens < 2:
        return {}
    step = decode_step_bytes(
        weights_read_bytes, kv_bytes_per_token, batch_size, context_tokens, new_tokens, window_tokens
    )
    out = {"decode_step_bytes": step}
    if bandwidth_bytes_per_s:
        floor = decode_floor_s(step, bandwidth_bytes_per_s)
        out["decode_floor_s"] = floor
        out["decode_ceiling_tokens_per_s"] = batch_size / floor
        if tpot_s is not None and tpot_s > 0 and math.isfinite(tpot_s):
            out["decode_roofline_fraction"] = floor / tpot_s
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


# --------------------------------------------------------------------------- what a card must hold (measured)


def outside_allocator_bytes(record: Record) -> int | None:
    """Device memory the process holds outside torch's caching allocator: the CUDA context, library handles
    and workspaces, kernel modules. Measured as the NVML process peak minus the allocator's reserved peak of
    the steady state (both over the same timed region), and never below ``baseline_bytes`` (the NVML reading
    before the model was loaded: the CUDA context alone). None when neither is known (a CPU run)."""
    m = record.memory
    values = [m.baseline_bytes]
    if m.nvml_process_peak_bytes is not None and m.peak_reserved_bytes is not None:
        values.append(m.nvml_process_peak_bytes - m.peak_reserved_bytes)
    known = [v for v in values if v is not None]
    return max(known) if known else None


def live_peak_allocated_bytes(record: Record) -> int | None:
    """The allocator's live peak over loading and generation: the largest of the load's live peak
    (``load.load_peak_allocated_bytes``), the steady state's (``memory.peak_allocated_bytes``) and the user
    view's (load + one generation at this case's shape, where this record has one). None without the steady
    state's peak (a CPU run); the load's alone is not the case's."""
    steady = record.memory.peak_allocated_bytes
    if steady is None:
        return None
    others = (record.load.load_peak_allocated_bytes, record.user_view.peak_allocated_bytes)
    return max([steady, *(v for v in others if v is not None)])


def measured_fit_bytes(record: Record) -> int | None:
    """What a card must hold to load and run the case, measured: the live peak over loading and generation
    (:func:`live_peak_allocated_bytes`) plus the memory outside the allocator (:func:`outside_allocator_bytes`).

    Fit verdicts are judged on it: when an allocation would fail, the caching allocator first returns its
    cached blocks, so the cache nvidia-smi also counts does not decide whether the case runs. None when
    either part is unknown. The llama.cpp engine has no caching allocator: its fit is the NVML process peak.
    """
    if record.spec.engine == "llama.cpp":
        # llama.cpp allocates its buffers (weights, KV cache, compute) once, up front, with no caching allocator:
        # what the process holds on the device, context included, is what the card must hold
        return record.memory.nvml_process_peak_bytes
    live, outside = live_peak_allocated_bytes(record), outside_allocator_bytes(record)
    return None if live is None or outside is None else live + outside


def host_live_peak_rss_bytes(record: Record) -> int | None:
    """The host's peak resident set over loading and generation (VmHWM of the load, of the user view and of
    the steady state's timed region): the host-memory counterpart of :func:`measured_fit_bytes`."""
    values = (
        record.load.load_host_peak_rss_bytes,
        record.user_view.host_peak_rss_bytes,
        record.memory.host_peak_rss_bytes,
    )
    known = [v for v in values if v is not None]
    return max(known) if known else None


def measured_nvidia_smi_bytes(record: Record) -> int | None:
    """What nvidia-smi showed for the process after loading and one generation with no clean-up: the user
    view's NVML reading after its generation (its sampled peak where that reading is missing); None where the
    record has no user view on a GPU."""
    view = record.user_view
    if view.error is not None:
        return None
    return view.nvml_process_after_bytes if view.nvml_process_after_bytes is not None else view.nvml_process_peak_bytes


# --------------------------------------------------------------------------- the predictor beside the measurement

PREDICTOR_DRIFT_FRACTION = 0.05  # a prediction off the measurement by more than this flags the record
PEAK_READING_ALLOCATOR = "allocator peak"  # CUDA: torch's allocator peak over the timed region
# CPU: what a case adds to a warm process's resident set (the predictor's calibration; measured by
# bench.measure.host_cases.measure_host_cases, not by a run's workers, whose baseline is a cold process's: a first
# load and run there also pays imports, thread pools and heap growth, tens of MiB the predictor does not model)
PEAK_READING_HOST_RSS = "host peak RSS growth in a warm process"


def measured_peak_for_prediction(record: Record) -> int | None:
    """The measured figure a record's predicted peak stands beside, in the reading the prediction names
    (``record.prediction.peak_reading``): the allocator peak of the timed region on CUDA. None where the record
    holds no such reading: a CPU record's host figures are a cold worker's (see :data:`PEAK_READING_HOST_RSS`), so
    only its weights are held against the prediction."""
    if record.prediction.peak_reading == PEAK_READING_ALLOCATOR:
        return record.memory.peak_allocated_bytes
    return None


def relative_gap(predicted: int | None, measured: int | None) -> float | None:
    """(predicted - measured) / measured: positive when the predictor says more than was measured; None when
    either is unknown or nothing was measured."""
    if predicted is None or not measured:
        return None
    return (predicted - measured) / measured


def prediction_gaps(record: Record) -> dict[str, float]:
    """The predictor's gaps to the measurement of this record: ``predicted_peak_gap_fraction`` and
    ``predicted_weights_gap_fraction`` (see :func:`relative_gap`), where both figures are known."""
    p = record.prediction
    gaps = {
        "predicted_peak_gap_fraction": relative_gap(p.predicted_peak_bytes, measured_peak_for_prediction(record)),
        "predicted_weights_gap_fraction": relative_gap(p.predicted_weights_bytes, record.memory.weights_bytes),
    }
    return {k: v for k, v in gaps.items() if v is not None}


def predictor_drifted(record: Record) -> bool:
    """True when the predicted peak or weights are off the measurement by more than
    :data:`PREDICTOR_DRIFT_FRACTION` (the record is then flagged ``predictor_drift``)."""
    return any(abs(v) > PREDICTOR_DRIFT_FRACTION for v in prediction_gaps(record).values())
