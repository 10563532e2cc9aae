"""The purchase advisor on hand-made cards, its table, plot and Markdown, and the predict/advise/profile commands."""

from __future__ import annotations

import json

import pytest
from synthetic_records import generate_record

from bench.cli import main
from bench.config.hardware import HardwareProfile, save_profile
from bench.errors import BadInputError
from bench.predict.advisor import (
    FITS,
    NO,
    TIGHT,
    Requirement,
    advise,
    cheapest,
    fits_frame,
    split_context,
)
from bench.predict.memory import predict_memory
from bench.report.advice import advisor_summary_markdown, plot_advice, render_table
from bench.units import GiB


# Phi-3-mini fp16 needs 7.12 GiB of weights alone; nf4 about 2.3 GiB.
def card(name: str, gib: int, gbs: float) -> HardwareProfile:
    return HardwareProfile(name=name, memory_bytes=gib * GiB, memory_bandwidth_bytes_per_s=gbs * 1e9,
                           compute_capability="8.6")


CARDS = [card("Small 6", 6, 300), card("Fast 8", 8, 900), card("Mid 12", 12, 360), card("Big 24", 24, 1000)]


def test_smallest_card_for_fp16_at_full_context() -> None:
    fits = advise(CARDS, ["phi-3-mini"], ["fp16"], [4096])
    by_gpu = {f.gpu: f for f in fits}
    assert by_gpu["Small 6"].verdict == NO and by_gpu["Fast 8"].verdict == NO  # weights + 1.5 GiB KV > 8 GiB
    assert by_gpu["Mid 12"].verdict == FITS and by_gpu["Big 24"].verdict == FITS
    assert by_gpu["Mid 12"].prompt_tokens == 4032 and by_gpu["Mid 12"].new_tokens == 64
    best = cheapest(fits, Requirement("phi-3-mini", 4096, ("fp16",), 20))
    assert best is not None and best.gpu == "Mid 12"  # about 40 tokens/s ceiling at 360 GB/s
    # 60 tokens/s is beyond Mid 12's bandwidth ceiling: the next card that fits and is fast enough
    best = cheapest(fits, Requirement("phi-3-mini", 4096, ("fp16",), 60))
    assert best is not None and best.gpu == "Big 24"
    assert cheapest(fits, Requirement("phi-3-mini", 4096, ("fp16",), 500)) is None


def test_quantization_moves_the_choice_to_a_smaller_card() -> None:
    fits = advise(CARDS, ["phi-3-mini"], ["fp16", "nf4"], [4096])
    best = cheapest(fits, Requirement("phi-3-mini", 4096, ("fp16", "nf4"), 20))
    assert (best.gpu, best.precision) == ("Small 6", "nf4")
    only_fp16 = cheapest(fits, Requirement("phi-3-mini", 4096, ("fp16",), 20))
    assert only_fp16.gpu == "Mid 12"


def test_price_ranks_when_every_card_has_one() -> None:
    priced = [
        HardwareProfile(name="Cheap big", memory_bytes=24 * GiB, memory_bandwidth_bytes_per_s=900e9, price_usd=300,
                        sources={"price_usd": "test"}),
        HardwareProfile(name="Dear small", memory_bytes=12 * GiB, memory_bandwidth_bytes_per_s=360e9, price_usd=900,
                        sources={"price_usd": "test"}),
    ]
    fits = advise(priced, ["phi-3-mini"], ["fp16"], [2048])
    assert cheapest(fits, Requirement("phi-3-mini", 2048, ("fp16",))).gpu == "Cheap big"
    fits = advise([*priced, CARDS[3]], ["phi-3-mini"], ["fp16"], [2048])  # one without a price: by memory
    assert cheapest(fits, Requirement("phi-3-mini", 2048, ("fp16",))).gpu == "Dear small"


def test_tight_when_within_the_headroom() -> None:
    need = predict_memory("phi-3-mini", "fp16", 1984, 1, 64,
                          HardwareProfile(name="x", memory_bytes=GiB, memory_bandwidth_bytes_per_s=1e11)).total_bytes
    # fit is judged on usable memory: a card whose driver reports 2% more than the peak
    card = HardwareProfile(name="Exact", memory_bytes=int(need * 1.05), memory_bandwidth_bytes_per_s=1e11,
                           usable_bytes=int(need * 1.02), sources={"usable_bytes": "test"})
    (fit,) = advise([card], ["phi-3-mini"], ["fp16"], [2048])
    assert fit.verdict == TIGHT and fit.fits and fit.margin_bytes > 0


def test_measured_speed_and_peak_are_shown_beside_the_prediction() -> None:
    # one nf4 record on Big 24: prompt 1984 + 64 new tokens, TPOT 20 ms (50 tokens/s), NVML peak 4 GiB
    rec = generate_record(precision="nf4", context=1984, new_tokens=64, tpot_s=0.02, noise=0.0,
                          device_name="Big 24", peak_bytes=4 * GiB)
    same, longer = advise([CARDS[3]], ["phi-3-mini"], ["nf4"], [2048, 4096], records=[rec])
    assert same.measured_tokens_per_s == pytest.approx(50.0) and same.measured_peak_bytes == 4 * GiB
    # at 4096 (prompt 4032) nothing was measured: the 50 tokens/s scale with the bytes a step reads, counted by
    # hand: nf4 weights (2,432,842,112 B) less the fp16 input embedding (32064 x 3072) but its one row, plus
    # 393,216 B of fp16 KV per token at the mean length the timed steps read, capped by the 2047-token window:
    # tokens 2..64 read 1985..2047 (mean 2016) after a 1984-token prompt, 2047 each after a 4032-token one
    weights = 2_432_842_112 - 32064 * 3072 * 2 + 3072 * 2
    expected = 50.0 * (weights + 393_216 * 2016) / (weights + 393_216 * 2047)
    assert longer.speed_label == "predicted" and longer.tokens_per_s == pytest.approx(expected, rel=1e-9)
    assert longer.measured_tokens_per_s is None and longer.measured_peak_bytes is None  # not the measured case
    (elsewhere,) = advise([CARDS[2]], ["phi-3-mini"], ["nf4"], [2048], records=[rec])
    assert elsewhere.measured_peak_bytes is None  # a peak on Big 24 is not Mid 12's


