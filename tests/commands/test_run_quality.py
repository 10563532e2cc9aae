"""`bench run --quality`: refused for random weights; on a trained local checkpoint every record carries its
precision's quality block and the report its table."""

from __future__ import annotations

import pytest

from bench.cli import main
from bench.results.run_folder import RunFolder


def run(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


def test_random_weights_are_refused_in_one_line(capsys, tmp_path):
    out = tmp_path / "out"
    code, err = run(capsys, "run", "--model", "phi-3-tiny", "--device", "cpu", "--quality", "--out", str(out))
    assert code == 2 and len(err.splitlines()) == 1
    assert "random weights" in err and "--model-path" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "words"),
    [(["--quality-tokens", "100"], "needs --quality"), (["--quality", "--quality-tokens", "1"], "at least 2")],
)
def test_bad_quality_options_are_refused(capsys, tmp_path, argv, words):
    out = tmp_path / "out"
    code, err = run(capsys, "run", "--model", "phi-3-tiny", "--device", "cpu", *argv, "--out", str(out))
    assert code == 2 and len(err.splitlines()) == 1 and words in err


@pytest.mark.slow
def test_quality_on_a_trained_checkpoint_reaches_records_and_report(capsys, tmp_path, trained_tiny_checkpoint):
    out = tmp_path / "run"
    code, err = run(
        capsys, "run", "--model-path", str(trained_tiny_checkpoint), "--precision", "fp16", "--precision", "int8",
        "--precision", "nf4", "--quality", "--quality-tokens", "200", "--context", "16", "--new-tokens", "4",
        "--repetitions", "1", "--device", "cpu", "--quiet", "--out", str(out),
    )
    assert code == 0, err
    assert "bench: quality pass took" in err
    records = {r.spec.precision: r for r in RunFolder(out).load_records()}
    assert set(records) == {"fp16", "int8", "nf4"}
    for precision, r in records.items():
        q = r.quality
        assert q["status"] == "ok" and q["reference_precision"] == "fp16" and q["tokens_scored"] == 200
        assert q["eval_text_chars"] > 5000 and q["wall_s"] > 0
        assert (q["kl_mean_nats"] == 0) == (precision == "fp16")
    assert records["fp16"].quality["top1_agreement"] == 1.0 and records["nf4"].quality["top1_agreement"] < 1.0
    assert records["nf4"].quality["quantized_linear_layers"] == 8
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## What quantization costs on " in md and "| fp16 (reference) |" in md and "| nf4 |" in md
