"""Each record's own prediction: weights against the loaded model, assumptions against its quantization state,
drift flagged past 5%."""

from __future__ import annotations

import pytest

from bench.config.spec import CaseSpec, TimingPolicy
from bench.predict.record_check import DRIFT_FLAG, attach_prediction
from bench.results import metrics
from bench.results.record import Memory, Record

# phi-3-tiny nf4 weights measured on this project's CPU hosts (bench.measure.quantization.weights_bytes after a
# forward): 33,574,144 B on the dequantizing path, 33,533,184 B once the AVX512-BF16 path repacked absmax to bfloat16
TINY_NF4_DEQUANTIZE_BYTES = 33_574_144
TINY_NF4_PACKED_BYTES = 33_533_184
TINY_QUANTIZED_LAYERS = 8  # 2 layers x qkv, o, gate_up, down (lm_head stays 16-bit)
DEQUANTIZE_STATE = {
    "blocksizes": [64],
    "absmax_dtypes": ["float32"],
    "nested_blocksizes": [],
    "repacked_for_cpu": [False],
}


def _record(weights: int, path: str, state: dict | None = None, layers: int = TINY_QUANTIZED_LAYERS) -> Record:
    quantization = {"bnb_4bit_kernel_path": path, "quant_state": state or {}, "quantized_linear_layers": layers}
    return Record(
        spec=CaseSpec("phi-3-tiny", "nf4", "generate", 1, 32, 4),
        status="ok",
        memory=Memory(weights_bytes=weights, host_peak_rss_bytes=400_000_000, host_baseline_rss_bytes=300_000_000),
        quantization=quantization,
    )


@pytest.mark.parametrize(
    ("path", "measured"),
    [("cpu-dequantize", TINY_NF4_DEQUANTIZE_BYTES), ("cpu-avx512bf16-packed", TINY_NF4_PACKED_BYTES)],
)
def test_the_prediction_follows_the_path_the_record_took(path, measured) -> None:
    record = attach_prediction(_record(measured, path))
    assert record.prediction.predicted_weights_bytes == measured and record.prediction.bnb_4bit_path == path
    assert metrics.prediction_gaps(record) == {"predicted_weights_gap_fraction": 0.0}  # a CPU record: weights only
    assert DRIFT_FLAG not in record.flags and record.prediction.assumptions == ()


def test_weights_off_by_more_than_5_percent_flag_the_record() -> None:
    record = attach_prediction(_record(int(TINY_NF4_DEQUANTIZE_BYTES * 1.06), "cpu-dequantize"))
    assert DRIFT_FLAG in record.flags
    assert DRIFT_FLAG not in attach_prediction(_record(int(TINY_NF4_DEQUANTIZE_BYTES * 1.04), "cpu-dequantize")).flags


def test_what_the_loaded_model_contradicts_is_listed() -> None:
    state = dict(DEQUANTIZE_STATE, blocksizes=[128], absmax_dtypes=["float16"])
    record = attach_prediction(_record(TINY_NF4_DEQUANTIZE_BYTES, "cpu-dequantize", state, layers=9))
    text = " | ".join(record.prediction.assumptions)
    assert "blocksizes: the model has [128], the predictor assumes [64]" in text
    assert "absmax_dtypes: the model has ['float16'], the predictor assumes ['float32']" in text
    assert "replaced 9 linear layers, the predictor assumes 8" in text
    assert (
        attach_prediction(_record(TINY_NF4_DEQUANTIZE_BYTES, "cpu-dequantize", DEQUANTIZE_STATE)).prediction.assumptions
        == ()
    )


@pytest.mark.slow
def test_a_measured_nf4_record_carries_its_path_and_an_exact_weights_prediction() -> None:
    """A case run by the harness's own worker code: the path it reports, its quantization state as the predictor
    assumes it, and the weights predicted to the byte."""
    from bench.measure.bnb_runtime import has_avx512_bf16
    from bench.measure.case_runner import CaseRunner

    policy = TimingPolicy(warmup_runs=0, min_repetitions=1, max_repetitions=1, timeout_s=300)
    for precision in ("nf4", "nf4-dq"):
        record = CaseRunner().run(CaseSpec("phi-3-tiny", precision, "generate", 1, 16, 2), policy)
        assert record.ok, record.error
        path = record.quantization["bnb_4bit_kernel_path"]
        assert path == ("cpu-avx512bf16-packed" if has_avx512_bf16() else "cpu-dequantize")
        checked = attach_prediction(record)
        assert checked.prediction.predicted_weights_bytes == record.memory.weights_bytes, precision
        assert checked.prediction.assumptions == () and DRIFT_FLAG not in checked.flags


def test_a_gpu_record_predicts_with_the_sm_count_it_recorded() -> None:
    """phi-3-mini nf4, a 64-token prefill on an sm86 GPU with 28 SMs (the record's own reading of the device):
    bitsandbytes 0.50.2 fuses gate_up there (256 blocks of 64 outputs >= 28 SMs: up to 128 rows), so the 96 MiB
    fp16 copy of that weight is not predicted; without the SM count it is, and the guess is listed."""
    spec = CaseSpec("phi-3-mini", "nf4", "generate", 1, 64, 2, device="cuda")
    base = Record(spec=spec, status="ok", device="cuda", device_name="Some GPU", memory=Memory(weights_bytes=1))
    seen = {"bnb_4bit_kernel_path": "cuda-gemm-4bit", "cuda_compute_capability": "8.6", "cuda_multiprocessor_count": 28}
    known = attach_prediction(base.replace(quantization=seen)).prediction
    unknown = attach_prediction(base.replace(quantization={"bnb_4bit_kernel_path": "cuda-gemm-4bit"})).prediction
    assert unknown.predicted_peak_bytes - known.predicted_peak_bytes >= 16384 * 3072 * 2 - 64 * 16384 * 2 * 4
    assert known.assumptions == () and any("SM count unknown" in a for a in unknown.assumptions)
    assert known.peak_reading == metrics.PEAK_READING_ALLOCATOR
