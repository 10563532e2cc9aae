"""``bench fit``: the capacity table at 80 columns, its JSON, its plot, and the search checked against the
predictor on both sides of each boundary and against a hand-counted bound."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.config.hardware import get_profile
from bench.predict.memory import predict_memory

CARD = "GeForce RTX 4060"


def test_fit_prints_the_table_at_80_columns(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    plot = tmp_path / "fit.png"
    assert main(["fit", "--model", "phi-3-mini", "--gpu", CARD, "--plot", str(plot)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80
    rows = [line.split() for line in lines if line.startswith(("fp16 ", "int8 ", "nf4 ", "nf4-dq "))]
    assert {r[0] for r in rows} == {"fp16", "int8", "nf4", "nf4-dq"}
    assert any("predicted" in line for line in lines)
    assert plot.stat().st_size > 10_000


def test_largest_context_is_a_boundary_of_the_prediction(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "--model", "phi-3-mini", "--gpu", CARD, "--batch", "1", "--batch", "4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    card = get_profile(CARD)
    usable = card.usable_memory_bytes
    assert data["usable_bytes"] == usable
    for row in data["largest_context"]:
        prompt = row["max_context_tokens"] - row["new_tokens"]
        if row["limited_by"] != "memory":
            continue
        args = (row["precision"], prompt, row["batch_size"], row["new_tokens"], card)
        assert predict_memory("phi-3-mini", *args, nvidia_smi=False).fit_bytes <= usable
        beyond = (row["precision"], prompt + 1, row["batch_size"], row["new_tokens"], card)
        assert predict_memory("phi-3-mini", *beyond, nvidia_smi=False).fit_bytes > usable
    # fp16 at batch 1, by hand: 3,821,079,552 x 2 weight bytes + 512 MiB assumed context leave at most
    # (usable - both) / 393,216 KV bytes per token (2 x 32 layers x 3072 x 2 bytes)
    fp16 = next(r for r in data["largest_context"] if r["precision"] == "fp16" and r["batch_size"] == 1)
    bound = (usable - 3_821_079_552 * 2 - 512 * 2**20) // 393_216
    assert 0 < fp16["max_context_tokens"] <= bound
    batch = {b["precision"]: b["max_batch"] for b in data["largest_batch"]}
    assert batch["fp16"] == 0 and batch["nf4"] >= batch["int8"] >= 1


def test_fit_refuses_a_bad_batch(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "--model", "phi-3-mini", "--batch", "0"]) == 2
    assert "--batch" in capsys.readouterr().err
