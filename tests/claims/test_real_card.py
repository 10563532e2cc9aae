"""A claim keeps its stated budget; its second line judges the same evidence "on a real 8 GB card": against the
smallest usable memory among the profiles of that box size. Hand-made records and profiles."""

from __future__ import annotations

from report_records import GiB, MiB, cpu_generate, gpu_generate

from bench.claims.claim_verdicts import FAILS, HOLDS, HOLDS_UP_TO, PREDICTED, judge_claim
from bench.claims.definitions import Claim
from bench.claims.real_card import judge_on_real_card, real_card
from bench.config.hardware import HardwareProfile

CLAIM = Claim("fp16", "fp16 under 8 GiB", 8 * GiB, "8 GiB", model="phi-3-mini", precisions=("fp16",),
              scenario="generate")


def profile(name: str, box_gib: int, usable_mib: int | None) -> HardwareProfile:
    sources = {"usable_bytes": f"{name} log"} if usable_mib else {}
    usable = usable_mib * MiB if usable_mib else None
    return HardwareProfile(name=name, memory_bytes=box_gib * GiB, memory_bandwidth_bytes_per_s=3e11,
                           usable_bytes=usable, sources=sources)


PROFILES = [profile("Eight A", 8, 8000), profile("Eight B", 8, 7900), profile("Twelve", 12, 12000),
            HardwareProfile(name="Host", kind="cpu", memory_bytes=8 * GiB, memory_bandwidth_bytes_per_s=1e10)]


def test_the_real_card_is_the_smallest_usable_memory_of_that_box_size() -> None:
    found = real_card(8 * GiB, PROFILES)
    assert found is not None and found.name == "Eight B" and found.usable_bytes == 7900 * MiB
    assert found.describe() == "Eight B: 7,900 MiB usable (cited)" and not found.assumed
    assert real_card(7 * GiB, PROFILES) is None
    assumed = real_card(8 * GiB, [profile("Nameless", 8, None)])
    assert assumed is not None and assumed.assumed and assumed.describe().endswith("(assumed)")


def test_a_peak_between_usable_and_box_holds_the_claim_but_fails_on_the_real_card() -> None:
    peak = 7950 * MiB  # under 8192 MiB (the box), over 7900 MiB (Eight B's usable memory)
    records = [gpu_generate("fp16", 128, peak=7000 * MiB), gpu_generate("fp16", 1024, peak=peak)]
    stated = judge_claim(CLAIM, records)
    real = judge_on_real_card(CLAIM, records, PROFILES)
    assert stated.status == HOLDS and stated.claim.budget_bytes == 8 * GiB  # the claim keeps its budget
    assert real.verdict is not None and real.verdict.status == HOLDS_UP_TO and real.verdict.holds_up_to == 128
    margins = {v.context_tokens: v.margin_bytes for v in real.verdict.contexts}
    assert margins == {128: 900 * MiB, 1024: -50 * MiB}
    assert real.text.startswith("on a real 8 GiB card (Eight B: 7,900 MiB usable (cited)): holds up to 128")
    assert real.symbol == "⚠️"


def test_a_fit_on_the_real_card_and_a_failure_on_both() -> None:
    fits = judge_on_real_card(CLAIM, [gpu_generate("fp16", 128, peak=7000 * MiB)], PROFILES)
    assert fits.verdict is not None and fits.verdict.status == HOLDS and fits.symbol == "✅"
    fails = judge_on_real_card(CLAIM, [gpu_generate("fp16", 128, peak=9000 * MiB)], PROFILES)
    assert fails.verdict is not None and fails.verdict.status == FAILS and fails.symbol == "❌"


def test_predictions_are_judged_on_the_real_card_too_and_stay_labelled() -> None:
    claim = Claim("fp16", "fp16 under 8 GiB", 8 * GiB, "8 GiB", model="phi-3-mini", precisions=("fp16",),
                  scenario="generate", contexts=(1024,), new_tokens=8)
    real = judge_on_real_card(claim, [cpu_generate("fp16", 64, model="phi-3-mini")], PROFILES,
                              predict=lambda spec: 7950 * MiB)
    assert real.verdict is not None and real.verdict.evidence == PREDICTED and real.verdict.status == FAILS
    assert "predicted" in real.text and real.symbol == "⚠️"


def test_no_card_of_that_box_size_says_so() -> None:
    odd = Claim("odd", "odd budget", 7 * GiB, "7 GiB", model="phi-3-mini", precisions=("fp16",), scenario="generate")
    real = judge_on_real_card(odd, [gpu_generate("fp16", 128)], PROFILES)
    assert real.verdict is None and real.card is None
    assert real.text == "on a real 7 GiB card: no shipped card profile has a 7 GiB box"
