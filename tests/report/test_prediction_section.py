"""The report's "Predicted against measured" section, from stored figures only."""

from __future__ import annotations

from bench.config.spec import CaseSpec
from bench.report.document import Para, Table
from bench.report.prediction_section import prediction_section
from bench.report.run_data import DeviceGroup
from bench.results.metrics import PEAK_READING_ALLOCATOR
from bench.results.record import Memory, Prediction, Record

MiB = 2**20


def _gpu_record(precision: str, peak: int, predicted_peak: int, assumptions: tuple[str, ...] = ()) -> Record:
    return Record(
        spec=CaseSpec("phi-3-mini", precision, "generate", 1, 512, 16, device="cuda"),
        status="ok",
        device="cuda",
        memory=Memory(weights_bytes=2_000 * MiB, peak_allocated_bytes=peak),
        quantization={"bnb_4bit_kernel_path": "cuda-gemm-4bit"},
        prediction=Prediction(
            predicted_peak_bytes=predicted_peak,
            predicted_weights_bytes=2_000 * MiB,
            peak_reading=PEAK_READING_ALLOCATOR,
            bnb_4bit_path="cuda-gemm-4bit",
            assumptions=assumptions,
        ),
    )


def test_each_record_shows_its_gaps_and_drift() -> None:
    # 2,600 MiB predicted against 2,500 MiB measured: +4.0 %; 2,700 MiB against 2,500: +8.0 %, drift
    ok = _gpu_record("nf4", 2_500 * MiB, 2_600 * MiB)
    off = _gpu_record("nf4-dq", 2_500 * MiB, 2_700 * MiB, ("quant_state blocksizes: the model has [128]",))
    unpredicted = Record(spec=CaseSpec("phi-3-mini", "fp16", "generate", 1, 512, 16), status="ok")
    group = DeviceGroup("host", "cuda", "GPU", [ok, off, unpredicted], label="GPU (cuda)")
    blocks = prediction_section([group])
    (table,) = [b for b in blocks if isinstance(b, Table)]
    assert len(table.rows) == 2  # the record without a prediction has no row
    first, second = table.rows
    assert first[5:] == ("2,000", "2,000", "+0.0 %", "2,500", "2,600", "+4.0 %", "✅")
    assert second[5:] == ("2,000", "2,000", "+0.0 %", "2,500", "2,700", "+8.0 %", "⚠️ drift")
    assert table.row_kinds == ("", "bad")
    warn = [b for b in blocks if isinstance(b, Para) and b.kind == "warn"]
    assert warn and "blocksizes: the model has [128]" in warn[0].text


def test_no_section_without_predictions() -> None:
    record = Record(spec=CaseSpec("phi-3-mini", "fp16", "generate", 1, 512, 16), status="ok")
    assert prediction_section([DeviceGroup("h", "cpu", "CPU", [record])]) == []
