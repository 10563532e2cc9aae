"""``bench run --memory-cap`` takes a card name as well as a size in GiB: an unknown name is a one-line error
listing close matches (exit 2), a known one is read before the run is checked for a GPU."""

from __future__ import annotations

import pytest

from bench.cli import main


def test_run_memory_cap_unknown_card_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    out = tmp_path / "out"
    argv = ["run", "--model", "phi-3-tiny", "--device", "cpu", "--memory-cap", "GeForce RTX 4061", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "GeForce RTX 4060" in err and "neither a size" in err
    assert not out.exists()


def test_run_memory_cap_card_name_is_read_then_needs_a_gpu(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    argv = ["run", "--model", "phi-3-tiny", "--device", "cpu", "--memory-cap", "GeForce RTX 4060",
            "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "--memory-cap simulates a smaller GPU and needs --device cuda" in capsys.readouterr().err
