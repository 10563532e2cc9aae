"""Boundary bisection and the capped second check, with a fake runner whose memory grows linearly with context."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from report_records import CONTEXT_BYTES, H200_TOTAL, GiB, cpu_generate, gpu_generate, gpu_suite

from bench.claims.boundary import Boundary, bisect_series, find_boundaries
from bench.claims.capcheck import plan_capped_check, run_capped_check
from bench.claims.claim_verdicts import HOLDS_UP_TO, MEASURED_GPU_CAPPED
from bench.claims.definitions import Claim, load_claims
from bench.config.spec import CaseSpec, TimingPolicy
from bench.errors import BadInputError
from bench.results.record import Memory, Record
from bench.results.run_folder import RunFolder

BUDGET = 8 * GiB
BASE = 7 * GiB
SLOPE = (BUDGET - BASE) // 3000  # the peak reaches the budget at exactly 3000 tokens (rounded down slope)
CLAIM = Claim("fp16", "fp16 under 8 GiB", BUDGET, "8 GiB", model="phi-3-mini", precisions=("fp16",),
              scenario="generate")


def linear_peak(context: int) -> int:
    return BASE + SLOPE * context


@dataclass
class FakeRunner:
    """Stands in for bench.measure.runner.run_cases: one record per case, peak linear in context."""

    status_above: str = "ok"  # "oom": cases over budget run out of memory instead of reporting a peak
    fail_at: int | None = None
    calls: list[tuple[list[CaseSpec], TimingPolicy, object]] = field(default_factory=list)

    def __call__(self, cases, policy, options):
        self.calls.append((list(cases), policy, options))
        out = []
        for spec in cases:
            peak = linear_peak(spec.context_tokens)
            cap = getattr(options, "memory_cap_bytes", None)
            if spec.context_tokens == self.fail_at:
                out.append(Record(spec=spec, status="error", device="cuda:0", device_name="NVIDIA H200",
                                  error="RuntimeError: worker died"))
            elif (self.status_above == "oom" or cap) and peak > BUDGET:
                out.append(Record(spec=spec, status="oom", device="cuda:0", device_name="NVIDIA H200",
                                  memory=Memory(memory_cap_bytes=cap)))
            else:
                out.append(gpu_generate(spec.precision, spec.context_tokens, peak=peak, cap=cap))
        return out

    @property
    def contexts(self) -> list[int]:
        return [c.context_tokens for cases, _, _ in self.calls for c in cases]


@dataclass(frozen=True)
class Options:
    out_dir: Path
    memory_cap_bytes: int | None = None


def measured() -> list[Record]:
    return [gpu_generate("fp16", c, peak=linear_peak(c)) for c in (128, 1024, 4096)]


def test_bisection_locates_the_boundary_to_within_64_tokens():
    runner = FakeRunner()
    options = Options(Path("/tmp/unused"))
    (b,) = find_boundaries(CLAIM, measured(), runner, options)
    # By hand: [1024, 4096] -> 2560 fits, 3328 fails, 2944 fits, 3136 fails, 3040 fails, 2992 fits; 48 <= 64.
    assert runner.contexts == [2560, 3328, 2944, 3136, 3040, 2992]
    assert (b.holds_at, b.fails_at) == (2992, 3040) and b.width == 48 and b.resolved()
    assert b.holds_at <= 3000 < b.fails_at
    assert [s.fits for s in b.steps] == [True, False, True, False, False, True]
    assert (b.model, b.precision, b.batch_size, b.new_tokens) == ("phi-3-mini", "fp16", 1, 64)
    # Every extra case is the measured case at another context, run with its policy and the caller's options.
    template = measured()[1].spec
    for cases, policy, opts in runner.calls:
        assert cases[0] == template.with_(context_tokens=cases[0].context_tokens)
        assert policy == measured()[1].policy and opts is options


def test_bisection_treats_oom_as_failing():
    runner = FakeRunner(status_above="oom")
    (b,) = find_boundaries(CLAIM, measured(), runner, Options(Path("/tmp/unused")))
    assert (b.holds_at, b.fails_at) == (2992, 3040)
    assert [s.oom for s in b.steps] == [False, True, False, True, True, False]


def test_tolerance_is_respected():
    runner = FakeRunner()
    b = bisect_series(CLAIM, measured()[1].spec, TimingPolicy(), 1024, 4096, runner, None, tolerance=512)
    # 2560 fits, 3328 fails, 2944 fits: 384 <= 512.
    assert runner.contexts == [2560, 3328, 2944] and (b.holds_at, b.fails_at) == (2944, 3328)
    with pytest.raises(BadInputError, match="tolerance"):
        bisect_series(CLAIM, measured()[1].spec, TimingPolicy(), 1024, 4096, runner, None, tolerance=0)


def test_a_failed_case_stops_the_search_with_a_note():
    runner = FakeRunner(fail_at=3328)
    (b,) = find_boundaries(CLAIM, measured(), runner, None)
    assert (b.holds_at, b.fails_at) == (2560, 4096) and not b.resolved()
    assert "status error" in b.note and "worker died" in b.note


def test_nothing_to_search_when_the_claim_holds_or_was_not_measured_on_a_gpu():
    runner = FakeRunner()
    holding = [gpu_generate("fp16", c, peak=BASE) for c in (128, 1024)]
    assert find_boundaries(CLAIM, holding, runner, None) == []
    tiny = Claim("t", "t", BUDGET, "8 GiB", model="phi-3-tiny", precisions=("fp32",), scenario="generate")
    assert find_boundaries(tiny, [cpu_generate("fp32", 16), cpu_generate("fp32", 64)], runner, None) == []
    assert runner.calls == []


def test_boundary_dataclass_width():
    b = Boundary("c", "m", "fp16", "generate", 1, 64, 1000, 1100)
    assert b.width == 100 and not b.resolved() and b.resolved(100)


def test_cap_is_a_simulated_card_of_the_budget():
    claim = next(c for c in load_claims() if c.id == "phi3-fp16-8gb")
    plan = plan_capped_check(claim, gpu_suite())
    assert plan.runnable and plan.context_bytes == CONTEXT_BYTES == 512 * 2**20
    # workers subtract the CUDA context they measure; the plan names the card
    assert plan.cap_bytes == 8 * GiB and plan.device_total_bytes == H200_TOTAL
    assert [c.context_tokens for c in plan.cases] == [128, 1024, 2048, 3072, 4032]
    assert all(c.precision == "fp16" for c in plan.cases)


def test_capped_check_runs_the_claim_cases_under_the_cap(tmp_path: Path):
    claim = next(c for c in load_claims() if c.id == "phi3-fp16-8gb")
    runner = FakeRunner()
    made = []

    def make_options(out_dir: Path, cap: int) -> Options:
        made.append((out_dir, cap))
        return Options(out_dir, cap)

    plan, verdict = run_capped_check(claim, gpu_suite(), runner, make_options, tmp_path)
    assert made == [(RunFolder(tmp_path).capped(claim.id).root, 8 * GiB)]
    assert verdict is not None and verdict.evidence == MEASURED_GPU_CAPPED
    # The fake's peak is 7 GiB + 357,913 B per token: over 8 GiB (so OOM under the cap) beyond 3000 tokens.
    assert (verdict.status, verdict.holds_up_to, verdict.fails_from) == (HOLDS_UP_TO, 2048, 3072)
    assert [v.text for v in verdict.contexts][-1] == "does not fit under the cap (out of memory)"


def test_capped_check_explains_why_it_cannot_run():
    claim = next(c for c in load_claims() if c.id == "phi3-fp16-8gb")
    small_gpu = [gpu_generate("fp16", 128).replace(
        memory=Memory(nvml_process_peak_bytes=7 * GiB, baseline_bytes=CONTEXT_BYTES, device_total_bytes=8 * GiB))]
    plan, verdict = run_capped_check(claim, small_gpu, FakeRunner(), lambda d, c: None, Path("/tmp/unused"))
    assert verdict is None and "not more than the 8 GiB budget" in plan.reason
    no_context = [gpu_generate("fp16", 128).replace(
        memory=Memory(nvml_process_peak_bytes=7 * GiB, device_total_bytes=H200_TOTAL))]
    assert "CUDA context" in plan_capped_check(claim, no_context).reason
    assert "no GPU measurement" in plan_capped_check(claim, [cpu_generate("fp32", 16)]).reason


class WritingRunner(FakeRunner):
    """The fake runner, also appending each record to ``options.out_dir`` as the real runner does."""

    def __call__(self, cases, policy, options):
        records = super().__call__(cases, policy, options)
        RunFolder(options.out_dir).create().append_all(records)
        return records


def test_report_command_measures_then_reports(tmp_path: Path):
    from report_records import envelope, write_run

    from bench.commands.claim_measurements import check_claims_under_cap, find_claim_boundaries
    from bench.report.build import build_report

    folder = write_run(tmp_path / "run", measured(), envelope())
    runner = WritingRunner()
    notes = find_claim_boundaries(folder, [CLAIM], runner, lambda out: Options(out))
    assert notes == ["Boundary of 'fp16' for phi-3-mini fp16 batch 1 on NVIDIA H200 (cuda:0): holds at 2992, fails "
                     "at 3040 tokens (located to within 64; 6 extra case(s))"]
    notes += check_claims_under_cap(folder, [CLAIM], runner, lambda out, cap: Options(out, cap))
    assert "cap of 8,192 MiB" in notes[-1]
    files = build_report(folder, [CLAIM], notes=notes, make_plots=False)
    (verdict,) = files.verdicts
    assert (verdict.holds_up_to, verdict.fails_from) == (2992, 3040)  # the boundary records are judged
    md = files.markdown.read_text(encoding="utf-8")
    assert "holds at 2992, fails at 3040 tokens" in md and "Second check" in md
    assert RunFolder(folder).boundary().has_results()
    assert RunFolder(folder).capped("fp16").has_results()


def test_report_command_explains_missing_gpu(tmp_path: Path, capsys):
    from report_records import cpu_suite, envelope, write_run

    from bench.cli import main

    folder = write_run(tmp_path / "run", cpu_suite(), envelope("c1", gpus=[]))
    assert main(["report", str(folder), "--find-boundary", "--memory-cap-check"]) == 0
    err = capsys.readouterr().err
    assert "Boundary search not run: this run has no GPU records" in err
    assert "Memory-cap check not run: this run has no GPU records" in err
    assert "Boundary search not run" in RunFolder(folder).report_md.read_text(encoding="utf-8")
