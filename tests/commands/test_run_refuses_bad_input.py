"""`bench run` refuses input it would otherwise silently change: --new-tokens 0, --memory-cap <= 0, a corrupt
checkpoint; and a run in which every case failed does not exit 0."""

import json

import pytest

from bench.cli import main
from bench.results.record import Record


def run(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("tokens", ["0", "-3"])
def test_new_tokens_below_one_is_refused_not_replaced_by_the_default(capsys, tmp_path, tokens):
    out = tmp_path / "out"
    code, err = run(
        capsys, "run", "--model", "phi-3-tiny", "--device", "cpu", "--new-tokens", tokens, "--out", str(out)
    )
    assert code == 2 and len(err.splitlines()) == 1
    assert f"--new-tokens {tokens}: a generate case needs at least 1 new token (TTFT) and 2 for decode" in err
    assert not out.exists()


@pytest.mark.parametrize("cap", ["0", "-1", "0.0"])
def test_memory_cap_of_zero_or_less_is_refused_not_taken_as_no_cap(capsys, tmp_path, cap):
    out = tmp_path / "out"
    code, err = run(capsys, "run", "--model", "phi-3-tiny", "--device", "cpu", "--memory-cap", cap, "--out", str(out))
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("bench: error:")
    assert "--memory-cap" in err and "positive" in err
    assert not out.exists()


def _checkpoint(tmp_path, weights: bytes):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text('{"model_type": "phi3"}')
    (ckpt / "model.safetensors").write_bytes(weights)
    return ckpt


def test_a_corrupt_safetensors_file_is_named_before_the_run(capsys, tmp_path):
    ckpt = _checkpoint(tmp_path, (10**12).to_bytes(8, "little") + b'{"a": ')  # header length past the end
    out = tmp_path / "out"
    code, err = run(capsys, "run", "--model-path", str(ckpt), "--device", "cpu", "--out", str(out))
    assert code == 2 and len(err.splitlines()) == 1
    assert f"{ckpt / 'model.safetensors'} is not a valid safetensors file" in err
    assert not out.exists()


@pytest.mark.slow
def test_a_truncated_real_checkpoint_is_refused_with_exit_2(capsys, tmp_path):
    from bench.config.models import resolve_source
    from bench.measure.loader import build_random

    ckpt = tmp_path / "my-phi"
    build_random(resolve_source("phi-3-tiny", "random"), "float32", "cpu").save_pretrained(str(ckpt))
    weights = ckpt / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # a copy cut short
    out = tmp_path / "run"
    argv = [
        "run",
        "--model-path",
        str(ckpt),
        "--device",
        "cpu",
        "--context",
        "8",
        "--new-tokens",
        "3",
        "--repetitions",
        "1",
        "--out",
        str(out),
        "--quiet",
        "--no-report",
    ]
    code, err = run(capsys, *argv)
    assert code == 2 and f"{weights} is not a valid safetensors file" in err
    assert not (out / "results.jsonl").exists()


def _fake_run_cases(statuses):
    def run_cases(cases, policy, options):
        from bench.results.run_folder import RunFolder

        folder = RunFolder(options.out_dir)
        records = []
        for spec, status in zip(cases, statuses, strict=False):
            record = Record(spec=spec, status=status, error=None if status == "ok" else f"RuntimeError: boom {status}")
            folder.append(record)
            records.append(record)
        return records

    return run_cases


@pytest.mark.parametrize(
    ("statuses", "code"),
    [(["error", "oom", "timeout"], 1), (["error", "ok", "oom"], 0), (["oom", "oom", "oom"], 1)],
)
def test_a_run_where_every_case_failed_exits_1(capsys, tmp_path, monkeypatch, statuses, code):
    from bench.measure import runner

    monkeypatch.setattr(runner, "run_cases", _fake_run_cases(statuses))
    argv = [
        "run",
        "--model",
        "bert-tiny",
        "--device",
        "cpu",
        "--context",
        "8",
        "--context",
        "16",
        "--context",
        "32",
        "--out",
        str(tmp_path / "out"),
        "--quiet",
        "--no-report",
    ]
    got, err = run(capsys, *argv)
    assert got == code
    lines = [line for line in err.splitlines() if "every case failed" in line]
    if code:
        assert len(lines) == 1 and "nothing was measured" in lines[0] and "boom" in lines[0]
    else:
        assert lines == []
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["status"] for x in lines) == sorted(statuses)
