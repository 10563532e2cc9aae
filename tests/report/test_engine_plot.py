"""The report's engine plot: decode tokens/s per engine against context, with the roofline ceiling drawn."""

from __future__ import annotations

import pytest

from bench.config.spec import CaseSpec
from bench.report.plots import decode_throughput
from bench.report.roofline_plot import decode_roofline
from bench.results.frame import records_to_frame
from bench.results.record import Record, Roofline, Samples


def _record(engine: str, context: int, tpot_s: float, bandwidth: float | None = 1e10) -> Record:
    spec = CaseSpec("phi-3-tiny", "fp32", "generate", 1, context, 5, engine=engine)
    samples = Samples(ttft_s=(0.01,), e2e_s=(0.01 + 4 * tpot_s,), itl_s=((tpot_s,) * 4,))
    roofline = Roofline(10_000_000, 4096, None, bandwidth, "measured host bandwidth" if bandwidth else None, "t")
    return Record(spec=spec, status="ok", samples=samples, device="cpu", device_name="Test CPU", roofline=roofline)


def _frame(bandwidth: float | None = 1e10):
    return records_to_frame(
        [_record(e, c, t, bandwidth) for e, t in (("eager", 0.02), ("compiled", 0.01)) for c in (16, 64)]
    )


def test_both_engines_and_the_ceiling_are_drawn():
    frame = _frame()
    assert set(frame["engine"]) == {"eager", "compiled"} and frame["compile_s"].isna().all()
    fig = decode_roofline(frame)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"fp32 · compiled", "fp32 · eager", "fp32 · roofline ceiling"}
    assert list(lines["fp32 · compiled"].get_ydata()) == pytest.approx([100.0, 100.0])  # 1 / 10 ms
    assert list(lines["fp32 · eager"].get_ydata()) == pytest.approx([50.0, 50.0])
    # ceiling: 1e10 B/s over 10 MB of weights + 4096 B x (16 + 2.5 | 64 + 2.5) tokens of KV
    expected = [1e10 / (10_000_000 + 4096 * (c + 2.5)) for c in (16, 64)]
    assert list(lines["fp32 · roofline ceiling"].get_ydata()) == pytest.approx(expected)
    assert lines["fp32 · eager"].get_linestyle() != lines["fp32 · compiled"].get_linestyle()
    assert "measured host bandwidth" in " ".join(t.get_text() for t in ax.texts)


def test_no_bandwidth_no_roofline_plot():
    assert decode_roofline(_frame(bandwidth=None)) is None


def test_the_decode_plot_keeps_the_engines_apart():
    labels = sorted(line.get_label() for line in decode_throughput(_frame()).axes[0].get_lines())
    assert labels == ["fp32 · compiled", "fp32 · eager"]
