"""Hand-made records and run folders for the claims and report tests (synthetic, not measurements).

GPU records model Phi-3-mini on an H200: NVML peak = CUDA context + weights + KV cache + the rest
(activations and allocator slack), with the KV cache at 384 KiB per token in fp16. Their allocator keeps
nothing cached at its peak (reserved = allocated) and 64 MiB sit outside it (library workspaces), and the
load's live peak stays below the generation's, so the live peak judged plus the context equals the NVML
peak: the number the tests give.
CPU records model the tiny configs of the smoke suite on host memory (no NVML numbers).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.config.spec import CaseSpec, TimingPolicy
from bench.results.load_phase import LoadPhase
from bench.results.record import Memory, Record, Samples
from bench.results.run_folder import RunFolder

MiB = 1 << 20
GiB = 1 << 30
H200 = "NVIDIA H200"
H200_TOTAL = 150_754_820_096
CPU_NAME = "Intel(R) Xeon(R) CPU @ 2.20GHz"
CONTEXT_BYTES = 512 * MiB
KV_PER_TOKEN = 393_216  # 2 x 32 layers x 32 heads x 96 x 2 bytes
WEIGHTS = {"fp16": 7_642_159_104, "int8": 4_110_000_000, "nf4": 2_290_000_000, "nf4-dq": 2_120_000_000}


def gpu_peak(precision: str, context: int, new_tokens: int = 64) -> int:
    """The synthetic NVML peak of a Phi-3-mini case: context + weights + KV + 80 KiB per prompt token + 96 MiB."""
    return CONTEXT_BYTES + WEIGHTS[precision] + KV_PER_TOKEN * (context + new_tokens) + 80 * 1024 * context + 96 * MiB


def _generate_samples(context: int, new_tokens: int, per_token_s: float, reps: int = 3) -> Samples:
    ttft = [0.010 + context * per_token_s * 6e-4 * (1 + 0.01 * i) for i in range(reps)]
    tpot = [per_token_s * (1 + context / 8192) * (1 + 0.005 * i) for i in range(reps)]
    return Samples(
        ttft_s=tuple(ttft),
        e2e_s=tuple(t + p * (new_tokens - 1) for t, p in zip(ttft, tpot, strict=True)),
        itl_s=tuple(tuple([p] * (new_tokens - 1)) for p in tpot),
    )


def gpu_generate(
    precision: str, context: int, *, peak: int | None = None, status: str = "ok", new_tokens: int = 64,
    model: str = "phi-3-mini", cap: int | None = None, flags: Sequence[str] = ("random_weights",),
    device_name: str = H200, host: str = "gpu-host",
) -> Record:
    """A Phi-3-mini generate record measured on a GPU (or an OOM on it)."""
    spec = CaseSpec(model, precision, "generate", 1, context, new_tokens, device="cuda", suite="claims")
    if status != "ok":
        return Record(spec=spec, status=status, device="cuda:0", device_name=device_name, host=host, run_id="r1",
                      error="OutOfMemoryError: CUDA out of memory" if status == "oom" else "RuntimeError: boom",
                      memory=Memory(memory_cap_bytes=cap))
    peak = gpu_peak(precision, context, new_tokens) if peak is None else peak
    memory = Memory(
        weights_bytes=WEIGHTS.get(precision, 2 * GiB), peak_allocated_bytes=peak - CONTEXT_BYTES - 64 * MiB,
        peak_reserved_bytes=peak - CONTEXT_BYTES - 64 * MiB, nvml_process_peak_bytes=peak, baseline_bytes=CONTEXT_BYTES,
        kv_cache_bytes=KV_PER_TOKEN * (context + new_tokens), host_peak_rss_bytes=3 * GiB,
        device_total_bytes=H200_TOTAL, memory_cap_bytes=cap, nvml_method="process",
    )
    per_token = {"fp16": 0.008, "int8": 0.030, "nf4": 0.012}.get(precision, 0.01)
    return Record(
        spec=spec, status="ok", run_id="r1", policy=TimingPolicy(), device="cuda:0", device_name=device_name,
        host=host, samples=_generate_samples(context, new_tokens, per_token), memory=memory, flags=tuple(flags),
        load=_load(min(WEIGHTS.get(precision, 2 * GiB), peak - CONTEXT_BYTES - 80 * MiB), spec),
    )


def _load(weights: int, spec: CaseSpec) -> LoadPhase:
    """A load whose live peak (weights + one 16 MiB tensor in flight) stays below the generation's (the callers
    cap ``weights`` for a hand-given peak below the weights)."""
    return LoadPhase(load_s=4.0, load_peak_allocated_bytes=weights + 16 * MiB, load_allocated_after_bytes=weights,
                     load_reserved_after_bytes=weights + 16 * MiB, load_nvml_process_bytes=CONTEXT_BYTES + weights
                     + 16 * MiB, nvml_method="process", loaded_for_key=spec.key)


def gpu_encode(precision: str, seq: int, batch: int, *, model: str = "bert-base") -> Record:
    """A BERT-base encode record measured on a GPU."""
    spec = CaseSpec(model, precision, "encode", batch, seq, 0, device="cuda", suite="claims")
    latency = (0.002 + batch * seq * 2e-7) * (0.55 if precision == "fp16" else 1.0)
    weights = 219_000_000 if precision == "fp16" else 438_000_000
    peak = CONTEXT_BYTES + weights + 16 * MiB + batch * seq * (40_000 if precision == "fp16" else 80_000)
    memory = Memory(weights_bytes=weights, nvml_process_peak_bytes=peak, baseline_bytes=CONTEXT_BYTES,
                    peak_allocated_bytes=peak - CONTEXT_BYTES,
                    peak_reserved_bytes=peak - CONTEXT_BYTES, host_peak_rss_bytes=2 * GiB,
                    device_total_bytes=H200_TOTAL, nvml_method="process")
    return Record(spec=spec, status="ok", run_id="r1", device="cuda:0", device_name=H200, host="gpu-host",
                  samples=Samples(latency_s=(latency, latency * 1.01, latency * 0.99)), memory=memory,
                  flags=("random_weights",), load=_load(min(weights, peak - CONTEXT_BYTES - 16 * MiB), spec))


def cpu_generate(precision: str, context: int, *, model: str = "phi-3-tiny", new_tokens: int = 8,
                 flags: Sequence[str] = ("random_weights",)) -> Record:
    """A tiny decoder generate record measured on a CPU: host RSS only."""
    spec = CaseSpec(model, precision, "generate", 1, context, new_tokens, device="cpu", suite="smoke")
    weights = {"fp32": 60 * MiB, "fp16": 30 * MiB, "int8": 22 * MiB, "nf4": 18 * MiB}.get(precision, 30 * MiB)
    memory = Memory(weights_bytes=weights, kv_cache_bytes=4 * 256 * 2 * 2 * (context + new_tokens),
                    host_peak_rss_bytes=700 * MiB + weights + context * 20_000)
    return Record(spec=spec, status="ok", run_id="c1", device="cpu", device_name=CPU_NAME, host="ci-box",
                  samples=_generate_samples(context, new_tokens, 0.004), memory=memory, flags=tuple(flags))


def cpu_encode(precision: str, seq: int, batch: int, *, model: str = "bert-tiny") -> Record:
    """A tiny encoder record measured on a CPU."""
    spec = CaseSpec(model, precision, "encode", batch, seq, 0, device="cpu", suite="smoke")
    latency = 0.001 + batch * seq * 1e-6
    memory = Memory(weights_bytes=17 * MiB, host_peak_rss_bytes=650 * MiB + batch * seq * 8_000)
    return Record(spec=spec, status="ok", run_id="c1", device="cpu", device_name=CPU_NAME, host="ci-box",
                  samples=Samples(latency_s=(latency, latency * 1.02, latency * 0.98)), memory=memory,
                  flags=("random_weights",))


CONTEXTS = (128, 1024, 2048, 3072, 4032)


def gpu_suite() -> list[Record]:
    """Phi-3-mini fp16/int8/nf4 at the claims' contexts and BERT-base at three lengths and two batches, on an H200.

    With the synthetic peaks: fp16 fits 8 GiB at 128 tokens only; int8 fits 6 GiB up to 3072, not at 4032;
    nf4 and nf4-dq fit everywhere.
    """
    records = [gpu_generate(p, c) for p in ("fp16", "int8", "nf4", "nf4-dq") for c in CONTEXTS]
    records += [gpu_encode(p, s, b) for p in ("fp16", "fp32") for b in (1, 8) for s in (128, 256, 512)]
    return records


def cpu_suite() -> list[Record]:
    """The smoke suite's shape on a CPU: tiny decoder in three precisions, tiny encoder in two batch sizes."""
    records = [cpu_generate(p, c) for p in ("fp32", "int8", "nf4") for c in (16, 32, 64)]
    records += [cpu_encode("fp32", s, b) for b in (1, 4) for s in (16, 32, 64)]
    return records


def envelope(run_id: str = "r1", *, gpus: Sequence[dict] | None = None, suite: str = "claims") -> dict:
    """An environment envelope with the keys bench.measure.environment writes."""
    return {
        "run_id": run_id, "created_utc": "2025-06-01T12:00:00+00:00", "suite": suite, "host": "gpu-host",
        "cpu": "AMD EPYC 9654", "ram_bytes": 128 * GiB, "python": "3.11.7", "torch": "2.6.0",
        "transformers": "5.24.0", "bitsandbytes": "0.50.2", "cuda": "12.4", "driver": "550.54.15",
        "git_commit": "abc1234", "argv": ["bench", "run", "--suite", suite],
        "gpus": list(gpus) if gpus is not None else [
            {"index": 0, "name": H200, "uuid": "GPU-0000", "memory_bytes": H200_TOTAL}],
    }


def write_run(folder: Path, records: Sequence[Record], env: dict | None = None) -> Path:
    """A run folder: results.jsonl plus environment.json (omitted when ``env`` is None)."""
    run = RunFolder(folder).create()
    run.append_all(records)
    if env is not None:
        run.record_environment(env)
    return folder
