"""Bad input: one clear line on stderr, exit status 2, nothing written."""

import pytest

from bench.cli import main
from bench.results.run_folder import RunFolder


def run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--model", "phi-9", "--device", "cpu"], "unknown model 'phi-9'"),
        (["run", "--model", "phi-3-tiny", "--precision", "int3", "--device", "cpu"], "unknown precision 'int3'"),
        (
            ["run", "--model", "phi-3-tiny", "--context", "4000", "--new-tokens", "200", "--device", "cpu"],
            "over the model's maximum of 4096",
        ),
        (["run", "--model", "bert-tiny", "--context", "600", "--device", "cpu"], "over the model's maximum of 512"),
        (["run", "--suite", "nope"], "unknown suite 'nope'"),
        (["run", "--model-path", "/nonexistent/ckpt", "--device", "cpu"], "does not exist"),
        (["run", "--model", "phi-3-tiny", "--context", "0", "--device", "cpu"], "must be at least 1"),
        (["run", "--model", "phi-3-tiny", "--device", "tpu"], "is not one of cpu, cuda, cuda:N"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, tmp_path, argv, message):
    out = tmp_path / "out"
    code, err = run(capsys, *argv, "--out", str(out))
    assert code == 2
    assert message in err and len(err.splitlines()) == 1 and err.startswith("bench: error:")
    assert not out.exists()


def test_cuda_refused_without_gpu(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, err = run(capsys, "run", "--model", "phi-3-tiny", "--device", "cuda", "--out", str(tmp_path / "o"))
    assert code == 2 and "no CUDA device is available" in err


def test_malformed_suite_file_names_key(capsys, tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text('[[group]]\nmodels = ["phi-3-tiny"]\nprecisions = ["fp32"]\n')
    code, err = run(capsys, "run", "--suite", str(suite), "--out", str(tmp_path / "o"))
    assert code == 2 and "missing key 'contexts'" in err


def test_incomplete_checkpoint(capsys, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text('{"model_type": "phi3"}')
    code, err = run(capsys, "run", "--model-path", str(ckpt), "--device", "cpu", "--out", str(tmp_path / "o"))
    assert code == 2 and "no *.safetensors" in err


def test_quantized_case_without_bitsandbytes(capsys, tmp_path, monkeypatch):
    import bench.config.precision

    monkeypatch.setattr(bench.config.precision, "bitsandbytes_available", lambda: False)
    code, err = run(
        capsys, "run", "--model", "phi-3-tiny", "--precision", "nf4", "--device", "cpu", "--out", str(tmp_path / "o")
    )
    assert code == 2 and "needs bitsandbytes" in err and "pip install bitsandbytes" in err


def test_unknown_option_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--colour", "red"])
    assert exc.value.code == 2


def test_existing_results_need_resume(capsys, tmp_path):
    RunFolder(tmp_path).create(with_results=True)
    code, err = run(capsys, "run", "--model", "bert-tiny", "--device", "cpu", "--out", str(tmp_path))
    assert code == 2 and "--resume" in err
