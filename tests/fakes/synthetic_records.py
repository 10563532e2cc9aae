"""Synthetic records with known distributions for the regression-tracking tests (not measurements)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.config.spec import CaseSpec, TimingPolicy
from bench.results.record import Memory, Record, Samples
from bench.results.run_folder import RunFolder

MiB = 1 << 20
GiB = 1 << 30
H200 = "NVIDIA H200"
L4 = "NVIDIA L4"


def generate_record(
    *,
    model: str = "phi-3-mini",
    precision: str = "fp16",
    context: int = 512,
    new_tokens: int = 64,
    batch: int = 1,
    ttft_s: float = 0.040,
    tpot_s: float = 0.025,
    slowdown: float = 1.0,
    noise: float = 0.02,
    reps: int = 10,
    seed: int = 0,
    device_name: str = H200,
    peak_bytes: int = int(8.3 * GiB),
    run_id: str = "run-base",
    status: str = "ok",
    flags: Sequence[str] = ("random_weights",),
) -> Record:
    """A generate record: TTFT and decode time drawn log-normal with the given relative noise, times x slowdown."""
    spec = CaseSpec(model, precision, "generate", batch, context, new_tokens, device="cuda", suite="gpu")
    if status != "ok":
        return Record(spec=spec, status=status, run_id=run_id, device="cuda:0", device_name=device_name,
                      error="CUDA out of memory" if status == "oom" else None)
    rng = np.random.default_rng(seed)
    ttft = ttft_s * slowdown * rng.lognormal(0.0, noise, reps)
    decode = tpot_s * (new_tokens - 1) * slowdown * rng.lognormal(0.0, noise, reps)
    e2e = ttft + decode
    itl = tuple(tuple([float(d) / (new_tokens - 1)] * (new_tokens - 1)) for d in decode)
    memory = Memory(
        weights_bytes=int(7.12 * GiB), peak_allocated_bytes=peak_bytes - 600 * MiB,
        peak_reserved_bytes=peak_bytes - 500 * MiB, nvml_process_peak_bytes=peak_bytes,
        baseline_bytes=500 * MiB, kv_cache_bytes=context * 393216, host_peak_rss_bytes=3 * GiB,
        device_total_bytes=143771 * MiB, nvml_method="process",
    )
    return Record(
        spec=spec, status="ok", run_id=run_id, policy=TimingPolicy(min_repetitions=reps, max_repetitions=reps),
        device="cuda:0", device_name=device_name, host="gpu-runner-1", started_utc="2025-01-01T00:00:00+00:00",
        samples=Samples(ttft_s=tuple(map(float, ttft)), e2e_s=tuple(map(float, e2e)), itl_s=itl),
        memory=memory, flags=tuple(flags),
    )


def encode_record(
    *,
    model: str = "bert-base",
    precision: str = "fp16",
    context: int = 128,
    batch: int = 8,
    latency_s: float = 0.0045,
    slowdown: float = 1.0,
    noise: float = 0.02,
    reps: int = 20,
    seed: int = 0,
    device_name: str = H200,
    peak_bytes: int = 900 * MiB,
    run_id: str = "run-base",
) -> Record:
    """An encode record: forward latency drawn log-normal with the given relative noise, x slowdown."""
    spec = CaseSpec(model, precision, "encode", batch, context, 0, device="cuda", suite="gpu")
    rng = np.random.default_rng(seed)
    lat = latency_s * slowdown * rng.lognormal(0.0, noise, reps)
    memory = Memory(weights_bytes=210 * MiB, peak_reserved_bytes=peak_bytes - 480 * MiB,
                    nvml_process_peak_bytes=peak_bytes, host_peak_rss_bytes=2 * GiB)
    return Record(spec=spec, status="ok", run_id=run_id, device="cuda:0", device_name=device_name,
                  samples=Samples(latency_s=tuple(map(float, lat))), memory=memory, flags=("random_weights",))


def suite_records(*, slowdown: float = 1.0, noise: float = 0.02, seed: int = 0, reps: int = 10,
                  device_name: str = H200, run_id: str = "run-base", peak_extra: int = 0) -> list[Record]:
    """A small GPU suite: Phi-3-mini at three precisions x three contexts, BERT-base at two precisions."""
    out = []
    for i, (precision, base_tpot) in enumerate((("fp16", 0.025), ("int8", 0.080), ("nf4", 0.035))):
        for j, context in enumerate((512, 1024, 2048)):
            out.append(generate_record(
                precision=precision, context=context, tpot_s=base_tpot, ttft_s=0.02 * context / 512,
                slowdown=slowdown, noise=noise, reps=reps, seed=seed * 1000 + 10 * i + j, device_name=device_name,
                run_id=run_id, peak_bytes=int((8.3 - 3 * i) * GiB) + context * MiB // 8 + peak_extra,
            ))
    for i, precision in enumerate(("fp16", "int8")):
        out.append(encode_record(precision=precision, slowdown=slowdown, noise=noise, reps=2 * reps,
                                 seed=seed * 1000 + 500 + i, device_name=device_name, run_id=run_id,
                                 peak_bytes=900 * MiB + peak_extra))
    return out


def envelope(run_id: str = "run-base", *, torch: str = "2.5.1", transformers: str = "5.24.0",
             bitsandbytes: str = "0.50.2", gpu: str = H200) -> dict:
    """An environment envelope like bench/environment.py writes."""
    return {
        "run_id": run_id, "created_utc": "2025-01-01T00:00:00+00:00", "suite": "gpu", "host": "gpu-runner-1",
        "cpu": "AMD EPYC 9654", "ram_bytes": 512 * GiB, "python": "3.11.7", "torch": torch,
        "transformers": transformers, "bitsandbytes": bitsandbytes, "cuda": "12.4", "driver": "550.54.15",
        "git_commit": "0123456789abcdef", "argv": ["bench", "run"],
        "gpus": [{"index": 0, "name": gpu, "uuid": "GPU-0000", "memory_bytes": 143771 * MiB}],
    }


def write_run(folder: Path, records: Sequence[Record], envelopes: Sequence[dict] | dict | None = None) -> Path:
    """A run folder: results.jsonl and (when given) environment.json."""
    run = RunFolder(folder).create()
    run.append_all(records)
    if isinstance(envelopes, dict):
        run.record_environment(envelopes)
    elif envelopes is not None:
        run.write_envelopes(envelopes)
    return folder
