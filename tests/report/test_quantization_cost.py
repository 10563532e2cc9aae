"""The report's quantization-cost table and plot, from hand-made records with quality blocks (not measurements)."""

from __future__ import annotations

import dataclasses

from report_records import cpu_generate, envelope, write_run

from bench.report.build import build_report
from bench.report.quantization_cost import cost_tables

QUALITY = {
    "fp16": {"kl_mean_nats": 0.0, "kl_p99_nats": 0.0, "top1_agreement": 1.0, "perplexity": 13.41},
    "int8": {"kl_mean_nats": 0.00096, "kl_p99_nats": 0.0082, "top1_agreement": 0.983, "perplexity": 13.43},
    "nf4": {"kl_mean_nats": 0.0669, "kl_p99_nats": 0.594, "top1_agreement": 0.867, "perplexity": 13.48},
}
COMMON = {
    "status": "ok",
    "reference_precision": "fp16",
    "reference_perplexity": 13.41,
    "eval_text": "declaration-of-independence",
    "eval_text_source": "Source: test",
    "eval_text_chars": 9695,
    "tokens_scored": 3933,
    "window_tokens": 512,
    "random_weights": False,
}


def _records(random: bool = False):
    out = []
    for precision, q in QUALITY.items():
        contexts = (64, 128) if precision != "int8" else (128,)  # int8 has only the larger shape
        for context in contexts:
            r = cpu_generate(precision, context, model="tiny", flags=())
            spec = r.spec.with_(weights="checkpoint:/ckpt/tiny")
            out.append(dataclasses.replace(r, spec=spec, quality={**COMMON, **q, "random_weights": random}))
    return out


def test_one_row_per_precision_at_a_shape_all_share():
    ((key, rows),) = cost_tables(_records()).items()
    assert key == ("tiny", "checkpoint:/ckpt/tiny", "eager")
    assert [r.precision for r in rows] == ["fp16", "int8", "nf4"]
    assert {r.shape for r in rows} == {(1, 128, 8)}  # 64 is missing for int8, so every row is at 128


def test_report_has_the_table_and_the_plot(tmp_path):
    run = write_run(tmp_path / "run", _records(), envelope(suite="adhoc"))
    files = build_report(run)
    md = files.markdown.read_text(encoding="utf-8")
    section = md.split("## What quantization costs on ", 1)[1].split("\n## ", 1)[0]
    assert "| fp16 (reference) | 30.0 |" in section
    assert "| nf4 | 18.0 |" in section and "| 0.0669 | 0.5940 | 86.7 | 13.480 |" in section
    assert "3,933 tokens scored" in section and "9,695 characters" in section
    assert "peak host RSS (not GPU memory)" in section
    assert any(p.name == "quality-cost-tiny-eager.png" for p in files.plots)
    assert "RANDOM WEIGHTS" not in section


def test_random_weights_are_said_in_the_caption(tmp_path):
    run = write_run(tmp_path / "run", _records(random=True), envelope(suite="adhoc"))
    md = build_report(run, make_plots=False).markdown.read_text(encoding="utf-8")
    assert "RANDOM WEIGHTS: the quality columns mean nothing" in md


def test_no_section_without_quality(tmp_path):
    run = write_run(tmp_path / "run", [cpu_generate("fp16", 64)], envelope(suite="adhoc"))
    assert "What quantization costs" not in build_report(run, make_plots=False).markdown.read_text(encoding="utf-8")


def test_an_encoder_table_shows_cosine_not_kl(tmp_path):
    from report_records import cpu_encode

    records = []
    for precision, cos in (("fp32", 1.0), ("int8", 0.99871)):
        r = cpu_encode(precision, 128, 1)
        q = {**COMMON, "reference_precision": "fp32", "embedding_cosine_mean": cos, "embedding_cosine_min": cos - 0.001}
        del q["reference_perplexity"]
        records.append(dataclasses.replace(r, quality=q))
    run = write_run(tmp_path / "run", records, envelope(suite="adhoc"))
    md = build_report(run, make_plots=False).markdown.read_text(encoding="utf-8")
    section = md.split("## What quantization costs on ", 1)[1].split("\n## ", 1)[0]
    assert "| Cosine mean | Cosine min |" in section and "KL mean" not in section
    assert "| 0.99871 | 0.99771 |" in section and "fp32 (reference)" in section
