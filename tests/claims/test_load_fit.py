"""Verdicts on the live peak over loading and generation, and the nvidia-smi figure beside each."""

import dataclasses

from report_records import CONTEXT_BYTES, GiB, MiB, cpu_generate, gpu_generate

from bench.claims.claim_verdicts import FAILS, HOLDS, HOLDS_UP_TO, HOST_MEMORY, judge_claim
from bench.claims.definitions import Claim
from bench.claims.evidence import LOAD_NOT_RECORDED
from bench.claims.nvidia_smi import MEASURED, PREDICTED
from bench.results.load_phase import LoadPhase, UserView
from bench.results.metrics import host_live_peak_rss_bytes, measured_fit_bytes

CLAIM = Claim("nf4", "nf4 under 6 GiB", 6 * GiB, "6 GiB", model="phi-3-mini", precisions=("nf4",), scenario="generate")


def quantizing_load(record, peak_allocated: int):
    """The record with a load whose live peak (16-bit tensors in flight while quantizing) is ``peak_allocated``."""
    return record.replace(load=dataclasses.replace(record.load, load_peak_allocated_bytes=peak_allocated))


def test_a_load_peak_above_the_generation_decides_the_verdict():
    steady = gpu_generate("nf4", 1024, peak=5 * GiB)  # NVML steady-state peak 5 GiB: would hold 6 GiB
    assert judge_claim(CLAIM, [steady]).status == HOLDS
    loaded = quantizing_load(steady, 6 * GiB)  # loading peaked at 6 GiB live, plus the context
    # by hand: outside the allocator = NVML peak - reserved peak = 512 MiB context + 64 MiB libraries
    assert measured_fit_bytes(loaded) == 6 * GiB + CONTEXT_BYTES + 64 * MiB
    verdict = judge_claim(CLAIM, [loaded])
    assert verdict.status == FAILS and verdict.symbol == "❌"
    (point,) = verdict.contexts
    assert point.peak_bytes == 6 * GiB + 576 * MiB and point.margin_bytes == -576 * MiB


def test_a_record_without_its_load_is_judged_on_the_generation_and_says_so():
    old = gpu_generate("nf4", 1024, peak=5 * GiB).replace(load=LoadPhase())
    verdict = judge_claim(CLAIM, [old])
    assert verdict.status == HOLDS and verdict.symbol == "☑️"  # a weaker reading, not a plain ✅
    assert LOAD_NOT_RECORDED in verdict.readings and "loading not recorded" in verdict.text


def test_nvidia_smi_beside_the_verdict_is_the_user_view_where_measured_else_predicted():
    first = gpu_generate("nf4", 512, peak=4 * GiB)
    pool = 4 * GiB + 700 * MiB  # loading's freed 16-bit blocks stay in the pool
    view = UserView(
        generate_s=0.5,
        peak_allocated_bytes=first.memory.peak_allocated_bytes,
        reserved_high_water_bytes=pool,
        reserved_after_bytes=pool,
        nvml_process_after_bytes=CONTEXT_BYTES + pool,
        nvml_process_peak_bytes=CONTEXT_BYTES + pool,
    )
    first = first.replace(user_view=view)
    second = gpu_generate("nf4", 2048, peak=5 * GiB)  # same group: no user view of its own
    verdict = judge_claim(CLAIM, [first, second], smi_predict=lambda spec: 5 * GiB + 900 * MiB)
    at = {v.context_tokens: v for v in verdict.contexts}
    assert at[512].nvidia_smi.bytes == CONTEXT_BYTES + pool and at[512].nvidia_smi.source == MEASURED
    assert at[512].nvidia_smi.text == f"nvidia-smi showed {(CONTEXT_BYTES + pool) // MiB:,} MiB (measured)"
    # by hand: pool 4,096 + 700 = 4,796 MiB against a live peak of 4,096 - 512 - 64 = 3,520 MiB: 1,276 cached
    assert "1,276 MiB are cached blocks freed while loading and generating" in at[512].nvidia_smi.why
    assert at[2048].nvidia_smi.bytes == 5 * GiB + 900 * MiB and at[2048].nvidia_smi.source == PREDICTED
    assert "would show 6,020 MiB (predicted)" in at[2048].nvidia_smi.text
    assert at[512].nvidia_smi.why.startswith("+1,212 MiB against the fit figure")  # 5,308 - 4,096
    # the verdict itself is not judged on nvidia-smi: 5,312 MiB of pool + context would not change it
    assert verdict.status == HOLDS


def test_a_failed_user_view_gives_no_measured_nvidia_smi():
    record = gpu_generate("nf4", 512).replace(user_view=UserView(nvml_process_after_bytes=9 * GiB, error="OOM"))
    (point,) = judge_claim(CLAIM, [record]).contexts
    assert point.nvidia_smi.bytes is None


def test_host_evidence_shows_the_host_peak_over_loading_and_stays_unjudged():
    record = cpu_generate("nf4", 128)
    loaded = record.replace(
        load=LoadPhase(load_s=3.0, load_host_peak_rss_bytes=record.memory.host_peak_rss_bytes + 300 * MiB)
    )
    assert host_live_peak_rss_bytes(loaded) == record.memory.host_peak_rss_bytes + 300 * MiB
    tiny = dataclasses.replace(CLAIM, model="phi-3-tiny")
    verdict = judge_claim(tiny, [loaded], smi_predict=lambda spec: 123 * MiB)
    (point,) = verdict.contexts
    assert point.evidence == HOST_MEMORY and point.fits is None
    assert point.host_peak_rss_bytes == record.memory.host_peak_rss_bytes + 300 * MiB
    assert point.nvidia_smi.source == PREDICTED  # no GPU: only a labelled prediction
    assert verdict.status not in (HOLDS, FAILS, HOLDS_UP_TO)


def test_a_predicted_nvidia_smi_equal_to_the_fit_figure_says_the_cache_is_not_modelled():
    tiny = dataclasses.replace(CLAIM, model="phi-3-tiny")
    (point,) = judge_claim(tiny, [cpu_generate("nf4", 128)], predict=lambda s: GiB, smi_predict=lambda s: GiB).contexts
    assert point.nvidia_smi.why.startswith("the same as the predicted fit figure: this prediction does not model")
    (point,) = judge_claim(
        tiny, [cpu_generate("nf4", 128)], predict=lambda s: GiB, smi_predict=lambda s: GiB + 300 * MiB
    ).contexts
    assert point.nvidia_smi.why.startswith("+300 MiB against the predicted fit figure: the allocator's cache")
