"""bitsandbytes as a run meets it: no hub lookup printed, the hub offline in workers, the 4-bit path recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.measure.worker_process import hub_offline_for_workers

ROOT = Path(__file__).resolve().parents[2]
HUB_LINE = "kernels-community"  # in every message bitsandbytes 0.50.2 and kernels log about the hub kernel


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    full = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"} | {"PYTHONPATH": path} | env
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=300)


def _has_avx512_bf16() -> bool:
    from bench.measure.bnb_runtime import has_avx512_bf16

    return has_avx512_bf16()


def test_workers_stay_offline_unless_downloads_are_allowed(monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub_offline_for_workers(allow_download=True)
    assert "HF_HUB_OFFLINE" not in os.environ
    hub_offline_for_workers(allow_download=False)
    assert os.environ["HF_HUB_OFFLINE"] == "1"


@pytest.mark.slow
def test_the_quiet_import_prints_nothing_and_keeps_what_was_logged() -> None:
    plain = _python("import bitsandbytes", HF_HUB_OFFLINE="1")
    quiet = _python(
        "import json; from bench.measure.bnb_runtime import import_bitsandbytes as quiet; print(json.dumps(quiet()))",
        HF_HUB_OFFLINE="1",
    )
    assert quiet.returncode == 0, quiet.stderr
    assert HUB_LINE not in quiet.stderr and HUB_LINE not in quiet.stdout.splitlines()[:-1]
    kept = json.loads(quiet.stdout.splitlines()[-1])
    if _has_avx512_bf16():  # bitsandbytes looks the kernel up only on such CPUs: there the plain import prints it
        assert HUB_LINE in plain.stderr
        assert any(HUB_LINE in m for m in kept)
    else:
        assert kept == []


@pytest.mark.slow
def test_a_run_prints_no_hub_lookup_and_records_the_path(tmp_path) -> None:
    """``bench run`` with HF_HUB_OFFLINE unset in the caller's environment: the workers are offline, nothing about
    the hub kernel reaches the terminal, and the record names bitsandbytes' 4-bit path."""
    out = tmp_path / "run"
    args = [
        "run",
        "--model",
        "phi-3-tiny",
        "--precision",
        "nf4",
        "--device",
        "cpu",
        "--context",
        "16",
        "--new-tokens",
        "2",
    ]
    args += ["--repetitions", "1", "--out", str(out), "--no-report", "--quiet"]
    done = _python(f"import sys; from bench.cli import main; sys.exit(main({args!r}))")
    assert done.returncode == 0, done.stderr[-2000:]
    assert HUB_LINE not in done.stderr and "Failed to load" not in done.stderr
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    q = record["quantization"]
    assert q["bnb_4bit_kernel_path"] == ("cpu-avx512bf16-packed" if _has_avx512_bf16() else "cpu-dequantize")
    assert record["prediction"]["predicted_weights_bytes"] == record["memory"]["weights_bytes"]
    if _has_avx512_bf16():
        assert q["bnb_cpu_hub_kernel"] is False  # offline: bitsandbytes runs its own kernel
