"""The memory and speed predictor: exact full-size facts, the activation model against torch's own
allocation record, host memory against measurement, speed arithmetic and bad input."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
from live_tensors import live_tensor_peaks

from bench.config.hardware import HardwareProfile, Measured
from bench.config.precision import get_precision
from bench.config.spec import CaseSpec
from bench.errors import BadInputError
from bench.predict.architecture import architecture
from bench.predict.claims_adapter import claims_predictor
from bench.predict.fixed_costs import CUDA_SLACK_FRACTION, DEFAULT_CUDA_CONTEXT_BYTES
from bench.predict.kv_cache import kv_bytes_per_token
from bench.predict.memory import largest_batch, predict_memory
from bench.predict.speed import decode_bytes_per_step, predict_decode
from bench.predict.weights import weight_bytes
from bench.results.run_folder import RunFolder
from bench.units import GiB

MiB = 2**20

# Phi-3-mini (reference/models.md): 32 layers, hidden 3072, MLP 8192, vocab 32064, no GQA, head dim 96
LAYERS, H, INTER, VOCAB = 32, 3072, 8192, 32064
LINEARS = [(3 * H, H), (H, H), (2 * INTER, H), (H, INTER)]  # qkv, o, gate_up, down: (out, in)
LINEAR_NUMEL = sum(o * i for o, i in LINEARS) * LAYERS
KEPT_NUMEL = 2 * VOCAB * H + (2 * LAYERS + 1) * H  # embeddings, lm_head, norms stay in 16 bits
ROTARY_BUFFERS = 2 * 48 * 4  # inv_freq and original_inv_freq, float32


def cpu_profile(capability: str = "AVX2") -> HardwareProfile:
    return HardwareProfile(name="test host", kind="cpu", memory_bytes=64 * GiB, memory_bandwidth_bytes_per_s=2e10,
                           measured=Measured(cpu_capability=capability))


def gpu(name: str = "Card 12", mem_gib: int = 12, gbs: float = 360, cc: str = "8.6", **measured) -> HardwareProfile:
    return HardwareProfile(name=name, kind="cuda", memory_bytes=mem_gib * GiB, memory_bandwidth_bytes_per_s=gbs * 1e9,
                           compute_capability=cc, measured=Measured(**measured) if measured else None)


# --------------------------------------------------------------------------- exact full-size facts


def test_parameter_counts_of_the_real_configs() -> None:
    assert architecture("phi-3-mini").parameters == 3_821_079_552
    assert architecture("bert-base").parameters == 109_482_240
    assert LINEAR_NUMEL + KEPT_NUMEL == 3_821_079_552


def test_phi3_weight_bytes_per_precision() -> None:
    arch = architecture("phi-3-mini")
    kept16 = KEPT_NUMEL * 2 + ROTARY_BUFFERS
    assert weight_bytes(arch, get_precision("fp32")).total_bytes == 3_821_079_552 * 4 + ROTARY_BUFFERS
    assert weight_bytes(arch, get_precision("fp16")).total_bytes == 3_821_079_552 * 2 + ROTARY_BUFFERS
    assert weight_bytes(arch, get_precision("bf16")).total_bytes == 7_642_159_488
    rows = sum(o for o, _ in LINEARS) * LAYERS
    int8 = weight_bytes(arch, get_precision("int8"))
    assert int8.quantized_bytes == LINEAR_NUMEL  # one byte per weight
    assert int8.quant_state_bytes == rows * 4  # float32 SCB per output row
    assert int8.total_bytes == LINEAR_NUMEL + rows * 4 + kept16 == 4_022_344_064
    modules = 4 * LAYERS
    nf4 = weight_bytes(arch, get_precision("nf4"))
    assert nf4.quantized_bytes == LINEAR_NUMEL // 2
    assert nf4.quant_state_bytes == LINEAR_NUMEL // 64 * 4 + modules * 64  # float32 absmax per 64 + 16-entry code
    assert nf4.total_bytes == 2_432_842_112
    nested = sum(math.ceil(o * i / 64 / 256) for o, i in LINEARS) * LAYERS * 4
    dq = weight_bytes(arch, get_precision("nf4-dq"))
    assert dq.quant_state_bytes == LINEAR_NUMEL // 64 + nested + modules * (256 * 4 + 4 + 64)
    assert dq.total_bytes == 2_263_989_120
    assert weight_bytes(arch, get_precision("fp4")).total_bytes == nf4.total_bytes


def test_lm_head_stays_16_bit_and_bert_pooler_is_quantized() -> None:
    phi = {lin.name: lin.quantized for lin in architecture("phi-3-mini").linears}
    assert phi["lm_head"] is False and sum(phi.values()) == 4 * LAYERS
    bert = {lin.name: lin.quantized for lin in architecture("bert-base").linears}
    assert bert["pooler.dense"] is True and all(bert.values()) and len(bert) == 6 * 12 + 1


def test_bert_weight_bytes_per_precision() -> None:
    arch = architecture("bert-base")
    buffers = 2 * 512 * 8  # position_ids and token_type_ids, int64
    assert weight_bytes(arch, get_precision("fp32")).total_bytes == 109_482_240 * 4 + buffers
    assert weight_bytes(arch, get_precision("fp16")).total_bytes == 109_482_240 * 2 + buffers
    linear = (4 * 768 * 768 + 2 * 768 * 3072) * 12 + 768 * 768
    rows = (4 * 768 + 3072 + 768) * 12 + 768
    int8 = weight_bytes(arch, get_precision("int8"))
    assert (int8.quantized_bytes, int8.quant_state_bytes) == (linear, rows * 4)
    assert int8.total_bytes == linear + rows * 4 + (109_482_240 - linear) * 2 + buffers


def test_kv_bytes_per_token() -> None:
    assert kv_bytes_per_token(architecture("phi-3-mini"), get_precision("fp16")) == 2 * 32 * 32 * 96 * 2 == 393_216
    assert kv_bytes_per_token(architecture("phi-3-mini"), get_precision("nf4")) == 393_216  # fp16 cache
    assert kv_bytes_per_token(architecture("phi-3-mini"), get_precision("fp32")) == 786_432
    assert kv_bytes_per_token(architecture("bert-base"), get_precision("fp16")) == 0


def test_full_size_prediction_parts() -> None:
    p = predict_memory("phi-3-mini", "fp16", 4032, 1, 64, gpu())
    assert p.weights_bytes == 7_642_159_488
    # the checkpoint's 2047-token window keeps 2046 tokens per layer at the end; the prefill held the whole prompt
    assert p.kv_cache_final_bytes == 393_216 * 2046 and p.kv_cache_tokens == 2046
    assert p.peak_phase == "prefill" and p.kv_cache_bytes == 393_216 * 4032
    assert p.context_bytes == DEFAULT_CUDA_CONTEXT_BYTES
    # the MLP of the last layer: gate_up (2I), act (I) and product (I) in fp16 at once, plus hidden states
    assert p.activation_bytes >= 4032 * 4 * INTER * 2
    assert p.slack_bytes >= CUDA_SLACK_FRACTION * (p.kv_cache_bytes + p.activation_bytes)
    assert p.fits and 9 * GiB < p.total_bytes < 11 * GiB  # on a 12 GiB card
    assert p.label == "predicted"
    d = p.to_dict()
    assert isinstance(d["total_bytes"], int) and d["fits"] is True


def test_measured_context_replaces_the_assumed_one() -> None:
    plain = predict_memory("phi-3-mini", "nf4", 512, 1, 16, gpu())
    measured = predict_memory("phi-3-mini", "nf4", 512, 1, 16, gpu(runtime_overhead_bytes=300 * MiB))
    assert measured.context_bytes == 300 * MiB
    assert plain.total_bytes - measured.total_bytes == DEFAULT_CUDA_CONTEXT_BYTES - 300 * MiB


def test_long_generation_peaks_in_decode() -> None:
    p = predict_memory("phi-3-tiny", "fp16", 16, 4, 1000, gpu())
    assert p.peak_phase == "decode" and p.kv_cache_bytes == p.kv_cache_final_bytes


def test_quantized_prefill_workspace_depends_on_the_device() -> None:
    # on a GPU, 4-bit prefill dequantizes a whole weight; a CPU without AVX-512 runs int8 in float32
    nf4 = predict_memory("phi-3-mini", "nf4", 1024, 1, 8, gpu())
    fp16 = predict_memory("phi-3-mini", "fp16", 1024, 1, 8, gpu())
    assert nf4.activation_bytes > fp16.activation_bytes
    avx2 = predict_memory("phi-3-mini-2l", "int8", 256, 1, 8, cpu_profile("AVX2"))
    avx512 = predict_memory("phi-3-mini-2l", "int8", 256, 1, 8, cpu_profile("AVX512"))
    assert avx2.activation_bytes - avx512.activation_bytes >= 16384 * 3072 * 4 - 256 * 16384 * 16


def test_batch_limit_on_a_card() -> None:
    card = gpu("Card 8", 8)
    limit = largest_batch("phi-3-mini", "nf4", 2048, 64, card)
    assert limit >= 1
    assert predict_memory("phi-3-mini", "nf4", 2048, limit, 64, card).fits
    assert not predict_memory("phi-3-mini", "nf4", 2048, limit + 1, 64, card).fits
    assert largest_batch("phi-3-mini", "fp16", 2048, 64, gpu("Card 6", 6)) == 0


# --------------------------------------------------------------------------- bad input


def test_context_beyond_the_model_says_the_limit() -> None:
    with pytest.raises(BadInputError, match="maximum of 4096 positions; use a context of at most 4032"):
        predict_memory("phi-3-mini", "fp16", 4096, 1, 64)
    with pytest.raises(BadInputError, match="512"):
        predict_memory("bert-base", "fp16", 600)


@pytest.mark.parametrize("batch", [0, -3])
def test_impossible_batch(batch: int) -> None:
    with pytest.raises(BadInputError, match="at least 1"):
        predict_memory("phi-3-mini", "fp16", 128, batch, 8)


def test_other_bad_input() -> None:
    with pytest.raises(BadInputError, match="unknown model"):
        predict_memory("phi-4", "fp16", 128)
    with pytest.raises(BadInputError, match="unknown precision"):
        predict_memory("phi-3-mini", "int4", 128)
    with pytest.raises(BadInputError, match="encoder"):
        predict_memory("bert-base", "fp16", 128, 1, 8)


# --------------------------------------------------------------------------- decode speed


def test_decode_ceiling_is_bandwidth_over_bytes_read() -> None:
    card = gpu("Card 1T", 80, 1000, "9.0")
    per_step = decode_bytes_per_step("phi-3-mini", "fp16", 1000, 1, 65)
    weights = 7_642_159_488 - VOCAB * H * 2 + H * 2  # the embedding table is read for one row only
    # the 64 steps TPOT covers (tokens 2..65) attend over 1000 + k - 1 tokens: 1001..1064, mean 1032.5
    assert per_step == int(weights + 393_216 * 1032.5)
    s = predict_decode("phi-3-mini", "fp16", 1000, 1, 65, card)
    assert s.ceiling_tokens_per_s == pytest.approx(1e12 / per_step)
    assert s.label == "ceiling" and s.efficiency is None and s.predicted_tokens_per_s == s.ceiling_tokens_per_s


# The frozen CPU run (tests/data/runs/cpu-smoke): phi-3-tiny fp32, prompt 32 + 16 new tokens, decode measured at
# 43.68 tokens/s (tpot_s 0.0228918) on "AMD EPYC", whose measured copy bandwidth was 4.8 GB/s.
CPU_SMOKE = Path(__file__).resolve().parents[1] / "data" / "runs" / "cpu-smoke"
SMOKE_FP32_TOKENS_PER_S = 43.68365037776669  # the record's decode_tokens_per_s as written by the run
SMOKE_HOST_BANDWIDTH = 4.8e9
# Bytes one decode step reads, counted by hand from the record: its 70,915,328 bytes of weights less the fp32
# input embedding (32064 x 256) but the one row looked up, plus K and V of 2 layers x 256 fp32 values per token
# at the mean length the timed steps read (tokens 2..16 attend over 33..47 tokens: 40; at a 512-token prompt 520).
TINY_FP32_READ = 70_915_328 - 32064 * 256 * 4 + 256 * 4
TINY_FP32_KV_TOKEN = 2 * 2 * 256 * 4


def smoke_host(name: str = "AMD EPYC", bandwidth: float = SMOKE_HOST_BANDWIDTH) -> HardwareProfile:
    return HardwareProfile(name=name, kind="cpu", memory_bytes=24 * GiB, memory_bandwidth_bytes_per_s=bandwidth)


def test_efficiency_from_a_measured_cpu_run() -> None:
    records = RunFolder(CPU_SMOKE).load_records()
    host = smoke_host()
    efficiency = SMOKE_FP32_TOKENS_PER_S * (TINY_FP32_READ + TINY_FP32_KV_TOKEN * 40) / SMOKE_HOST_BANDWIDTH
    assert efficiency == pytest.approx(0.3481, abs=1e-4)
    same = predict_decode("phi-3-tiny", "fp32", 32, 1, 16, host, records, [host])
    assert same.label == "predicted" and same.efficiency == pytest.approx(efficiency, rel=1e-9)
    assert same.measured_tokens_per_s == pytest.approx(SMOKE_FP32_TOKENS_PER_S, rel=1e-9)
    longer = predict_decode("phi-3-tiny", "fp32", 512, 1, 16, host, records, [host])
    expected = efficiency * SMOKE_HOST_BANDWIDTH / (TINY_FP32_READ + TINY_FP32_KV_TOKEN * 520)
    assert longer.predicted_tokens_per_s == pytest.approx(expected, rel=1e-9)  # 41.5 tokens/s
    assert longer.measured_tokens_per_s is None and longer.calibrated_on == "AMD EPYC"
    # the fraction transfers to another CPU when it is the only evidence, and says so; never to a GPU
    other = predict_decode("phi-3-tiny", "fp32", 512, 1, 16, smoke_host("Other CPU", 2e10), records, [host])
    assert other.efficiency == pytest.approx(efficiency, rel=1e-9) and "AMD EPYC" in other.efficiency_basis
    assert predict_decode("phi-3-tiny", "fp32", 512, 1, 16, gpu(), records, [host]).label == "ceiling"
    # nf4 is calibrated by the nf4 record (7.87 tokens/s), not by fp32's
    nf4 = predict_decode("phi-3-tiny", "nf4", 32, 1, 16, host, records, [host])
    assert nf4.measured_tokens_per_s == pytest.approx(7.872034879588737, rel=1e-9)
    assert nf4.efficiency < efficiency / 5 and "phi-3-tiny nf4" in nf4.efficiency_basis


def test_decode_needs_a_decoder_and_a_device() -> None:
    with pytest.raises(BadInputError, match="encoder"):
        predict_decode("bert-base", "fp16", 128, 1, 0, gpu())
    with pytest.raises(BadInputError, match="--gpu"):
        predict_decode("phi-3-mini", "fp16", 128, 1, 8, None)


def test_claims_predictor() -> None:
    predict = claims_predictor()
    spec = CaseSpec("phi-3-mini", "nf4-dq", "generate", 1, 2048, 64)
    assert predict(spec) == predict_memory("phi-3-mini", "nf4-dq", 2048, 1, 64).total_bytes
    assert predict(spec.with_(context_tokens=5000)) is None


# --------------------------------------------------------------------------- against measurement (CPU)


# torch's CPU kernels are forced to AVX2 in the measuring process, and the prediction is for AVX2, so the
# activation test checks the same path on every x86-64 host (bitsandbytes picks its int8 kernels from it);
# test_int8_activations_on_the_avx512_path checks the other path where the host has it.
FORCED_CAPABILITY = "AVX2"


ACTIVATION_CASES = [
    ("phi-3-tiny", "fp32", 512, 2, 4), ("phi-3-tiny", "int8", 256, 1, 4), ("phi-3-tiny", "nf4", 256, 2, 4),
    ("bert-tiny", "fp16", 256, 4, 0),
]


@functools.cache
def _forced_peaks(capability: str) -> dict[tuple, int]:
    """Every activation case measured in one fresh process running torch's ``capability`` kernels."""
    peaks = live_tensor_peaks(ACTIVATION_CASES, capability.lower())
    return dict(zip(ACTIVATION_CASES, peaks, strict=True))


