"""GPU/driver detection with fakes: a GPU the driver sees but torch cannot use is named, with the way out."""

from __future__ import annotations

import pytest
from fake_nvml import FakeGPU, FakeNVML, FakeNVMLError, not_supported

from bench.measure import cuda_usability
from bench.measure.cuda_usability import (
    HIDDEN,
    MISMATCH,
    NO_GPU,
    USABLE,
    TorchFacts,
    cuda_version_text,
    detect_gpu,
    mismatch_message,
    torch_cuda_tag,
)

CPU_TORCH = TorchFacts("2.13.0+cpu", None, False)
CU130_TORCH = TorchFacts("2.14.1+cu130", "13.0", False)  # what pip resolves today, on a driver too old for it
CU124_TORCH = TorchFacts("2.6.0+cu124", "12.4", True, 1)


def no_smi(args):
    return None


def no_nvml() -> FakeNVML:
    return FakeNVML(init_error=FakeNVMLError(12))  # NVML shared library not found


@pytest.mark.parametrize(
    "code, text", [(12040, "12.4"), (13000, "13.0"), (11080, "11.8"), (12090, "12.9"), (0, None), (None, None)]
)
def test_cuda_version_text(code, text):
    assert cuda_version_text(code) == text


@pytest.mark.parametrize(
    "cuda, tag",
    [("12.4", "cu124"), ("12.5", "cu124"), ("12.2", "cu121"), ("13.0", "cu130"), ("12.9", "cu129"), ("11.4", None)],
)
def test_torch_index_tag_is_the_newest_the_driver_runs(cuda, tag):
    assert torch_cuda_tag(cuda) == tag


def test_nvml_sees_a_gpu_and_torch_is_a_cpu_build():
    d = detect_gpu(FakeNVML(), torch=CPU_TORCH, smi=no_smi, visible=None)
    assert d.verdict == MISMATCH and not d.usable
    assert d.driver.gpus == ("NVIDIA H200",) and d.driver.driver == "550.54.15" and d.driver.cuda_driver == "12.4"
    msg = mismatch_message(d)
    assert "NVML sees 1 GPU (NVIDIA H200), driver 550.54.15, supports CUDA up to 12.4" in msg
    assert "torch 2.13.0+cpu is a CPU-only build" in msg
    assert "pip install torch --index-url https://download.pytorch.org/whl/cu124" in msg
    assert "--device cpu" in msg and "\n" not in msg


def test_driver_too_old_for_torch_cuda():
    d = detect_gpu(FakeNVML(cuda_driver_version=12040), torch=CU130_TORCH, smi=no_smi, visible=None)
    assert d.verdict == MISMATCH
    msg = mismatch_message(d)
    assert "supports CUDA up to 12.4" in msg
    assert "torch 2.14.1+cu130 is built for CUDA 13.0, which this driver is too old for" in msg
    assert "--index-url https://download.pytorch.org/whl/cu124" in msg and "--device cpu" in msg


def test_cuda_fine():
    d = detect_gpu(FakeNVML(cuda_driver_version=12080), torch=CU124_TORCH, smi=no_smi, visible=None)
    assert d.verdict == USABLE and d.usable and d.driver.cuda_driver == "12.8"


def test_no_gpu_anywhere():
    d = detect_gpu(no_nvml(), torch=CPU_TORCH, smi=no_smi, visible=None)
    assert d.verdict == NO_GPU and d.driver.source == "none"
    assert "NVML Shared Library Not Found" in d.driver.reason


def test_nvml_without_gpus_is_no_gpu():
    assert detect_gpu(FakeNVML(gpus=[]), torch=CPU_TORCH, smi=no_smi, visible=None).verdict == NO_GPU


def test_gpus_hidden_by_cuda_visible_devices_are_not_a_mismatch():
    d = detect_gpu(FakeNVML(), torch=TorchFacts("2.6.0+cu124", "12.4", False), smi=no_smi, visible="")
    assert d.verdict == HIDDEN
    assert "hides every GPU" in cuda_usability.describe(d)


def test_nvidia_smi_answers_when_nvml_cannot():
    calls = []

    def smi(args):
        calls.append(list(args))
        if args:
            return "NVIDIA GeForce RTX 3060, 535.183.01\n"
        return "| NVIDIA-SMI 535.183.01   Driver Version: 535.183.01   CUDA Version: 12.2     |\n"

    d = detect_gpu(no_nvml(), torch=CU130_TORCH, smi=smi, visible=None)
    assert d.driver.source == "nvidia-smi" and d.driver.gpus == ("NVIDIA GeForce RTX 3060",)
    assert (d.driver.driver, d.driver.cuda_driver) == ("535.183.01", "12.2")
    assert d.verdict == MISMATCH
    msg = mismatch_message(d)
    assert msg.startswith("nvidia-smi sees 1 GPU") and "whl/cu121" in msg


def test_unknown_driver_cuda_still_names_an_index_option():
    d = detect_gpu(FakeNVML(cuda_driver_version=not_supported()), torch=CPU_TORCH, smi=no_smi, visible=None)
    assert d.driver.cuda_driver is None
    msg = mismatch_message(d)
    assert "CUDA version not reported" in msg and "--index-url https://download.pytorch.org/whl/" in msg


def test_compatible_versions_that_still_fail_do_not_ask_for_another_torch():
    torch = TorchFacts("2.6.0+cu124", "12.4", False)
    d = detect_gpu(FakeNVML(cuda_driver_version=12080), torch=torch, smi=no_smi, visible=None)
    assert d.verdict == MISMATCH
    msg = mismatch_message(d)
    assert "cannot initialise CUDA" in msg and "--index-url" not in msg and "--device cpu" in msg


def test_driver_too_old_for_any_torch_build_says_update_the_driver():
    d = detect_gpu(FakeNVML(cuda_driver_version=11040), torch=CU130_TORCH, smi=no_smi, visible=None)
    assert "Update the NVIDIA driver" in mismatch_message(d)


def test_nvml_is_shut_down_after_reading():
    nvml = FakeNVML(gpus=[FakeGPU(), FakeGPU(name="NVIDIA H100", uuid="GPU-2")])
    d = detect_gpu(nvml, torch=CPU_TORCH, smi=no_smi, visible=None)
    assert nvml.init_calls == nvml.shutdown_calls == 1
    assert "2 GPUs (NVIDIA H100, NVIDIA H200)" in mismatch_message(d)
