"""`bench advise --max-kl`: a quality limit from measured records beside the memory and speed requirements."""

from __future__ import annotations

import dataclasses

import pytest
from synthetic_records import generate_record, write_run

from bench.cli import main
from bench.config.hardware import HardwareProfile
from bench.predict.advisor import Requirement, advise, cheapest
from bench.units import GiB

CARDS = [
    HardwareProfile(name=n, memory_bytes=g * GiB, memory_bandwidth_bytes_per_s=b * 1e9, compute_capability="8.6")
    for n, g, b in (("Small 6", 6, 300), ("Mid 12", 12, 360), ("Big 24", 24, 1000))
]
# measured KL of each precision against fp16 (numbers as a quality pass writes them)
KL = {"fp16": 0.0, "int8": 0.002, "nf4": 0.07}


def _records():
    out = []
    for precision, kl in KL.items():
        r = generate_record(precision=precision, flags=())
        out.append(dataclasses.replace(r, quality={"status": "ok", "kl_mean_nats": kl, "random_weights": False}))
    return out


def test_a_quality_limit_rules_out_the_precisions_that_exceed_it():
    fits = advise(CARDS, ["phi-3-mini"], list(KL), [4096], records=_records())
    assert {f.precision: f.kl_mean_nats for f in fits} == KL
    free = cheapest(fits, Requirement("phi-3-mini", 4096, tuple(KL)))
    assert (free.gpu, free.precision) == ("Small 6", "nf4")  # the smallest card holds only 4-bit
    limited = cheapest(fits, Requirement("phi-3-mini", 4096, tuple(KL), max_kl_nats=0.01))
    assert limited.precision in ("fp16", "int8") and limited.kl_mean_nats <= 0.01
    assert limited.memory_bytes > free.memory_bytes  # the quality limit costs a bigger card
    assert cheapest(fits, Requirement("phi-3-mini", 4096, ("nf4",), max_kl_nats=0.01)) is None


def test_a_precision_without_a_measured_kl_never_meets_a_limit():
    records = [r for r in _records() if r.spec.precision != "int8"]
    fits = advise(CARDS, ["phi-3-mini"], ["int8"], [4096], records=records)
    assert fits[0].kl_mean_nats is None
    assert cheapest(fits, Requirement("phi-3-mini", 4096, ("int8",), max_kl_nats=10.0)) is None
    assert cheapest(fits, Requirement("phi-3-mini", 4096, ("int8",))) is not None


def test_advise_command_reads_the_limit_and_the_records(tmp_path, capsys):
    run = write_run(tmp_path / "run", _records())
    code = main(["advise", "--context", "4096", "--max-kl", "0.01", "--results", str(run), "--gpu", "NVIDIA L4"])
    out = " ".join(capsys.readouterr().out.split())  # the terminal wraps lines at 80 columns
    assert code == 0
    assert "measured KL at most 0.01 nats" in out and "measured KL 0.0020 nats" in out


@pytest.mark.parametrize("argv", [["--max-kl", "0.01"], ["--max-kl", "-1"]])
def test_a_limit_no_record_can_answer_is_refused_in_one_line(tmp_path, capsys, argv):
    code = main(["advise", "--context", "4096", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--max-kl" in err
