"""The environment envelope records the CUDA the driver supports beside the CUDA torch was built for."""

from __future__ import annotations

import sys

from fake_nvml import FakeNVML, FakeNVMLError

from bench.measure.cuda_usability import DriverFacts, GpuDetection, TorchFacts
from bench.measure.environment import collect_environment


def test_envelope_takes_the_driver_cuda_from_the_detection(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNVML(init_error=FakeNVMLError(12)))
    detection = GpuDetection(
        DriverFacts("nvml", ("NVIDIA H200",), "550.54.15", "12.4"), TorchFacts("2.6.0+cu124", "12.4", True, 1), "usable"
    )
    env = collect_environment("smoke", [], detection=detection)
    assert env["cuda_driver"] == "12.4" and env["driver"] == "550.54.15"
    assert "cuda" in env  # torch's build, from the torch installed here


def test_envelope_asks_the_driver_when_no_detection_is_given(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNVML(cuda_driver_version=12080))
    env = collect_environment("smoke", [])
    assert env["cuda_driver"] == "12.8" and env["driver"] == "550.54.15"
    assert [g["name"] for g in env["gpus"]] == ["NVIDIA H200"]


def test_envelope_without_a_driver(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNVML(init_error=FakeNVMLError(12)))
    monkeypatch.setenv("PATH", "")  # no nvidia-smi either
    env = collect_environment("smoke", [])
    assert env["cuda_driver"] is None
