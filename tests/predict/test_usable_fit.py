"""Fit on a card is judged against its usable memory (the driver's total), with the box size beside it:
``bench predict --gpu`` JSON and text, the advisor's margins and the ``bench advise`` notes."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.config.hardware import HardwareProfile
from bench.predict.advisor import FITS, NO, TIGHT, advise
from bench.predict.memory import largest_batch, predict_memory
from bench.units import GiB


def card(usable: int | None, gib: int = 8) -> HardwareProfile:
    return HardwareProfile(
        name="Card", memory_bytes=gib * GiB, memory_bandwidth_bytes_per_s=3e11, compute_capability="8.6",
        usable_bytes=usable, sources={"usable_bytes": "a public log"} if usable else {},
    )


def test_a_peak_that_fits_the_box_but_not_the_usable_memory_does_not_fit() -> None:
    peak = predict_memory("phi-3-mini", "nf4", 4032, 1, 64, card(8 * GiB)).total_bytes
    assert 4 * GiB < peak < 6 * GiB  # far inside the 8 GiB box
    exact = predict_memory("phi-3-mini", "nf4", 4032, 1, 64, card(peak))
    short = predict_memory("phi-3-mini", "nf4", 4032, 1, 64, card(peak - 1))
    assert exact.device_memory_bytes == short.device_memory_bytes == 8 * GiB  # the box, kept beside
    assert short.device_usable_bytes == peak - 1 and short.usable_source == "cited: a public log"
    # the boundary is the usable memory, to the byte: a peak equal to it fits with nothing left, one byte over not
    assert (exact.fits, exact.margin_bytes) == (True, 0)
    assert (short.fits, short.margin_bytes) == (False, -1)


def test_generic_gpu_and_cpu_predictions_have_no_card() -> None:
    generic = predict_memory("phi-3-tiny", "fp16", 64, 1, 8)
    assert generic.device_usable_bytes is None and generic.fits is None and generic.margin_bytes is None


def test_largest_batch_uses_usable_memory() -> None:
    roomy, tighter = card(8 * GiB), card(6 * GiB)
    assert largest_batch("phi-3-mini", "nf4", 2048, 64, tighter) < largest_batch("phi-3-mini", "nf4", 2048, 64, roomy)


def test_advisor_margins_and_verdicts_are_on_usable_memory() -> None:
    peak = predict_memory("phi-3-mini", "nf4", 4032, 1, 64, card(8 * GiB)).total_bytes

    def short(name: str, usable: int) -> HardwareProfile:
        return HardwareProfile(name=name, memory_bytes=8 * GiB, memory_bandwidth_bytes_per_s=3e11,
                               usable_bytes=usable, sources={"usable_bytes": "a log"})

    cards = [HardwareProfile(name="Roomy", memory_bytes=8 * GiB, memory_bandwidth_bytes_per_s=3e11),
             short("Exact", peak), short("Short", peak - 1)]
    fits = {f.gpu: f for f in advise(cards, ["phi-3-mini"], ["nf4"], [4096])}
    # the same 8 GiB box each time; only the usable memory decides: at the peak "tight" (no headroom), a byte
    # below it "no"
    assert fits["Roomy"].verdict == FITS and fits["Roomy"].usable_source.startswith("assumed")
    assert (fits["Exact"].verdict, fits["Exact"].margin_bytes) == (TIGHT, 0)
    assert (fits["Short"].verdict, fits["Short"].margin_bytes) == (NO, -1)
    assert fits["Short"].memory_bytes == 8 * GiB and fits["Short"].usable_source == "cited: a log"


def test_predict_gpu_json_has_usable_and_box_and_margin(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["predict", "--model", "phi-3-mini", "--precision", "int8", "--context", "4032", "--new-tokens", "64"]
    assert main([*argv, "--gpu", "Tesla T4", "--json"]) == 0
    memory = json.loads(capsys.readouterr().out)["memory"]
    assert memory["device_memory_bytes"] == 16 * GiB and memory["device_usable_bytes"] == 15_843_721_216
    assert memory["fits"] is True and isinstance(memory["margin_bytes"], int)
    assert memory["usable_source"].startswith("cited: deviceQuery")


def test_predict_text_names_usable_memory_its_source_and_the_display(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["predict", "--model", "phi-3-mini", "--precision", "nf4", "--context", "1024", "--gpu", "RTX 4060"]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "7.80 GiB usable (box 8.00 GiB" in out
    assert "usable memory: assumed: box size minus 2.5%" in out
    assert "a desktop display takes more" in out


def test_advise_says_which_cards_are_assumed(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    argv = ["advise", "--context", "2048", "--precision", "nf4", "--gpu", "Tesla T4", "--gpu", "RTX 4060"]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "fit and margins: usable memory" in out
    assert "usable memory assumed (box size minus 2.5%, no public figure found) for: GeForce RTX 4060" in out
    assert "Tesla T4," not in out.split("assumed")[1][:80]  # the T4's figure is cited, not assumed
