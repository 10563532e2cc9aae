"""bitsandbytes' 4-bit kernel choice on CUDA, against the installed library's own rule; the path in predictions."""

from __future__ import annotations

import importlib
import itertools

import pytest

from bench.config.hardware import HardwareProfile, Measured
from bench.predict.bnb_kernels import CUDA_FUSED_FLOOR_ROWS, CUDA_FUSED_MAX_ROWS, cuda_fused
from bench.predict.memory import predict_memory
from bench.units import GiB

# (major, minor, SMs) of the architectures the rule names, with SM counts of real cards of each
ARCHES = [
    (7, 0, 80),
    (7, 5, 40),
    (8, 0, 108),
    (8, 6, 82),
    (8, 7, 16),
    (8, 9, 128),
    (9, 0, 132),
    (10, 0, 148),
    (12, 0, 170),
    (12, 1, 48),
]
SHAPES = [
    (256, 256),
    (768, 256),
    (3072, 3072),
    (9216, 3072),
    (16384, 3072),
    (3072, 8192),
    (1024, 4096),
    (32064, 3072),
    (20480, 3072),
    (4096, 14336),
    (640, 64),
    (12288, 1024),
    (8192, 2048),
]  # (N, K)
ROWS = [
    1,
    4,
    5,
    6,
    7,
    8,
    9,
    16,
    17,
    23,
    24,
    32,
    33,
    48,
    64,
    65,
    96,
    128,
    129,
    192,
    256,
    320,
    321,
    384,
    512,
    513,
    1024,
    1536,
    1537,
    4096,
]
DTYPES = {"float16": "float16", "bfloat16": "bfloat16", "float32": "float32"}


@pytest.fixture(scope="module")
def library_rule():
    """bitsandbytes' own dispatch (backends/cuda/ops.py), its device query answered for a chosen GPU."""
    import torch

    from bench.measure.bnb_runtime import import_bitsandbytes

    import_bitsandbytes()
    ops = importlib.import_module("bitsandbytes.backends.cuda.ops")
    rule = ops._gemm_4bit_use_custom_cuda.__wrapped__  # not the cached wrapper: the GPU changes between calls

    def decide(arch, m, n, k, dtype):
        props = ops._gpu_dispatch_props
        ops._gpu_dispatch_props = lambda _index: (arch[2], arch[0], arch[1])
        try:
            if m > ops._gemm_4bit_custom_max_m or k % 64:
                return False
            return bool(rule(0, getattr(torch, dtype), m, n, k))
        finally:
            ops._gpu_dispatch_props = props

    assert (ops._GEMM_4BIT_CUSTOM_FLOOR_M, ops._gemm_4bit_custom_max_m) == (CUDA_FUSED_FLOOR_ROWS, CUDA_FUSED_MAX_ROWS)
    return decide


def test_the_transcribed_rule_matches_the_installed_library(library_rule) -> None:
    differ = []
    for arch, (n, k), m, dtype in itertools.product(ARCHES, SHAPES, ROWS, DTYPES):
        ours = cuda_fused(m, n, k, dtype, f"{arch[0]}.{arch[1]}", arch[2])
        if ours != library_rule(arch, m, n, k, dtype):
            differ.append((arch, n, k, m, dtype, ours))
    assert differ == []


def test_what_the_rule_decides_without_the_sm_count() -> None:
    assert cuda_fused(4, 9216, 3072, "float16", "8.6", None) is True  # the floor needs nothing
    assert cuda_fused(1537, 9216, 3072, "float16", "8.6", None) is False  # the cap neither
    assert cuda_fused(100, 9216, 3072, "float16", "8.6", None) is None  # the tiers need the SMs
    assert cuda_fused(7, 9216, 3072, "float32", "8.6", None) is True  # fp32: fused below 8 rows, any GPU
    assert cuda_fused(8, 9216, 3072, "float32", None, None) is None


def _card(sms: int | None) -> HardwareProfile:
    return HardwareProfile(
        name="Card",
        kind="cuda",
        memory_bytes=24 * GiB,
        memory_bandwidth_bytes_per_s=1e12,
        compute_capability="8.6",
        measured=Measured(multiprocessor_count=sms) if sms else None,
    )


def test_a_fused_prefill_drops_the_dequantized_weight() -> None:
    """phi-3-mini nf4 prefill of 64 tokens on an sm86 card with 82 SMs: bitsandbytes' rule fuses gate_up (N 16384,
    K 3072: 256 blocks >= 82 SMs, up to 128 rows), so the 96 MiB fp16 copy of that weight is gone."""
    known = predict_memory("phi-3-mini", "nf4", 64, 1, 2, _card(82))
    unknown = predict_memory("phi-3-mini", "nf4", 64, 1, 2, _card(None))
    assert unknown.activation_bytes - known.activation_bytes >= 16384 * 3072 * 2 - 64 * 16384 * 2 * 4
    assert any("SM count unknown" in n for n in unknown.notes)
    assert not any("SM count unknown" in n for n in known.notes)
