"""The bandwidth roofline of decoding, from record fields only: bytes a step reads, the floor time per token,
the ceiling tokens/s and ``decode_roofline_fraction`` = floor / measured TPOT. Hand-computed figures."""

from __future__ import annotations

import pytest

from bench.config.spec import CaseSpec
from bench.results.metrics import decode_floor_s, decode_kv_tokens_read, decode_step_bytes, roofline_metrics
from bench.results.record import Record, Roofline, Samples


def test_kv_tokens_read_over_the_steps_tpot_covers():
    # prompt 10, 4 new tokens: the steps producing tokens 2, 3, 4 attend over 11, 12 and 13 tokens
    assert decode_kv_tokens_read(10, 4) == pytest.approx(12.0)
    # a 12-token window caps the last step: 11, 12, 12
    assert decode_kv_tokens_read(10, 4, window_tokens=12) == pytest.approx(35 / 3)
    assert decode_kv_tokens_read(10, 1) == 0.0  # no decode step is timed


def test_step_bytes_floor_and_fraction():
    # weights 1000 bytes read once; 2 sequences x 10 KV bytes per token x 12 tokens = 240
    assert decode_step_bytes(1000, 10, 2, 10, 4) == pytest.approx(1240.0)
    assert decode_floor_s(1240.0, 124_000.0) == pytest.approx(0.01)
    m = roofline_metrics(0.04, 1000, 10, 124_000.0, 2, 10, 4)
    assert m["decode_step_bytes"] == pytest.approx(1240.0)
    assert m["decode_floor_s"] == pytest.approx(0.01)
    assert m["decode_ceiling_tokens_per_s"] == pytest.approx(200.0)  # 2 sequences / 0.01 s
    assert m["decode_roofline_fraction"] == pytest.approx(0.25)  # 10 ms floor over a 40 ms TPOT
    with pytest.raises(ValueError, match="must be positive"):
        decode_floor_s(1.0, 0.0)


def test_unknown_inputs_leave_the_numbers_out():
    assert roofline_metrics(0.04, 1000, 10, None, 1, 10, 4) == {"decode_step_bytes": pytest.approx(1120.0)}
    assert roofline_metrics(0.04, None, 10, 1e9, 1, 10, 4) == {}
    assert roofline_metrics(0.04, 1000, 10, 1e9, 1, 10, 1) == {}  # a single new token: no decode step


def _record(roofline: Roofline, **extra) -> Record:
    spec = CaseSpec("phi-3-tiny", "fp32", "generate", 1, 10, 5, engine="compiled")
    # TTFT 0.1 s, then 4 decode steps of 0.05 s each: TPOT 0.05 s
    samples = Samples(ttft_s=(0.1, 0.1), e2e_s=(0.3, 0.3), itl_s=((0.05,) * 4, (0.05,) * 4))
    return Record(spec=spec, status="ok", samples=samples, roofline=roofline, **extra)


def test_a_decode_record_carries_its_fraction():
    rf = Roofline(1_000_000, 1000, None, 1e9, "measured host bandwidth", "a copy at worker start")
    rec = _record(rf, compile_s=12.5, engine_info={"engine": "compiled", "compiled_calls": 8})
    # steps 2..5 read 11..14 tokens: mean 12.5 -> 1,012,500 bytes; floor 1.0125 ms over a 50 ms TPOT
    assert rec.metrics["decode_step_bytes"] == pytest.approx(1_012_500)
    assert rec.metrics["decode_roofline_fraction"] == pytest.approx(0.0010125 / 0.05)
    back = Record.from_dict(rec.to_dict())
    assert back.roofline == rf and back.compile_s == 12.5 and back.engine_info["compiled_calls"] == 8
    assert back.metrics == rec.metrics


def test_an_older_record_has_no_roofline_and_no_fraction():
    data = _record(Roofline()).to_dict()
    for key in ("roofline", "compile_s", "engine_info"):
        data.pop(key)
    data["spec"].pop("engine")
    old = Record.from_dict(data)
    assert old.roofline == Roofline() and old.compile_s is None and old.spec.engine == "eager"
    assert "decode_roofline_fraction" not in old.metrics and old.metrics["tpot_s"] == pytest.approx(0.05)
