"""A verdict backed by a device-wide NVML reading, a guessed process or a GPU another process used names that
reading and cannot be a plain ✅ / ❌. Synthetic records; the method names are the telemetry's own."""

from __future__ import annotations

import dataclasses

import pytest
from report_records import GiB, MiB, gpu_generate

from bench.claims.claim_verdicts import FAILS, HOLDS, judge_claim
from bench.claims.definitions import Claim
from bench.claims.evidence import DEVICE_WIDE, GUESSED_PROCESS, SHARED_GPU, UNKNOWN_METHOD, weak_readings

CLAIM = Claim("fp16", "fp16 under 8 GiB", 8 * GiB, "8 GiB", model="phi-3-mini", precisions=("fp16",),
              scenario="generate")


def record(peak_mib: int, *, method: str | None = "process", match: str | None = "pid", flags=("random_weights",)):
    r = gpu_generate("fp16", 128, peak=peak_mib * MiB, flags=flags)
    return r.replace(memory=dataclasses.replace(r.memory, nvml_method=method), telemetry={"nvml_pid_match": match})


def test_a_per_process_reading_is_a_plain_verdict() -> None:
    assert weak_readings(record(7000)) == ()
    v = judge_claim(CLAIM, [record(7000)])
    assert v.status == HOLDS and v.symbol == "✅" and v.text == "holds" and v.readings == ()
    assert judge_claim(CLAIM, [record(9000)]).symbol == "❌"


@pytest.mark.parametrize(
    ("kwargs", "reading"),
    [
        ({"method": "device_used", "match": "none"}, DEVICE_WIDE),
        ({"method": "process", "match": "single_process"}, GUESSED_PROCESS),
        ({"flags": ("random_weights", "shared_gpu")}, SHARED_GPU),
        ({"method": None, "match": None}, UNKNOWN_METHOD),
    ],
)
def test_a_weak_reading_is_named_and_drawn_differently(kwargs: dict, reading: str) -> None:
    holds = judge_claim(CLAIM, [record(7000, **kwargs)])
    assert holds.status == HOLDS and holds.readings == (reading,)
    assert holds.symbol == "☑️" and holds.text == f"holds ({reading})"
    (point,) = holds.contexts
    assert point.symbol == "☑️" and point.text == f"fits ({reading})"
    fails = judge_claim(CLAIM, [record(9000, **kwargs)])
    assert fails.status == FAILS and fails.symbol == "✖️" and fails.text == f"fails ({reading})"


def test_one_weak_point_marks_the_whole_claim() -> None:
    firm, weak = record(7000), gpu_generate("fp16", 1024, peak=7100 * MiB, flags=("shared_gpu",))
    v = judge_claim(CLAIM, [firm, weak])
    assert v.status == HOLDS and v.symbol == "☑️" and v.readings == (SHARED_GPU,)
    assert [p.symbol for p in v.contexts] == ["✅", "☑️"]
