"""``bench run`` and ``bench profile`` on a GPU machine whose torch cannot use the GPU: exit 2 with the way out."""

from __future__ import annotations

import sys

import pytest
from fake_nvml import FakeNVML, FakeNVMLError

from bench.cli import main
from bench.measure import cuda_usability
from bench.measure.cuda_usability import TorchFacts


@pytest.fixture
def machine(monkeypatch):
    """Install a fake pynvml and fake torch facts; returns a setter and the count of torch inspections."""
    asked = []

    def setup(nvml: FakeNVML, torch: TorchFacts) -> list[int]:
        monkeypatch.setitem(sys.modules, "pynvml", nvml)
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

        def facts() -> TorchFacts:
            asked.append(1)
            return torch

        monkeypatch.setattr(cuda_usability, "torch_facts", facts)
        return asked

    return setup


def run(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


def test_gpu_with_cpu_only_torch_stops_with_exit_2(machine, capsys, tmp_path):
    machine(FakeNVML(), TorchFacts("2.13.0+cpu", None, False))
    code, err = run(capsys, "run", "--out", str(tmp_path / "out"))
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("bench: error: NVML sees 1 GPU (NVIDIA H200)")
    assert "driver 550.54.15, supports CUDA up to 12.4" in err and "torch 2.13.0+cpu is a CPU-only build" in err
    assert "--index-url https://download.pytorch.org/whl/cu124" in err and "--device cpu" in err
    assert "smoke" not in err
    assert not (tmp_path / "out").exists()


def test_driver_too_old_stops_an_explicit_gpu_suite_too(machine, capsys, tmp_path):
    machine(FakeNVML(cuda_driver_version=12040), TorchFacts("2.14.1+cu130", "13.0", False))
    code, err = run(capsys, "run", "--suite", "gpu", "--out", str(tmp_path / "out"))
    assert code == 2 and "built for CUDA 13.0, which this driver is too old for" in err
    assert not (tmp_path / "out").exists()


def test_device_cpu_on_purpose_skips_the_check(machine, capsys, tmp_path):
    asked = machine(FakeNVML(), TorchFacts("2.13.0+cpu", None, False))
    # --resume on a missing folder stops right after the suite is chosen: no case runs
    code, err = run(capsys, "run", "--device", "cpu", "--resume", "--out", str(tmp_path / "missing"))
    assert code == 2 and "--resume" in err and "NVML sees" not in err
    assert "--device cpu, so the CPU 'smoke' suite runs" in err
    assert asked == []


def test_no_gpu_chooses_the_smoke_suite_and_says_why(machine, capsys, tmp_path):
    machine(FakeNVML(init_error=FakeNVMLError(12)), TorchFacts("2.13.0+cpu", None, False))
    code, err = run(capsys, "run", "--resume", "--out", str(tmp_path / "missing"))
    assert code == 2 and "--resume" in err.splitlines()[-1]
    assert "no NVIDIA GPU was found" in err and "so the CPU 'smoke' suite runs" in err


def test_usable_gpu_chooses_the_gpu_suite(machine, capsys, tmp_path):
    machine(FakeNVML(), TorchFacts("2.6.0+cu124", "12.4", True, 1))
    code, err = run(capsys, "run", "--resume", "--out", str(tmp_path / "missing"))
    assert code == 2 and "a CUDA GPU is available, so the full 'gpu' suite runs" in err


def test_cuda_device_without_gpu_says_why(machine, capsys, tmp_path):
    machine(FakeNVML(init_error=FakeNVMLError(12)), TorchFacts("2.13.0+cpu", None, False))
    code, err = run(capsys, "run", "--model", "phi-3-tiny", "--device", "cuda", "--out", str(tmp_path / "o"))
    assert code == 2 and "no CUDA device is available on this machine (no NVIDIA GPU was found" in err


def test_profile_never_measures_the_cpu_in_place_of_an_unusable_gpu(machine, capsys, tmp_path):
    machine(FakeNVML(), TorchFacts("2.13.0+cpu", None, False))
    code, err = run(capsys, "profile", "--quick", "--out", str(tmp_path / "p.toml"))
    assert code == 2 and "torch 2.13.0+cpu is a CPU-only build" in err
    assert not (tmp_path / "p.toml").exists()
