"""The report's claims section: the runtime a verdict holds for (transformers version, cache policy, and what a
runtime that ignores the window holds more), the second line on a real card, and the reading behind a verdict."""

from __future__ import annotations

import dataclasses

import pytest
from report_records import GiB, MiB, gpu_generate

from bench.claims.definitions import Claim
from bench.config.hardware import HardwareProfile
from bench.report.claims_section import claims_section, judge_groups
from bench.report.document import render_markdown
from bench.report.run_data import DeviceGroup
from bench.report.runtime_section import WindowExtra, cache_descriptions, predicted_window_extra, transformers_versions

CLAIM = Claim("fp16", "fp16 under 8 GiB", 8 * GiB, "8 GiB", model="phi-3-mini", precisions=("fp16",),
              scenario="generate")
CARDS = [HardwareProfile(name="Eight", memory_bytes=8 * GiB, memory_bandwidth_bytes_per_s=3e11,
                         usable_bytes=7900 * MiB, sources={"usable_bytes": "a log"})]


def windowed(record, policy: str = "window"):
    memory = dataclasses.replace(
        record.memory, cache_policy=policy, cache_window_tokens=2047 if policy == "window" else None,
        cache_layer_classes=("DynamicSlidingWindowLayer",) if policy == "window" else ("DynamicLayer",),
    )
    return record.replace(memory=memory)


def section(records, envelopes, window_extra=None) -> str:
    group = DeviceGroup("gpu-host", "cuda:0", "NVIDIA H200", list(records), label="NVIDIA H200 (cuda:0)")
    results = judge_groups([CLAIM], [group], {}, profiles=CARDS)
    return render_markdown(claims_section(results, envelopes, window_extra))


def test_runtime_names_transformers_and_the_cache_the_records_held() -> None:
    records = [windowed(gpu_generate("fp16", 128, peak=7000 * MiB)), windowed(gpu_generate("fp16", 4032))]
    envelopes = [{"run_id": "r1", "transformers": "5.24.0"}, {"run_id": "other", "transformers": "4.40.2"}]
    assert transformers_versions(records, envelopes) == ("5.24.0",)  # only the envelope of these records' run
    held = "sliding window of 2047 tokens, 2046 kept per layer (DynamicSlidingWindowLayer)"
    assert cache_descriptions(records) == (held,)

    def extra(spec):
        return WindowExtra(final_kv_bytes=768 * MiB, peak_bytes=-16 * MiB, window_tokens=2047)

    md = section(records, envelopes, extra)
    assert "### Runtime the verdicts hold for" in md
    assert "NVIDIA H200 (cuda:0): transformers 5.24.0; KV cache: sliding window of 2047 tokens" in md
    assert "transformers 4.x with eager or sdpa attention, as in the book's original notebooks" in md
    assert "phi-3-mini fp16 at 4032 + 64 tokens: the full cache holds 768 MiB more KV cache" in md
    assert "its predicted peak differs by -16 MiB" in md and "predicted, not measured" in md


def test_full_cache_records_and_missing_fields_are_said_so() -> None:
    full = windowed(gpu_generate("fp16", 128), "full")
    assert cache_descriptions([full]) == ("full cache, every token kept (DynamicLayer)",)
    assert cache_descriptions([gpu_generate("fp16", 128)]) == (
        "not recorded (a record written before the cache was recorded)",
    )
    md = section([gpu_generate("fp16", 128)], [])
    assert "transformers not recorded (no environment envelope)" in md


def test_the_second_line_on_a_real_card_is_rendered() -> None:
    records = [gpu_generate("fp16", 128, peak=7000 * MiB), gpu_generate("fp16", 1024, peak=7950 * MiB)]
    md = section(records, [{"run_id": "r1", "transformers": "5.24.0"}])
    assert "| Real card (smallest usable memory of that box size) | Verdict on it |" in md
    assert "✅ holds." in md  # the stated 8 GiB budget
    assert "⚠️ on a real 8 GiB card (Eight: 7,900 MiB usable (cited)): holds up to 128 tokens of context" in md


def test_a_device_wide_reading_is_named_in_the_claim_block() -> None:
    r = gpu_generate("fp16", 128, peak=7000 * MiB)
    r = r.replace(memory=dataclasses.replace(r.memory, nvml_method="device_used"))
    md = section([r], [])
    assert "☑️ holds (device-wide reading)." in md
    assert "Reading: device-wide reading: the GPU's used memory minus the baseline" in md


@pytest.mark.slow  # builds Phi-3-mini and BERT on the meta device
def test_predicted_extra_of_a_full_cache_from_the_predictor() -> None:
    from bench.config.spec import CaseSpec

    extra = predicted_window_extra(CaseSpec("phi-3-mini", "fp16", "generate", 1, 4032, 64, device="cuda"))
    assert extra is not None and extra.window_tokens == 2047
    assert extra.final_kv_bytes == 393_216 * (4095 - 2046)  # every token against the window's 2046
    assert predicted_window_extra(CaseSpec("bert-base", "fp16", "encode", 1, 128, 0, device="cuda")) is None
