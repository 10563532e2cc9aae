"""The peak of live tensor bytes over one generate or encode call, from torch's own allocation record.

A measurement for the activation tests: ``live_tensor_peak`` runs a case in this process;
``live_tensor_peaks`` runs cases in a fresh process with torch's CPU kernels forced to one capability
(``ATEN_CPU_CAPABILITY``, read once when torch starts), so that torch, and bitsandbytes, which picks its CPU
int8 kernels from ``torch.backends.cpu.get_cpu_capability()`` (0.50.2, ``backends/cpu/ops.py``), take the same
path on every x86-64 host whatever its ISA. The child checks that the capability took effect.

bitsandbytes' AVX512-BF16 path for 4-bit layers (weights repacked on the first forward, a fused kernel for every
row count) follows the CPU itself, not torch's capability; ``bnb_avx512bf16`` sets the library's own switch
(``Linear4bit.support_avx512bf16_for_cpu``, 0.50.2 ``nn/modules.py``) on every 4-bit layer before the first
forward: None leaves the library's choice, False takes the path every CPU has, True needs a CPU with AVX512_BF16.

The record is torch.profiler's ``[memory]`` events (``profile_memory=True``): every allocation and free of the
CPU allocator with its signed size. They are read through ``prof.profiler.kineto_results.events()``, a private
API read from torch 2.14.1 (``torch/autograd/profiler.py``); a torch without it fails here with its version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NO_SUCH_CAPABILITY = 3  # the child's exit status when torch cannot run the kernels asked for on this CPU


def set_bnb_avx512bf16(model, enabled: bool | None) -> int:
    """Set bitsandbytes' AVX512-BF16 switch on every 4-bit layer of ``model`` (None: leave it); the layers set."""
    if enabled is None:
        return 0
    from bitsandbytes.functional import has_avx512bf16
    from bitsandbytes.nn import Linear4bit

    if enabled and not has_avx512bf16():
        raise RuntimeError("this CPU has no AVX512_BF16: bitsandbytes cannot take that path here")
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = enabled
    return len(layers)


def live_tensor_peak(
    model_name: str, precision: str, context: int, batch: int, new: int, cache: str = "config",
    bnb_avx512bf16: bool | None = None,
) -> int:
    """The peak of live tensor bytes over one call (after one warm-up call), in this process."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from bench.config.models import DECODER, resolve_source
    from bench.config.precision import get_precision
    from bench.measure.loader import load_model
    from bench.measure.scenarios import make_prompt, run_encode, run_generate

    loaded = load_model(resolve_source(model_name, "random", cache), get_precision(precision), "cpu")
    set_bnb_avx512bf16(loaded.model, bnb_avx512bf16)
    prompt = make_prompt(loaded.model.config.vocab_size, batch, context, 0, "cpu")
    if loaded.source.family == DECODER:

        def go() -> None:
            run_generate(loaded.model, prompt, new)
    else:
        prompt["token_type_ids"] = torch.zeros_like(prompt["input_ids"])

        def go() -> None:
            run_encode(loaded.model, prompt)

    go()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        go()
    results = getattr(prof.profiler, "kineto_results", None)
    if results is None:
        raise RuntimeError(f"torch {torch.__version__} has no profiler.kineto_results: read from torch 2.14.1")
    events = sorted((e for e in results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def live_tensor_peaks(cases: list[tuple], capability: str = "avx2") -> list[int]:
    """``live_tensor_peak`` of each case, measured in one fresh process whose torch runs ``capability`` kernels
    (``avx2``, ``avx512`` or ``default``; torch can only lower it below what the host has)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability, "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, __file__, capability, json.dumps(cases)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    if done.returncode == NO_SUCH_CAPABILITY:
        import pytest

        pytest.skip(done.stderr.strip().splitlines()[-1])
    if done.returncode != 0:
        raise RuntimeError(f"the measuring process failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    import torch

    wanted, cases = sys.argv[1], json.loads(sys.argv[2])
    got = str(torch.backends.cpu.get_cpu_capability())
    if got.upper() != wanted.upper():
        print(f"torch runs {got} kernels here, not the {wanted} asked for: this CPU lacks it", file=sys.stderr)
        sys.exit(NO_SUCH_CAPABILITY)
    print(json.dumps([live_tensor_peak(*case) for case in cases]))