def _live_tensor_peak(model_name: str, precision: str, context: int, batch: int, new_tokens: int) -> int:
    """The peak of live tensor bytes over one generate/encode call, from torch's own allocation record, measured
    in a fresh process running torch's AVX2 kernels (tests/predict/live_tensors.py)."""
    return _forced_peaks(FORCED_CAPABILITY)[(model_name, precision, context, batch, new_tokens)]


@pytest.mark.slow
@pytest.mark.parametrize(("model", "precision", "context", "batch", "new"), ACTIVATION_CASES)
def test_activation_model_matches_torch_allocations(model, precision, context, batch, new) -> None:
    measured = _live_tensor_peak(model, precision, context, batch, new)
    p = predict_memory(model, precision, context, batch, new, cpu_profile(FORCED_CAPABILITY))
    predicted = p.kv_cache_bytes + p.activation_bytes
    assert predicted == pytest.approx(measured, rel=0.05)


@pytest.mark.slow
def test_predicted_host_peak_within_5_percent() -> None:
    """A tiny config and a layer-reduced full-width one, measured in one fresh process."""
    import torch

    from bench.measure.profiler import measure_host_cases

    cases = [("phi-3-tiny", "nf4", 128, 1, 4), ("bert-base-2l", "fp16", 64, 1, 0)]
    profile = cpu_profile(str(torch.backends.cpu.get_cpu_capability()))
    for (model, precision, context, batch, new), m in zip(cases, measure_host_cases(cases), strict=True):
        p = predict_memory(model, precision, context, batch, new, profile)
        assert m.weights_bytes == p.weights_bytes
        assert p.total_bytes == pytest.approx(m.measured_bytes, rel=0.05), model


@pytest.mark.slow
def test_int8_activations_on_the_avx512_path() -> None:
    """bitsandbytes' AVX-512 int8 kernel (no float32 copies of A and B): measured where the host has AVX-512."""
    import torch

    if "512" not in str(torch.backends.cpu.get_cpu_capability()):
        pytest.skip("this host's torch has no AVX-512 kernels; the AVX2 path is tested above")
    (measured,) = live_tensor_peaks([("phi-3-tiny", "int8", 256, 1, 4)], "avx512")
    p = predict_memory("phi-3-tiny", "int8", 256, 1, 4, cpu_profile("AVX512"))
    assert p.kv_cache_bytes + p.activation_bytes == pytest.approx(measured, rel=0.05)
