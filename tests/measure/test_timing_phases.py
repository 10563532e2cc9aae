"""No telemetry thread runs beside a timed repetition: the timed ones are sampled between calls, telemetry has
repetitions of its own (their timing is not kept), and energy per token comes from those (fakes, fake clock)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from bench.config.spec import CaseSpec, TimingPolicy
from bench.measure.engines import EagerEngine
from bench.measure.timing import TELEMETRY_WINDOW, TIMED_WINDOW, case_telemetry, run_phases
from bench.results.record import Samples


@dataclass(frozen=True)
class FakeTelemetry:
    summary: dict[str, Any]
    timeline: tuple[dict[str, Any], ...]
    nvml_process_peak_bytes: int | None = None
    nvml_method: str | None = None
    host_peak_rss_bytes: int | None = None


class FakeSampler:
    def __init__(self, log, background, energy_j, peak):
        self.log, self.background, self.energy_j, self.peak = log, background, energy_j, peak
        self.rows: list[dict[str, Any]] = []
        self.started_at = float(len(log))
        self.running = False

    def start(self):
        self.running = True
        self.log.append(("start", self.background))
        self.sample()

    def sample(self):
        self.rows.append({"t_s": float(len(self.rows))})

    def stop(self):
        self.running = False
        self.log.append(("stop", self.background))
        summary = {"energy_j": self.energy_j, "energy_method": "counter", "throttle_reasons": []}
        return FakeTelemetry(summary, tuple(self.rows), self.peak, "pid")


@dataclass
class FakeCase:
    device: str = "cpu"
    engine: Any = field(default_factory=EagerEngine)
    samplers: list = field(default_factory=list)
    beside: list = field(default_factory=list)  # (e2e, a background sampler was running)
    e2e: list = field(default_factory=list)

    def run_once(self):
        value = 0.1 + 0.01 * len(self.beside)
        self.beside.append((value, any(s.running and s.background for s in self.samplers)))
        self.e2e.append(value)
        return value

    def samples(self):
        return Samples(ttft_s=tuple(0.01 for _ in self.e2e), e2e_s=tuple(self.e2e), itl_s=tuple(() for _ in self.e2e))


def _factory(case, log, energies=(5.0, 2.0), peaks=(100, 300)):
    def make(device, background=True):
        phase = 1 if background else 0
        s = FakeSampler(log, background, energies[phase], peaks[phase])
        case.samplers.append(s)
        return s

    return make


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        self.t += 0.5
        return self.t


def test_timed_repetitions_run_with_no_sampling_thread_beside_them():
    case, log = FakeCase(), []
    policy = TimingPolicy(warmup_runs=0, min_repetitions=3, max_repetitions=3, telemetry_repetitions=2)
    phases = run_phases(case, policy, _factory(case, log), Clock())
    timed = set(phases.samples.e2e_s)
    assert len(timed) == 3
    assert all(not beside for value, beside in case.beside if value in timed)  # nothing ran beside a timed call
    assert [beside for value, beside in case.beside if value not in timed] == [True, True]
    assert log == [("start", False), ("stop", False), ("start", True), ("stop", True)]
    timed_sampler = case.samplers[0]
    assert len(timed_sampler.rows) == 1 + 3  # at start, then after each timed call (between calls)
    assert phases.telemetry_repetitions == 2 and not phases.recompiled


def test_energy_per_token_comes_from_the_telemetry_repetitions():
    case, log = FakeCase(), []
    policy = TimingPolicy(warmup_runs=0, min_repetitions=3, max_repetitions=3, telemetry_repetitions=2)
    phases = run_phases(case, policy, _factory(case, log, energies=(5.0, 2.0), peaks=(100, 300)), Clock())
    tel = case_telemetry(phases, "generate", batch_size=2, new_tokens=5)
    # the telemetry repetitions: 2 x batch 2 x 5 tokens = 20 tokens for their 2.0 J
    assert tel.summary["joules_per_token"] == pytest.approx(0.1)
    assert tel.summary["tokens_during_telemetry"] == 20
    assert tel.summary["telemetry_window"] == TELEMETRY_WINDOW and tel.summary["telemetry_repetitions"] == 2
    assert tel.nvml_process_peak_bytes == 300  # the larger of the two phases' NVML peaks
    phases_seen = [row["phase"] for row in tel.timeline]
    assert phases_seen == ["timed"] * 4 + ["telemetry"] * len(case.samplers[1].rows)


def test_without_telemetry_repetitions_the_timed_ones_are_the_window():
    case, log = FakeCase(), []
    policy = TimingPolicy(warmup_runs=0, min_repetitions=2, max_repetitions=2, telemetry_repetitions=0)
    phases = run_phases(case, policy, _factory(case, log, energies=(4.0, 0.0)), Clock())
    assert phases.telemetry is None and log == [("start", False), ("stop", False)]
    tel = case_telemetry(phases, "encode", batch_size=4, new_tokens=0)
    assert tel.summary["joules_per_sequence"] == pytest.approx(0.5)  # 4.0 J over 2 x 4 sequences
    assert tel.summary["telemetry_window"] == TIMED_WINDOW


@pytest.mark.slow
def test_bench_run_times_no_repetition_beside_the_sampler_thread(monkeypatch):
    """The reliability issue's item 8: the worker's own path (CaseRunner.run on a tiny model) keeps no timed
    sample that ran while a telemetry thread was sampling."""
    from bench.measure import case_runner

    beside: dict[float, bool] = {}
    original = case_runner.PreparedCase.run_once

    def spy(self):
        alive = any(t.name.startswith("telemetry-") and t.is_alive() for t in threading.enumerate())
        value = original(self)
        beside[value] = alive
        return value

    monkeypatch.setattr(case_runner.PreparedCase, "run_once", spy)
    policy = TimingPolicy(warmup_runs=1, min_repetitions=3, max_repetitions=3, telemetry_repetitions=1)
    record = case_runner.CaseRunner().run(CaseSpec("phi-3-tiny", "fp32", "generate", 1, 8, 4), policy)
    assert record.ok, record.error
    assert len(record.samples.e2e_s) == 3
    assert not any(beside[e2e] for e2e in record.samples.e2e_s)
    assert any(beside.values())  # the telemetry repetition did run with the thread
    assert record.telemetry["telemetry_window"] == TELEMETRY_WINDOW


def test_a_sampler_without_background_starts_no_thread_and_samples_where_asked():
    import types

    from bench.measure.telemetry.sampler import TelemetrySampler

    times = iter(float(i) for i in range(100))
    process = types.SimpleNamespace(
        cpu_times=lambda: types.SimpleNamespace(user=1.0, system=0.5),
        memory_info=lambda: types.SimpleNamespace(rss=123),
    )
    before = threading.active_count()
    sampler = TelemetrySampler("cpu", process=process, background=False, clock=lambda: next(times))
    sampler.start()
    assert threading.active_count() == before and not sampler.background
    sampler.sample()
    sampler.sample()
    telemetry = sampler.stop()
    # the clock read at start is t = 0; then one row at start, the two asked for, and one at stop
    assert [row["t_s"] for row in telemetry.timeline] == [1.0, 2.0, 3.0, 4.0]
    assert telemetry.timeline[-1]["rss_bytes"] == 123
