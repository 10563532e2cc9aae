import ctypes.util
import json
import os

import pytest
from fake_nvml import GIB, FakeGPU, FakeNVML, FakeNVMLError, not_supported

from bench.measure.telemetry.gpu_state import inspect_gpus, parse_visible_devices

ME = 1000


@pytest.fixture(autouse=True)
def _no_visible_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_no_driver_gives_an_empty_list_and_the_reason():
    nvml = FakeNVML(init_error=FakeNVMLError(9))
    assert inspect_gpus(nvml, pid=ME) == {
        "gpus": [],
        "nvml": "unavailable: FakeNVMLError: Driver Not Loaded",
        "warnings": [],
    }


def test_healthy_gpu_has_its_facts_and_no_warnings():
    nvml = FakeNVML([FakeGPU(used_bytes=[600 * 2**20], processes=[[(ME, 500 * 2**20)]])])
    state = inspect_gpus(nvml, pid=ME, visible=None)
    assert state["nvml"] == "ok" and state["driver"] == "550.54.15"
    (gpu,) = state["gpus"]
    assert gpu["index"] == 0 and gpu["cuda_index"] == 0
    assert gpu["name"] == "NVIDIA H200"
    assert gpu["uuid"] == "GPU-8d1f3c2a-0000-4000-8000-000000000001"
    assert gpu["pci_bus_id"] == "00000000:3B:00.0"
    assert gpu["memory_bytes"] == 150_754_820_096
    assert gpu["memory_used_bytes"] == 600 * 2**20
    assert gpu["persistence_mode"] is True
    assert gpu["compute_mode"] == "default"
    assert gpu["power_limit_w"] == gpu["default_power_limit_w"] == 700.0
    assert gpu["mig_mode"] == {"current": False, "pending": False}
    assert gpu["ecc_volatile_uncorrected"] == 0
    assert gpu["other_processes"] == []  # our own process is not "other"
    assert gpu["unavailable"] == {}
    assert state["warnings"] == []
    assert nvml.init_calls == nvml.shutdown_calls == 1
    json.dumps(state)


def test_shared_gpu_warning_counts_compute_and_graphics_processes():
    gpu = FakeGPU(
        processes=[[(2001, int(2.6 * GIB)), (ME, GIB)]],
        graphics_processes=[[(2002, int(0.5 * GIB))]],
    )
    state = inspect_gpus(FakeNVML([gpu]), pid=ME, visible=None)
    assert state["gpus"][0]["other_processes"] == [
        {"pid": 2001, "used_bytes": int(2.6 * GIB)},
        {"pid": 2002, "used_bytes": int(0.5 * GIB)},
    ]
    assert state["warnings"] == [
        "GPU 0 (NVIDIA H200) is shared with 2 other processes using 3.1 GiB: speed and memory results may be disturbed"
    ]


def test_each_bad_setting_is_warned_about():
    gpu = FakeGPU(
        persistence=[0],
        compute_mode=[2],
        power_limit_mw=[250_000],
        default_power_limit_mw=[350_000],
        mig=[[1, 0]],
        ecc=[3],
        name="NVIDIA A100-SXM4-40GB",
    )
    warnings = inspect_gpus(FakeNVML([gpu]), pid=ME, visible=None)["warnings"]
    assert len(warnings) == 6
    assert warnings[0].startswith("GPU 0 (NVIDIA A100-SXM4-40GB) has persistence mode off")
    assert "compute mode 'prohibited'" in warnings[1]
    assert "power limit is 250 W, below its default 350 W" in warnings[2]
    assert "has MIG enabled" in warnings[3]
    assert "MIG mode change pending" in warnings[4]
    assert "reports 3 uncorrected ECC errors" in warnings[5]


def test_unsupported_queries_are_none_with_reasons_and_no_warning():
    gpu = FakeGPU(
        mig=[not_supported()],
        ecc=[not_supported()],
        default_power_limit_mw=[not_supported()],
        persistence=[FakeNVMLError(4)],
        graphics_processes=[not_supported()],
    )
    state = inspect_gpus(FakeNVML([gpu]), pid=ME, visible=None)
    (g,) = state["gpus"]
    assert g["mig_mode"] is None and g["ecc_volatile_uncorrected"] is None and g["persistence_mode"] is None
    assert g["unavailable"] == {
        "persistence_mode": "FakeNVMLError: Insufficient Permissions",
        "default_power_limit_w": "FakeNVMLError: Not Supported",
        "mig_mode": "FakeNVMLError: Not Supported",
        "ecc_volatile_uncorrected": "FakeNVMLError: Not Supported",
    }
    assert g["other_processes"] == []  # compute processes still listed when graphics are not supported
    assert state["warnings"] == []


