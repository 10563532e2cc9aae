"""Predictions calibrated per engine: a record's own roofline fraction of the same model, precision and engine
scales the ceiling ("calibrated on <device>"); without one the answer is the ceiling, labelled as such."""

from __future__ import annotations

import pytest
from synthetic_records import generate_record

from bench.config.hardware import HardwareProfile
from bench.predict.advisor import advise
from bench.predict.speed import decode_bytes_per_step, predict_decode
from bench.results.record import Roofline
from bench.units import GiB


def card(name: str, gbs: float, kind: str = "cuda", aliases: tuple[str, ...] = ()) -> HardwareProfile:
    return HardwareProfile(name=name, kind=kind, memory_bytes=80 * GiB, memory_bandwidth_bytes_per_s=gbs * 1e9,
                           compute_capability="9.0", aliases=aliases)


# Counted by hand for Phi-3-mini fp16 (reference/models.md): 7,642,159,488 bytes of weights less the input
# embedding (32064 x 3072 fp16) but the one row a step looks up; 2 x 32 layers x 3072 fp16 K/V per token.
WEIGHTS_READ = 7_642_159_488 - 32064 * 3072 * 2 + 3072 * 2
KV_TOKEN = 2 * 32 * 3072 * 2


def with_roofline(record, engine: str, bandwidth: float, source: str = "datasheet"):
    """The record measured with ``engine`` against ``bandwidth``; its fraction follows from its own fields."""
    spec = record.spec.with_(engine=engine)
    roofline = Roofline(WEIGHTS_READ, KV_TOKEN, None, bandwidth, source, "test")
    return record.replace(spec=spec, roofline=roofline)


H200 = card("H200", 4800, aliases=("NVIDIA H200",))


def test_the_measured_fraction_of_the_same_engine_calibrates_the_ceiling():
    rec = with_roofline(generate_record(context=512, new_tokens=64, tpot_s=0.0025, noise=0.0), "compiled", 4.8e12)
    # the floor of a step: tokens 2..64 after a 512-token prompt read 513..575 tokens of KV (mean 544)
    fraction = (WEIGHTS_READ + KV_TOKEN * 544) / 4.8e12 / 0.0025
    assert rec.metrics["decode_roofline_fraction"] == pytest.approx(fraction, rel=1e-6)  # 0.638
    compiled = predict_decode("phi-3-mini", "fp16", 1024, 1, 64, H200, [rec], [H200], engine="compiled")
    assert compiled.efficiency == pytest.approx(fraction, rel=1e-6)
    # at a 1024-token prompt a step reads 1025..1087 tokens (mean 1056)
    expected = fraction * 4.8e12 / (WEIGHTS_READ + KV_TOKEN * 1056)
    assert compiled.predicted_tokens_per_s == pytest.approx(expected, rel=1e-6)
    assert compiled.basis_text == "calibrated on H200" and compiled.engine == "compiled"
    assert compiled.label == "predicted" and "(compiled)" in compiled.efficiency_basis
    # the eager engine has no record: its answer is the ceiling, labelled a ceiling
    eager = predict_decode("phi-3-mini", "fp16", 1024, 1, 64, H200, [rec], [H200], engine="eager")
    assert eager.label == "ceiling" and eager.basis_text == "bandwidth ceiling" and eager.efficiency is None
    assert eager.predicted_tokens_per_s == pytest.approx(4.8e12 / (WEIGHTS_READ + KV_TOKEN * 1056), rel=1e-9)


def test_a_fraction_transfers_to_other_gpus_but_not_from_a_cpu():
    gpu_rec = with_roofline(generate_record(tpot_s=0.0025, noise=0.0), "compiled", 4.8e12)
    l4 = card("L4", 300)
    other = predict_decode("phi-3-mini", "fp16", 512, 1, 64, l4, [gpu_rec], [H200, l4], engine="compiled")
    assert other.calibrated_on == "H200" and other.label == "predicted"
    cpu_rec = with_roofline(generate_record(tpot_s=0.5, noise=0.0, device_name="AMD EPYC"), "eager", 1e10,
                            "measured host bandwidth").replace(device="cpu")
    assert "decode_roofline_fraction" in cpu_rec.metrics
    not_cpu = predict_decode("phi-3-mini", "fp16", 512, 1, 64, l4, [cpu_rec], [H200, l4])
    assert not_cpu.label == "ceiling" and not_cpu.calibrated_on is None


def test_the_ceiling_reads_a_window_of_kv_at_long_contexts():
    # a 4032-token prompt: every timed step reads the 2047-token window of Phi-3-mini, not 4032 + k - 1 tokens
    assert decode_bytes_per_step("phi-3-mini", "fp16", 4032, 1, 64) == WEIGHTS_READ + KV_TOKEN * 2047


def test_the_advisor_says_where_its_speed_comes_from():
    rec = with_roofline(generate_record(context=960, new_tokens=64, tpot_s=0.0025, noise=0.0), "compiled", 4.8e12)
    fits = advise([H200], ["phi-3-mini"], ["fp16"], [1024], records=[rec], engine="compiled")
    assert [(f.engine, f.speed_basis) for f in fits] == [("compiled", "calibrated on H200")]
    ceiling = advise([H200], ["phi-3-mini"], ["fp16"], [1024], records=[rec])
    assert [(f.engine, f.speed_basis, f.speed_label) for f in ceiling] == [("eager", "bandwidth ceiling", "ceiling")]


def test_bench_predict_names_the_engine_and_its_basis(capsys):
    import json

    from bench.cli import main

    argv = ["predict", "--model", "phi-3-mini", "--precision", "fp16", "--context", "512", "--gpu", "H200"]
    assert main([*argv, "--engine", "compiled", "--json", "-"]) == 0
    decode = json.loads(capsys.readouterr().out)["decode"]
    assert (decode["engine"], decode["label"], decode["calibrated_on"]) == ("compiled", "ceiling", None)
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "Decode (eager):" in text and "(bandwidth ceiling)" in text
