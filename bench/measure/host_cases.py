"""One case's host memory, measured in a fresh process with the harness's own loader and scenario code.

:func:`measure_host_case` reports how much the process's resident memory grew: the CPU evidence the
predictor's accuracy benchmark and tests compare against.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class HostCaseMeasurement:
    """Host memory one case added to a warm process: peak RSS minus the RSS before the model was loaded."""

    model: str
    precision: str
    context_tokens: int
    batch_size: int
    new_tokens: int
    baseline_rss_bytes: int  # before the model was loaded (a warm process: one load and run done and dropped)
    peak_rss_bytes: int  # the high-water mark of the run (reset after loading, as the runner does)
    loaded_rss_bytes: int  # after loading, before the run
    weights_bytes: int
    kv_cache_bytes: int | None
    seconds: float
    bnb_4bit_kernel_path: str | None = None  # which 4-bit path bitsandbytes took (bench.config.precision)

    @property
    def measured_bytes(self) -> int:
        """What the case added: peak RSS minus the baseline."""
        return self.peak_rss_bytes - self.baseline_rss_bytes

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (with ``measured_bytes``)."""
        return dict(asdict(self), measured_bytes=self.measured_bytes)


# glibc returns freed blocks of at least this size to the system at once, so resident memory follows
# live tensor memory (as a GPU allocator's reservations would) instead of glibc's heap high-water mark.
HOST_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}


def _run_host_case(spec: dict[str, Any]) -> dict[str, Any]:
    """In this (fresh) process: warm up on the case, drop the model, then load it again and run it while
    reading the resident-memory high-water mark (reset after loading, as the runner does)."""
    import ctypes
    import gc

    import torch

    from bench.config.models import DECODER, resolve_source
    from bench.config.precision import get_precision
    from bench.measure.bnb_runtime import kernel_path
    from bench.measure.loader import load_model, random_checkpoint
    from bench.measure.memory import host_peak_rss_bytes, host_rss_bytes, kv_cache_bytes, reset_host_peak
    from bench.measure.quantization import weights_bytes
    from bench.measure.scenarios import make_prompt, run_encode, run_generate

    torch.set_num_threads(int(spec.get("threads") or torch.get_num_threads()))
    source = resolve_source(spec["model"], "random")
    precision = get_precision(spec["precision"])
    switch = spec.get("bnb_avx512bf16")
    if precision.quantized:
        from bench.measure.bnb_runtime import import_bitsandbytes

        import_bitsandbytes()  # imported before the baseline, as a worker would have it
        random_checkpoint(source)
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except OSError:
        trim = None

    def settle() -> None:
        gc.collect()
        if trim is not None:
            trim(0)

    def load() -> Any:
        loaded = load_model(source, precision, "cpu")
        if switch is not None:
            from bench.measure.bnb_runtime import set_avx512bf16_switch

            set_avx512bf16_switch(loaded.model, switch)
        with torch.no_grad():  # weights loaded from a file may still be mapped pages: make them all resident
            for t in (*loaded.model.parameters(), *loaded.model.buffers()):
                if t.numel():
                    t.view(-1)[:: max(1, 4096 // t.element_size())].sum()
        return loaded

    def run(loaded: Any) -> int | None:
        model = loaded.model
        prompt = make_prompt(model.config.vocab_size, spec["batch_size"], spec["context_tokens"], 0, "cpu")
        if source.family == DECODER:
            sample = run_generate(model, prompt, spec["new_tokens"])
            return kv_cache_bytes(sample.cache)
        prompt["token_type_ids"] = torch.zeros_like(prompt["input_ids"])
        run_encode(model, prompt)
        return None

    warm = load()
    run(warm)
    del warm
    settle()
    baseline = host_rss_bytes() or 0
    start = time.perf_counter()
    loaded = load()
    settle()
    reset_host_peak()  # like the runner: the peak of the run, not of loading
    loaded_rss = host_rss_bytes() or 0
    kv = run(loaded)
    peak = host_peak_rss_bytes() or 0
    seconds = time.perf_counter() - start
    return {
        "model": spec["model"],
        "precision": spec["precision"],
        "context_tokens": spec["context_tokens"],
        "batch_size": spec["batch_size"],
        "new_tokens": spec["new_tokens"],
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak,
        "loaded_rss_bytes": loaded_rss,
        "weights_bytes": weights_bytes(loaded.model),
        "kv_cache_bytes": kv,
        "bnb_4bit_kernel_path": kernel_path(loaded.model, "cpu") if precision.quantized else None,
        "seconds": seconds,
    }


def measure_host_cases(
    cases: list[tuple[str, str, int, int, int]],
    *,
    threads: int | None = None,
    timeout_s: float = 1800.0,
    bnb_avx512bf16: bool | None = None,
) -> list[HostCaseMeasurement]:
    """Measure several ``(model, precision, context, batch, new_tokens)`` cases one after another in one fresh
    process (each with its own warm-up and baseline); see :func:`measure_host_case`. ``bnb_avx512bf16`` sets
    bitsandbytes' CPU AVX512-BF16 switch on the 4-bit layers (:func:`bench.measure.bnb_runtime.set_avx512bf16_switch`;
    None: the library's choice)."""
    specs = [
        {
            "model": m,
            "precision": p,
            "context_tokens": c,
            "batch_size": b,
            "new_tokens": n,
            "threads": threads,
            "bnb_avx512bf16": bnb_avx512bf16,
        }
        for m, p, c, b, n in cases
    ]
    env = dict(os.environ, **HOST_MALLOC_ENV)
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")  # no hub lookups in the measuring process (bench.measure.bnb_runtime)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.measure.host_cases", "--host-cases", json.dumps(specs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or len(lines) != len(specs):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"host measurement failed: {' | '.join(tail)}")
    return [HostCaseMeasurement(**json.loads(line)) for line in lines]


def measure_host_case(
    model: str,
    precision: str,
    context_tokens: int,
    batch_size: int = 1,
    new_tokens: int = 0,
    *,
    threads: int | None = None,
    timeout_s: float = 900.0,
) -> HostCaseMeasurement:
    """Run one case in a fresh process (the harness's loader and scenarios) and measure its host memory.

    glibc is told to return freed blocks to the system at once (``HOST_MALLOC_ENV``), so the resident
    set follows live tensor memory; the baseline is taken after one warm-up load and run of the same case.
    """
    (m,) = measure_host_cases(
        [(model, precision, context_tokens, batch_size, new_tokens)], threads=threads, timeout_s=timeout_s
    )
    return m


if __name__ == "__main__":  # the child process of measure_host_cases
    if len(sys.argv) == 3 and sys.argv[1] == "--host-cases":
        for item in json.loads(sys.argv[2]):
            print(json.dumps(_run_host_case(item)), flush=True)
    else:
        print("usage: python -m bench.measure.host_cases --host-cases JSON", file=sys.stderr)
        sys.exit(2)