def test_visible_devices_select_and_renumber_gpus():
    gpus = [
        FakeGPU(uuid="GPU-aaaa-1", name="NVIDIA GeForce RTX 3060"),
        FakeGPU(uuid="GPU-bbbb-2", name="NVIDIA GeForce RTX 4090"),
    ]
    state = inspect_gpus(FakeNVML(gpus), pid=ME, visible="1")
    assert [(g["index"], g["cuda_index"], g["name"]) for g in state["gpus"]] == [(1, 0, "NVIDIA GeForce RTX 4090")]
    state = inspect_gpus(FakeNVML(gpus), pid=ME, visible="GPU-bbbb,GPU-aaaa")
    assert [(g["index"], g["cuda_index"]) for g in state["gpus"]] == [(1, 0), (0, 1)]
    state = inspect_gpus(FakeNVML(gpus), pid=ME, visible="0,7,1")  # CUDA stops at the invalid entry
    assert [g["index"] for g in state["gpus"]] == [0]
    assert "entry '7'" in state["warnings"][-1]
    state = inspect_gpus(FakeNVML(gpus), pid=ME, visible="-1")
    assert state["gpus"] == [] and "hides every GPU" in state["warnings"][-1]


def test_parse_visible_devices():
    assert parse_visible_devices(None) is None
    assert parse_visible_devices("") == []
    assert parse_visible_devices("0, 2") == ["0", "2"]
    assert parse_visible_devices("1,,2") == ["1"]
    assert parse_visible_devices("GPU-ab12,-1,0") == ["GPU-ab12"]


def _nvidia_driver_here() -> bool:
    """An NVIDIA driver is installed: its NVML library or its control device exists."""
    return bool(ctypes.util.find_library("nvidia-ml") or os.path.exists("/dev/nvidiactl"))


def test_real_pynvml_without_a_driver_gives_the_reason_and_no_gpus():
    if _nvidia_driver_here():
        pytest.skip("an NVIDIA driver is installed here; test_real_gpu_state_matches_torch covers this path")
    state = inspect_gpus()
    # pynvml raises NVMLError_LibraryNotFound ("NVML Shared Library Not Found") where libnvidia-ml is missing
    assert state == {
        "gpus": [],
        "nvml": "unavailable: NVMLError_LibraryNotFound: NVML Shared Library Not Found",
        "warnings": [],
    }
    json.dumps(state)


def cuda_torch_or_skip():
    """torch with CUDA, else skip (without paying for a torch import where no NVIDIA driver exists)."""
    if not (os.path.exists("/dev/nvidiactl") or ctypes.util.find_library("nvidia-ml")):
        pytest.skip("needs a CUDA GPU (no NVIDIA driver here)")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return torch


@pytest.mark.gpu
def test_real_gpu_state_matches_torch():
    torch = cuda_torch_or_skip()
    state = inspect_gpus()
    assert state["nvml"] == "ok"
    assert len(state["gpus"]) == torch.cuda.device_count()
    gpu = state["gpus"][0]
    props = torch.cuda.get_device_properties(0)
    assert gpu["name"] == props.name
    assert gpu["memory_bytes"] >= props.total_memory > 2**30
    assert 0 < gpu["memory_used_bytes"] < gpu["memory_bytes"]  # the driver keeps some memory on every card
    # a real card reports a power limit (tens to hundreds of watts) and a driver version "major.minor[.patch]"
    assert gpu["power_limit_w"] is not None and 10 <= gpu["power_limit_w"] <= 2000, gpu["unavailable"]
    assert state["driver"] and state["driver"].split(".")[0].isdigit()
    uuid = getattr(props, "uuid", None)
    if uuid is not None and "CUDA_VISIBLE_DEVICES" not in os.environ:
        assert gpu["uuid"].endswith(str(uuid))
