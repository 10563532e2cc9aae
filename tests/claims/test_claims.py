"""Claim verdicts on hand-made records: holds, fails, holds up to C, OOM, predictions, units."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_records import (
    CONTEXT_BYTES,
    GiB,
    MiB,
    cpu_generate,
    gpu_generate,
    gpu_suite,
)

from bench.claims.claim_verdicts import (
    FAILS,
    HOLDS,
    HOLDS_UP_TO,
    HOST_MEMORY,
    MEASURED_GPU,
    MEASURED_GPU_CAPPED,
    NO_EVIDENCE,
    NOT_MEASURED,
    PREDICTED,
    evidence_of,
    judge_claim,
)
from bench.claims.definitions import Claim, load_claims, parse_bytes, parse_claims
from bench.config.spec import CaseSpec
from bench.errors import BadInputError

FP16_8GIB = Claim("fp16", "fp16 under 8 GiB", 8 * GiB, "8 GiB", model="phi-3-mini", precisions=("fp16",),
                  scenario="generate")


def test_parse_bytes_units():
    assert parse_bytes("8 GiB") == 8 * 1024**3 == 8_589_934_592
    assert parse_bytes("6144 MiB") == 6 * 1024**3
    assert parse_bytes("16 GB") == 16_000_000_000  # decimal, as written
    assert parse_bytes("1.5GiB") == 1_610_612_736
    assert parse_bytes(4096) == 4096
    for bad in ("8", "eight GiB", "8 GiBs", "-1 GiB", "0 MiB"):
        with pytest.raises(BadInputError, match="budget"):
            parse_bytes(bad)


def test_default_claims_are_the_three_book_claims():
    claims = {c.id: c for c in load_claims()}
    assert set(claims) == {"phi3-fp16-8gb", "phi3-quantized-6gb", "suite-t4-16gb"}
    fp16, quant, t4 = claims["phi3-fp16-8gb"], claims["phi3-quantized-6gb"], claims["suite-t4-16gb"]
    assert fp16.budget_bytes == 8192 * MiB and fp16.precisions == ("fp16",) and fp16.model == "phi-3-mini"
    assert quant.budget_bytes == 6144 * MiB and {"int8", "nf4"} <= set(quant.precisions)
    assert t4.budget_bytes == 16 * GiB and t4.model == "*" and t4.precisions == ("*",)
    assert "datasheet" in t4.note and "15" in t4.note  # says the usable memory is less than the box


def test_holds_when_every_context_fits():
    records = [gpu_generate("fp16", c, peak=7 * GiB + c * 100_000) for c in (128, 1024, 2048)]
    v = judge_claim(FP16_8GIB, records)
    assert v.status == HOLDS and v.symbol == "✅" and v.text == "holds"
    assert v.holds_up_to == 2048 and v.fails_from is None
    assert v.evidence == MEASURED_GPU and v.measured_on_gpu
    assert [c.fits for c in v.contexts] == [True, True, True]
    assert v.device == "cuda:0" and v.device_name == "NVIDIA H200"


def test_fails_when_no_context_fits():
    records = [gpu_generate("fp16", c, peak=9 * GiB) for c in (128, 1024)]
    v = judge_claim(FP16_8GIB, records)
    assert v.status == FAILS and v.symbol == "❌" and v.text == "fails"
    assert v.holds_up_to is None and v.fails_from == 128
    assert all(c.text == "does not fit" for c in v.contexts)


def test_holds_up_to_the_last_fitting_context():
    # With the synthetic Phi-3-mini peaks fp16 fits 8 GiB at 128 tokens and no further.
    v = judge_claim(FP16_8GIB, gpu_suite())
    assert v.status == HOLDS_UP_TO and v.symbol == "⚠️"
    assert (v.holds_up_to, v.fails_from) == (128, 1024)
    assert v.text == "holds up to 128 tokens of context, fails from 1024"
    assert [c.context_tokens for c in v.contexts] == [128, 1024, 2048, 3072, 4032]
    assert [c.fits for c in v.contexts] == [True, False, False, False, False]


def test_multi_precision_claim_breaks_where_its_weakest_line_breaks():
    quant = next(c for c in load_claims() if c.id == "phi3-quantized-6gb")
    v = judge_claim(quant, gpu_suite())
    assert (v.status, v.holds_up_to, v.fails_from) == (HOLDS_UP_TO, 3072, 4032)
    lines = {s.precision: s for s in v.series}
    assert lines["int8"].status == HOLDS_UP_TO and (lines["int8"].holds_up_to, lines["int8"].fails_from) == (3072, 4032)
    assert lines["nf4"].status == HOLDS and lines["nf4-dq"].status == HOLDS
    # the claim's GGUF side (llama.cpp) has no record in this run: named as gaps, never judged from nothing
    assert v.gaps == tuple(
        f"no record of phi-3-mini {p} generate at 128, 1024, 2048, 3072, 4032 tokens" for p in ("q8_0", "q4_0")
    )


def test_gguf_q4_0_is_judged_beside_nf4_on_llamacpps_nvml_peak():
    from bench.results.record import Memory, Record

    quant = next(c for c in load_claims() if c.id == "phi3-quantized-6gb")
    assert {"nf4", "q4_0"} <= set(quant.precisions)
    nf4 = gpu_generate("nf4", 1024, peak=3 * GiB)
    # llama.cpp has no caching allocator: no torch peaks, the NVML process peak is what the card must hold
    spec = nf4.spec.with_(precision="q4_0", engine="llama.cpp")
    q4 = Record(spec=spec, status="ok", device="cuda:0", device_name=nf4.device_name, samples=nf4.samples,
                memory=Memory(weights_bytes=2 * GiB, nvml_process_peak_bytes=6 * GiB + MiB, nvml_method="process"))
    v = judge_claim(quant, [nf4, q4])
    lines = {s.precision: s for s in v.series}
    assert lines["nf4"].status == HOLDS and lines["q4_0"].status == FAILS
    (point,) = [c for c in v.contexts if c.precision == "q4_0"]
    assert point.peak_bytes == 6 * GiB + MiB and point.margin_bytes == -MiB and point.measured


def test_oom_is_a_measurement_that_the_case_does_not_fit():
    records = [gpu_generate("fp16", 128, peak=7 * GiB), gpu_generate("fp16", 1024, status="oom")]
    v = judge_claim(FP16_8GIB, records)
    oom = v.contexts[1]
    assert oom.evidence == MEASURED_GPU and oom.fits is False and oom.oom
    assert oom.text == "does not fit (out of memory)" and oom.symbol == "❌"
    assert oom.peak_bytes is None and oom.margin_bytes is None
    assert (v.status, v.holds_up_to, v.fails_from) == (HOLDS_UP_TO, 128, 1024)


def test_margins_in_mib_and_decimal_gb():
    v = judge_claim(FP16_8GIB, [gpu_generate("fp16", 128, peak=8 * GiB - 512 * MiB)]).contexts[0]
    assert v.margin_bytes == 512 * MiB
    assert v.margin_mib == 512.0
    assert v.margin_gb == pytest.approx(0.536870912)
    over = judge_claim(FP16_8GIB, [gpu_generate("fp16", 128, peak=8 * GiB + 1)]).contexts[0]
    assert over.fits is False and over.margin_bytes == -1


def test_gib_and_gb_budgets_differ():
    # 8.2e9 bytes fits 8 GiB (8.59e9) but not 8 decimal GB (8e9): the unit decides the verdict.
    record = gpu_generate("fp16", 128, peak=8_200_000_000)
    decimal = Claim("dec", "fp16 under 8 GB", parse_bytes("8 GB"), "8 GB", model="phi-3-mini",
                    precisions=("fp16",), scenario="generate")
    assert judge_claim(FP16_8GIB, [record]).status == HOLDS
    assert judge_claim(decimal, [record]).status == FAILS
    assert judge_claim(decimal, [record]).contexts[0].margin_gb == pytest.approx(-0.2)


def test_cpu_records_are_not_measured_on_a_gpu():
    claim = Claim("tiny", "tiny under 8 GiB", 8 * GiB, "8 GiB", model="phi-3-tiny", precisions=("fp32",),
                  scenario="generate")
    v = judge_claim(claim, [cpu_generate("fp32", 16), cpu_generate("fp32", 32)])
    assert v.status == NOT_MEASURED and v.symbol == "⚠️" and v.evidence == HOST_MEMORY
    assert "not measured on a GPU" in v.text and not v.measured_on_gpu
    for c in v.contexts:
        assert c.evidence == HOST_MEMORY and c.fits is None and c.peak_bytes is None
        assert c.text == "not measured on a GPU" and c.symbol == "⚠️"
        assert c.host_peak_rss_bytes and c.host_peak_rss_bytes > 700 * MiB  # the host evidence is shown


def test_no_gpu_claim_without_records_says_not_measured_and_lists_gaps():
    v = judge_claim(FP16_8GIB, [cpu_generate("fp32", 16)], device="cpu", device_name="Xeon")
    assert v.status == NO_EVIDENCE and v.text.startswith("not measured on a GPU")
    assert v.gaps == ("no record of phi-3-mini fp16 generate",)


def test_predictions_are_labelled_and_never_measurements():
    seen = []

    def predict(spec: CaseSpec) -> int:
        seen.append(spec)
        return CONTEXT_BYTES + 7 * GiB + spec.context_tokens * 400_000

    claim = next(c for c in load_claims() if c.id == "phi3-fp16-8gb")
    v = judge_claim(claim, [cpu_generate("fp32", 16)], predict=predict, device="cpu", device_name="Xeon")
    assert v.evidence == PREDICTED and not v.measured_on_gpu
    assert v.symbol == "⚠️" and v.text.startswith("predicted: ") and "not measured on a GPU" in v.text
    assert [c.context_tokens for c in v.contexts] == [128, 1024, 2048, 3072, 4032]
    assert all(c.evidence == PREDICTED and not c.measured for c in v.contexts)
    assert v.contexts[0].text == "predicted to fit (not measured on a GPU)"
    # 0.5 GiB + 7 GiB + 400 kB per token crosses 8 GiB between 1024 (7.88 GiB) and 2048 (8.26 GiB) tokens.
    assert (v.status, v.holds_up_to, v.fails_from) == (HOLDS_UP_TO, 1024, 2048)
    assert v.contexts[1].text == "predicted to fit (not measured on a GPU)"
    assert v.contexts[2].text == "predicted not to fit (not measured on a GPU)"
    assert all(s.device.startswith("cuda") and s.model == "phi-3-mini" and s.new_tokens == 64 for s in seen)
    assert v.gaps == ("no record of phi-3-mini fp16 generate at 128, 1024, 2048, 3072, 4032 tokens",)


def test_measurements_outrank_predictions_for_the_verdict():
    claim = next(c for c in load_claims() if c.id == "phi3-fp16-8gb")
    records = [gpu_generate("fp16", c) for c in (128, 1024)]
    v = judge_claim(claim, records, predict=lambda spec: 1 * GiB)  # predicts "fits" everywhere
    assert v.evidence == MEASURED_GPU and (v.status, v.holds_up_to, v.fails_from) == (HOLDS_UP_TO, 128, 1024)
    kinds = {c.context_tokens: c.evidence for c in v.contexts}
    assert kinds == {128: MEASURED_GPU, 1024: MEASURED_GPU, 2048: PREDICTED, 3072: PREDICTED, 4032: PREDICTED}
    assert v.evidence_kinds == (MEASURED_GPU, PREDICTED)


def test_predictor_returning_none_leaves_host_evidence():
    claim = Claim("tiny", "t", 8 * GiB, "8 GiB", model="phi-3-tiny", precisions=("fp32",), scenario="generate")
    v = judge_claim(claim, [cpu_generate("fp32", 16)], predict=lambda spec: None)
    assert v.status == NOT_MEASURED and v.contexts[0].evidence == HOST_MEMORY


def test_capped_records_are_judged_on_their_peak_and_oom():
    # the cap is the simulated card (the budget); a finished case is still judged on its NVML peak
    capped = gpu_generate("fp16", 128, peak=7 * GiB, cap=8 * GiB)
    oom = gpu_generate("fp16", 1024, status="oom", cap=8 * GiB)
    assert evidence_of(capped) == MEASURED_GPU_CAPPED and evidence_of(oom) == MEASURED_GPU_CAPPED
    v = judge_claim(FP16_8GIB, [capped, oom])
    assert v.evidence == MEASURED_GPU_CAPPED
    assert [c.text for c in v.contexts] == ["fits under the cap", "does not fit under the cap (out of memory)"]
    assert v.text == "holds up to 128 tokens of context, fails from 1024 under a per-process memory cap"


def test_capped_case_over_budget_outside_the_allocator_does_not_fit():
    over = gpu_generate("fp16", 128, peak=8 * GiB + 200 * MiB, cap=8 * GiB)
    v = judge_claim(FP16_8GIB, [over])
    assert v.contexts[0].fits is False and v.status == FAILS


def test_oom_on_a_card_smaller_than_the_budget_is_inconclusive():
    small = gpu_generate("fp16", 1024, status="oom", cap=6 * GiB)
    ok = gpu_generate("fp16", 128, peak=7 * GiB)
    v = judge_claim(FP16_8GIB, [ok, small])
    assert v.contexts[1].fits is None and "inconclusive" in v.contexts[1].text
    assert v.status == HOLDS and v.holds_up_to == 128


def test_failed_cases_are_gaps_not_verdicts():
    records = [gpu_generate("fp16", 128, peak=7 * GiB), gpu_generate("fp16", 1024, status="error")]
    v = judge_claim(FP16_8GIB, records)
    assert [c.context_tokens for c in v.contexts] == [128]
    assert v.status == HOLDS
    assert len(v.gaps) == 1 and "1024" in v.gaps[0] and "error" in v.gaps[0] and "boom" in v.gaps[0]


def test_matching_wildcards_and_batch_sizes():
    claim = Claim("any", "any", GiB, "1 GiB", batch_sizes=(1,))
    assert claim.matches(CaseSpec("bert-base", "fp16", "encode", 1, 128))
    assert not claim.matches(CaseSpec("bert-base", "fp16", "encode", 8, 128))
    assert FP16_8GIB.matches(CaseSpec("phi-3-mini", "fp16", "generate", 4, 128, 64))
    assert not FP16_8GIB.matches(CaseSpec("phi-3-mini", "int8", "generate", 1, 128, 64))
    assert not FP16_8GIB.matches(CaseSpec("phi-3-tiny", "fp16", "generate", 1, 128, 64))


def test_claims_file_errors_name_the_problem(tmp_path: Path):
    with pytest.raises(BadInputError, match="does not exist"):
        load_claims(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[claim]\nid = ", encoding="utf-8")
    with pytest.raises(BadInputError, match="not valid TOML"):
        load_claims(bad)
    with pytest.raises(BadInputError, match="no \\[\\[claim\\]\\] tables"):
        parse_claims("title = 'x'\n")
    with pytest.raises(BadInputError, match="unknown key\\(s\\) budjet"):
        parse_claims("[[claim]]\nid='a'\ntitle='t'\nbudjet='8 GiB'\n")
    with pytest.raises(BadInputError, match="has no 'budget'"):
        parse_claims("[[claim]]\nid='a'\ntitle='t'\n")
    with pytest.raises(BadInputError, match="more than once"):
        parse_claims("[[claim]]\nid='a'\ntitle='t'\nbudget='1 GiB'\n[[claim]]\nid='a'\ntitle='u'\nbudget='2 GiB'\n")


def test_user_claims_file_extends_the_defaults(tmp_path: Path):
    path = tmp_path / "mine.toml"
    path.write_text(
        "[[claim]]\nid = 'nf4-4gb'\ntitle = 'nf4 under 4 GiB'\nbudget = '4 GiB'\nmodel = 'phi-3-mini'\n"
        "precisions = ['nf4']\nscenario = 'generate'\ncontexts = [128, 4032]\n",
        encoding="utf-8",
    )
    (claim,) = load_claims(path)
    assert claim.budget_bytes == 4 * GiB and claim.contexts == (128, 4032)
    v = judge_claim(claim, gpu_suite())
    # nf4 peak = 512 MiB + 2.29e9 + 393,216 B x (L + 64) + 80 KiB x L + 96 MiB:
    # 3.66 GiB at 2048 tokens (fits 4 GiB), 4.11 GiB at 3072 (does not). Records between the claim's
    # expected contexts are judged too.
    assert (v.status, v.holds_up_to, v.fails_from) == (HOLDS_UP_TO, 2048, 3072)
    assert [c.context_tokens for c in v.contexts] == [128, 1024, 2048, 3072, 4032]
