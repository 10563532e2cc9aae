"""The predictor's figures in a record: stored beside the measurement, gaps derived, old records unflagged."""

from __future__ import annotations

import json

import pytest

from bench.config.spec import CaseSpec
from bench.results import metrics
from bench.results.record import Memory, Prediction, Record


def _record(memory: Memory, prediction: Prediction, device: str = "cpu") -> Record:
    spec = CaseSpec("phi-3-tiny", "nf4", "generate", 1, 32, 4, device=device)
    return Record(spec=spec, status="ok", device=device, memory=memory, prediction=prediction)


def test_gaps_against_the_reading_the_prediction_names() -> None:
    # a CUDA record: the allocator's peak 1,000,000,000 B against a predicted 1,040,000,000 B is a 4% gap
    gpu = _record(
        Memory(weights_bytes=33_533_184, peak_allocated_bytes=1_000_000_000, host_peak_rss_bytes=5),
        Prediction(
            predicted_peak_bytes=1_040_000_000,
            predicted_weights_bytes=33_574_144,
            peak_reading=metrics.PEAK_READING_ALLOCATOR,
        ),
        "cuda",
    )
    gaps = metrics.prediction_gaps(gpu)
    assert gaps["predicted_peak_gap_fraction"] == pytest.approx(0.04)
    assert gaps["predicted_weights_gap_fraction"] == pytest.approx(40_960 / 33_533_184)
    assert not metrics.predictor_drifted(gpu)
    under = gpu.replace(
        prediction=Prediction(predicted_peak_bytes=940_000_000, peak_reading=metrics.PEAK_READING_ALLOCATOR)
    )
    assert metrics.prediction_gaps(under) == {"predicted_peak_gap_fraction": pytest.approx(-0.06)}
    assert metrics.predictor_drifted(under)
    # a CPU record's host figures are a cold worker's, not the warm-process reading predicted: weights only
    cpu = _record(
        Memory(weights_bytes=100, host_peak_rss_bytes=300_000_000, host_baseline_rss_bytes=200_000_000),
        Prediction(
            predicted_peak_bytes=38_000_000, predicted_weights_bytes=110, peak_reading=metrics.PEAK_READING_HOST_RSS
        ),
    )
    assert metrics.prediction_gaps(cpu) == {"predicted_weights_gap_fraction": pytest.approx(0.1)}
    assert metrics.predictor_drifted(cpu)


def test_the_prediction_survives_a_round_trip_and_a_schema_3_record_has_none() -> None:
    record = _record(
        Memory(weights_bytes=10),
        Prediction(
            predicted_peak_bytes=5,
            predicted_weights_bytes=11,
            peak_reading=metrics.PEAK_READING_HOST_RSS,
            bnb_4bit_path="cpu-dequantize",
            assumptions=("absmax float16, float32 assumed",),
        ),
    )
    again = Record.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again.prediction == record.prediction and again.schema == 4
    old = record.to_dict()
    old.pop("prediction")
    old["schema"] = 3
    loaded = Record.from_dict(old)
    assert loaded.prediction == Prediction() and metrics.prediction_gaps(loaded) == {}