def test_encoders_fit_without_a_speed() -> None:
    fits = advise(CARDS[:1], ["bert-base"], ["fp16"], [512])
    assert fits[0].fits and fits[0].tokens_per_s is None and fits[0].new_tokens == 0


def test_context_limits() -> None:
    with pytest.raises(BadInputError, match="maximum of 4096"):
        split_context("phi-3-mini", 8192, 64)
    with pytest.raises(BadInputError, match="no room for a prompt"):
        split_context("phi-3-mini", 64, 64)
    assert split_context("bert-base", 512, 64) == (512, 0)


def test_table_plot_and_markdown(tmp_path) -> None:
    fits = advise(CARDS, ["phi-3-mini"], ["fp16", "nf4"], [1024, 4096])
    table = render_table(fits)
    assert table.row_count == len(CARDS) * 2 * 2  # a row per card x context x precision (80-column layout)
    frame = fits_frame(fits)
    assert len(frame) == 16 and {"gpu", "verdict", "tokens_per_s", "predicted_peak_bytes"} <= set(frame.columns)
    req = Requirement("phi-3-mini", 4096, ("fp16", "nf4"), 20)
    png = plot_advice(fits, tmp_path / "advice.png", req)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = advisor_summary_markdown(fits, req)
    assert "**Small 6** (6 GiB) at nf4" in md and "predicted" in md
    assert md.count("| Big 24 |") == 1 and "4096-token context" in md and "1024-token" not in md
    assert "| Small 6 | 6 GiB | no (" in md  # fp16 does not fit a 6 GiB card
    both = advisor_summary_markdown(fits)  # no requirement: each model's largest context
    assert "4096-token context" in both and "Which card" in both
    none = advisor_summary_markdown(fits, Requirement("phi-3-mini", 4096, ("fp16",), 5000))
    assert "No profiled card meets" in none


# --------------------------------------------------------------------------- commands


def test_predict_command_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--model", "phi-3-mini", "--precision", "nf4-dq", "--context", "2048", "--gpu", "T4",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    mem = data["memory"]
    assert data["label"] == "predicted" and mem["device"] == "Tesla T4"
    parts = ("context_bytes", "weights_bytes", "kv_cache_bytes", "activation_bytes", "slack_bytes")
    assert all(isinstance(mem[k], int) for k in parts)
    # the prefill holds the whole 2048-token prompt's fp16 K/V; nf4-dq weights counted by hand in test_predictor
    assert mem["kv_cache_bytes"] == 393_216 * 2048 and mem["weights_bytes"] == 2_263_989_120
    assert data["decode"]["label"] == "ceiling" and data["decode"]["ceiling_tokens_per_s"] > 0


def test_predict_command_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--model", "phi-3-mini", "--precision", "fp16", "--context", "4032", "--gpu",
                 "RTX 3060"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Predicted peak memory" in out and "7,642,159,488" in out  # fp16 weights counted by hand
    assert "fits in GeForce RTX 3060's 11.72 GiB usable (box 12.00 GiB" in out  # 12,587,106,304 B cited
    # 360 GB/s over the bytes a step reads: the weights less the embedding table but one row (7,445,164,416 B)
    # plus the 2047-token window of fp16 K/V (393,216 B a token): 8,250,077,568 B = 7.68 GiB, 43.6 tokens/s
    assert "Decode (eager): 43.6 tokens/s (bandwidth ceiling)" in out and "7.68 GiB read per step" in out


def test_predict_command_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--model", "phi-3-mini", "--precision", "fp16", "--context", "512", "--gpu",
                 "RTX 3061"]) == 2
    err = capsys.readouterr().err
    assert "RTX 3061" in err and "GeForce RTX 3060" in err
    assert main(["predict", "--model", "phi-3-mini", "--precision", "fp16", "--context", "5000"]) == 2
    assert "maximum of 4096" in capsys.readouterr().err
    assert main(["predict", "--model", "phi-3-mini", "--precision", "fp16", "--context", "512", "--batch", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
    assert main(["predict", "--model", "phi-3-mini", "--precision", "fp16", "--context", "2048", "--batch", "64",
                 "--gpu", "RTX 3090"]) == 2
    assert "largest batch that fits is" in capsys.readouterr().err


def test_advise_command(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "cards"
    for c in CARDS:
        save_profile(c, folder / f"{c.slug}.toml")
    rc = main(["advise", "--profiles", str(folder), "--gpu", "Small 6", "--gpu", "Mid 12", "--gpu", "Big 24",
               "--context", "4096", "--precision", "fp16", "--min-tokens-per-s", "20",
               "--plot", str(tmp_path / "a.png"), "--markdown", str(tmp_path / "a.md"),
               "--json", str(tmp_path / "a.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Smallest card for phi-3-mini, 4096 context, fp16, at least 20 tokens/s: Mid 12" in " ".join(out.split())
    assert (tmp_path / "a.png").is_file() and "Mid 12" in (tmp_path / "a.md").read_text()
    assert len(json.loads((tmp_path / "a.json").read_text())) == 3
    assert main(["advise", "--gpu", "Big 25", "--plot", str(tmp_path / "b.png")]) == 2
