import ctypes.util
import json
import os
import time

import pytest
from fake_nvml import GIB, FakeClock, FakeGPU, FakeNVML, FakeNVMLError, FakeProcess, no_permission, not_supported

from bench.errors import BadInputError
from bench.measure.telemetry.nvml import NvmlReader, device_used_bytes
from bench.measure.telemetry.sampler import Telemetry, TelemetrySampler
from bench.measure.telemetry.summary import add_per_unit, quality_flags
from bench.results.telemetry_fields import GPU_SUMMARY_KEYS, SUMMARY_COLUMNS, reason_names

PID = 4321
SLOW = 3600.0  # a period so long the thread never samples: tests drive samples themselves


@pytest.fixture(autouse=True)
def _no_visible_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def run(sampler: TelemetrySampler, middle: int = 0) -> Telemetry:
    """start (one sample), ``middle`` extra samples, stop (one sample)."""
    sampler.start()
    for _ in range(middle):
        sampler.sample()
    return sampler.stop()


def gpu_sampler(gpu: FakeGPU, times: list[float], **kwargs) -> tuple[TelemetrySampler, FakeNVML]:
    nvml = FakeNVML([gpu])
    kwargs.setdefault("process", FakeProcess([1.0], [500_000_000]))
    kwargs.setdefault("identity", {"index": 0})
    sampler = TelemetrySampler("cuda:0", period_s=SLOW, nvml=nvml, clock=FakeClock(times), pid=PID, **kwargs)
    return sampler, nvml


def test_energy_is_the_counter_difference():
    gpu = FakeGPU(
        energy_mj=[5_000_000, 5_000_400, 5_001_500],
        power_mw=[100_000, 300_000, 200_000],
        processes=[[(PID, 3 * GIB)]],
    )
    sampler, nvml = gpu_sampler(gpu, [10.0, 10.0, 10.2, 10.5])
    tel = run(sampler, middle=1)
    s = tel.summary
    assert s["samples"] == 3
    assert s["duration_s"] == pytest.approx(0.5)
    assert s["energy_method"] == "counter"
    assert s["energy_j"] == pytest.approx(1.5)
    assert s["energy_counter_j"] == pytest.approx(1.5)
    # trapezoid kept alongside: 0.2*(100+300)/2 + 0.3*(300+200)/2 = 40 + 75
    assert s["energy_integrated_j"] == pytest.approx(115.0)
    assert s["power_mean_w"] == pytest.approx(200.0)
    assert s["power_max_w"] == pytest.approx(300.0)
    assert [r["energy_j"] for r in tel.timeline] == pytest.approx([0.0, 0.4, 1.5])
    assert [r["t_s"] for r in tel.timeline] == pytest.approx([0.0, 0.2, 0.5])
    assert nvml.init_calls == nvml.shutdown_calls == 1  # NVML counts inits: every init is paired
    json.dumps(s)  # JSON-serialisable as is


def test_energy_is_integrated_power_when_the_counter_is_not_supported():
    gpu = FakeGPU(energy_mj=[not_supported()], power_mw=[100_000, 200_000, 200_000, 100_000])
    sampler, _ = gpu_sampler(gpu, [0.0, 0.0, 0.5, 1.5, 2.0])
    tel = run(sampler, middle=2)
    s = tel.summary
    # 0.5*(100+200)/2 + 1.0*(200+200)/2 + 0.5*(200+100)/2 = 75 + 200 + 75
    assert s["energy_method"] == "integrated"
    assert s["energy_j"] == pytest.approx(350.0)
    assert s["energy_counter_j"] is None
    assert s["unavailable"]["energy"] == "FakeNVMLError: Not Supported"
    assert gpu.calls["energy_mj"] == 1  # an unsupported query is not repeated every sample
    assert gpu.calls["power_mw"] == 4
    per = add_per_unit(s, 70, "token")
    assert per["joules_per_token"] == pytest.approx(5.0)
    assert per["tokens_during_telemetry"] == 70
    assert "joules_per_token" not in s  # add_per_unit returns a new dict


def test_counter_that_does_not_advance_falls_back_to_integration():
    gpu = FakeGPU(energy_mj=[7_000], power_mw=[50_000])
    sampler, _ = gpu_sampler(gpu, [0.0, 0.0, 0.01])
    s = run(sampler).summary
    assert s["energy_counter_j"] == 0.0
    assert s["energy_method"] == "integrated"
    assert s["energy_j"] == pytest.approx(0.5)  # 50 W for 10 ms


def test_power_cap_is_throttling_idle_is_not():
    gpu = FakeGPU(throttle=[0x0, 0x4, 0x1], util=[(95, 50), (95, 50), (0, 0)], sm_clock=[1980, 1755, 345])
    sampler, _ = gpu_sampler(gpu, [0.0, 0.0, 0.1, 0.2])
    s = run(sampler, middle=1).summary
    assert s["throttle_reasons"] == ["gpu_idle", "sw_power_cap"]
    assert s["throttled"] is True
    assert s["throttled_fraction"] == pytest.approx(1 / 3)
    assert (s["sm_clock_min_mhz"], s["sm_clock_max_mhz"]) == (345, 1980)
    assert (s["sm_clock_busy_min_mhz"], s["sm_clock_busy_max_mhz"]) == (1755, 1980)  # idle sample excluded
    assert quality_flags(s) == ("throttled", "clock_changed")  # (1980-1755)/1980 = 11% > 10%


def test_benign_reasons_do_not_flag():
    gpu = FakeGPU(throttle=[0x1, 0x2], sm_clock=[1980, 1900])
    sampler, _ = gpu_sampler(gpu, [0.0, 0.0, 0.1])
    s = run(sampler).summary
    assert s["throttle_reasons"] == ["gpu_idle", "applications_clocks_setting"]
    assert s["throttled"] is False
    assert quality_flags(s) == ()


def test_older_binding_uses_the_throttle_reasons_query():
    nvml = FakeNVML([FakeGPU(throttle=[0x40])])
    nvml.nvmlDeviceGetCurrentClocksEventReasons = None  # binding predates the rename
    nvml.nvmlDeviceGetCurrentClocksThrottleReasons = lambda h: h.next("throttle")
    sampler = TelemetrySampler("cuda:0", period_s=SLOW, nvml=nvml, clock=FakeClock([0.0]), pid=PID, identity={})
    s = run(sampler).summary
    assert s["throttle_reasons"] == ["hw_thermal_slowdown"]
    assert quality_flags(s) == ("throttled",)


def test_reason_names_decodes_unknown_bits():
    assert reason_names(0x4 | 0x80 | 0x1000) == ["sw_power_cap", "hw_power_brake_slowdown", "bit_0x1000"]
    assert reason_names(0) == []


def test_foreign_process_is_reported_and_ours_is_matched_by_pid():
    gpu = FakeGPU(
        processes=[[(PID, 1 * GIB), (777, 2 * GIB)], [(PID, 5 * GIB), (777, 3 * GIB)], [(PID, 4 * GIB)]],
    )
    sampler, _ = gpu_sampler(gpu, [0.0, 0.0, 0.1, 0.2])
    tel = run(sampler, middle=1)
    assert tel.nvml_process_peak_bytes == 5 * GIB
    assert tel.nvml_method == "process"
    assert tel.summary["nvml_pid_match"] == "pid"
    assert tel.summary["foreign_processes"] == [{"pid": 777, "max_used_bytes": 3 * GIB}]
    assert quality_flags(tel.summary) == ("shared_gpu",)


def test_container_pid_single_process_on_the_gpu_is_ours():
    gpu = FakeGPU(processes=[[(99001, 6 * GIB)], [(99001, 7 * GIB)]])
    sampler, _ = gpu_sampler(gpu, [0.0, 0.0, 0.1])
    tel = run(sampler)
    assert tel.nvml_process_peak_bytes == 7 * GIB
    assert tel.nvml_method == "process"
    assert tel.summary["nvml_pid_match"] == "single_process"
    assert tel.summary["foreign_processes"] == []


def test_container_pid_with_baseline_uses_device_used_memory():
    gpu = FakeGPU(
        processes=[[(99001, 6 * GIB), (99002, 1 * GIB)]],
        used_bytes=[8 * GIB, 10 * GIB, 9 * GIB],
    )
    sampler, _ = gpu_sampler(gpu, [0.0, 0.0, 0.1, 0.2], baseline_used_bytes=2 * GIB)
    tel = run(sampler, middle=1)
    assert tel.nvml_method == "device_used"
    assert tel.nvml_process_peak_bytes == 8 * GIB  # 10 GiB peak used minus 2 GiB before we started
    assert tel.summary["device_used_peak_bytes"] == 10 * GIB
    assert len(tel.summary["foreign_processes"]) == 2  # cannot tell which one is us: both listed
    assert "shared_gpu" in quality_flags(tel.summary)


def test_container_pid_without_baseline_gives_none_with_reason():
    gpu = FakeGPU(processes=[[(99001, 6 * GIB), (99002, 1 * GIB)]])
    sampler, _ = gpu_sampler(gpu, [0.0, 0.0, 0.1])
    tel = run(sampler)
    assert tel.nvml_process_peak_bytes is None
    assert tel.nvml_method is None
    assert "PID 4321 is not among the 2 process(es)" in tel.summary["unavailable"]["nvml_process_bytes"]
    assert "gpu_processes" in tel.timeline[0] and "gpu_processes" not in tel.timeline[1]  # stored when it changes


def test_init_failure_leaves_gpu_fields_none_with_reason():
    nvml = FakeNVML(init_error=FakeNVMLError(9))
    proc = FakeProcess([2.0, 2.5], [100_000_000, 150_000_000])
    sampler = TelemetrySampler("cuda:0", period_s=SLOW, nvml=nvml, clock=FakeClock([0.0, 0.0, 1.0]), process=proc)
    tel = run(sampler)
    s = tel.summary
    assert s["unavailable"]["gpu"] == "NVML unavailable: FakeNVMLError: Driver Not Loaded"
    assert all(s[k] is None for k in GPU_SUMMARY_KEYS if k != "foreign_processes")
    assert tel.nvml_process_peak_bytes is None and tel.nvml_method is None
    assert tel.host_peak_rss_bytes == 150_000_000  # the host side still works
    assert s["cpu_util_mean_pct"] == pytest.approx(50.0)


def test_permission_and_transient_errors_keep_sampling():
    gpu = FakeGPU(
        temperature=[no_permission()],
        power_mw=[FakeNVMLError(15), 250_000, 260_000],  # "GPU is lost" once, then readings again
    )
    sampler, _ = gpu_sampler(gpu, [0.0, 0.0, 0.1, 0.2])
    s = run(sampler, middle=1).summary
    assert s["temperature_max_c"] is None
    assert s["unavailable"]["temperature"] == "FakeNVMLError: Insufficient Permissions"
    assert gpu.calls["temperature"] == 1
    assert s["unavailable"]["power"] == "FakeNVMLError: GPU is lost (in 1 of 3 samples)"
    assert s["power_max_w"] == pytest.approx(260.0)
    assert s["energy_j"] == pytest.approx(0.1 * (250 + 260) / 2)  # integrated over the samples that have power


def test_missing_binding_function_is_a_reason_not_a_crash():
    nvml = FakeNVML([FakeGPU()])
    nvml.nvmlDeviceGetTotalEnergyConsumption = None
    sampler = TelemetrySampler("cuda:0", period_s=SLOW, nvml=nvml, clock=FakeClock([0.0, 0.0, 1.0]), identity={})
    s = run(sampler).summary
    assert "not in this NVML binding" in s["unavailable"]["energy"]
    assert s["energy_method"] == "integrated"


def test_cpu_mode_samples_this_process():
    proc = FakeProcess([10.0, 10.5, 11.5], [100 * 2**20, 300 * 2**20, 200 * 2**20])
    sampler = TelemetrySampler("cpu", period_s=SLOW, clock=FakeClock([0.0, 0.0, 1.0, 2.0]), process=proc)
    tel = run(sampler, middle=1)
    s = tel.summary
    assert [r.get("cpu_util_pct") for r in tel.timeline] == [None, pytest.approx(50.0), pytest.approx(100.0)]
    assert s["cpu_util_mean_pct"] == pytest.approx(75.0)
    assert s["cpu_util_max_pct"] == pytest.approx(100.0)
    assert tel.host_peak_rss_bytes == s["host_peak_rss_bytes"] == 300 * 2**20
    assert tel.nvml_process_peak_bytes is None
    assert s["energy_j"] is None and s["throttled"] is None
    assert s["unavailable"] == {"gpu": "device is cpu: no GPU telemetry"}
    assert set(GPU_SUMMARY_KEYS) <= set(s)  # same columns on every device


def test_real_thread_samples_and_stops_promptly():
    sampler = TelemetrySampler("cpu", period_s=0.005)
    sampler.start()
    time.sleep(0.1)
    tel = sampler.stop()
    assert tel.summary["samples"] >= 5
    assert tel.host_peak_rss_bytes > 10 * 2**20  # a Python process with numpy and scipy loaded
    ts = [r["t_s"] for r in tel.timeline]
    assert ts == sorted(ts)

    slow = TelemetrySampler("cpu", period_s=30.0)
    started = time.monotonic()
    with slow:
        pass
    assert time.monotonic() - started < 2.0  # stop() does not wait out the period
    assert slow.result.summary["samples"] == 2  # one at start, one at stop


def test_mark_tags_a_sample():
    sampler = TelemetrySampler(
        "cpu", period_s=SLOW, clock=FakeClock([0.0, 0.0, 0.3, 0.4]), process=FakeProcess([1.0], [1])
    )
    sampler.start()
    sampler.mark("prefill_done")
    tel = sampler.stop()
    assert [r.get("mark") for r in tel.timeline] == [None, "prefill_done", None]
    assert tel.timeline[1]["t_s"] == pytest.approx(0.3)


def test_bad_device_and_period_are_rejected():
    with pytest.raises(BadInputError, match="'mps'"):
        TelemetrySampler("mps")
    with pytest.raises(BadInputError, match="positive"):
        TelemetrySampler("cpu", period_s=0)
    sampler = TelemetrySampler("cpu", period_s=SLOW)
    with pytest.raises(RuntimeError, match="before start"):
        sampler.stop()


def test_device_mapping_respects_visible_devices_and_uuid():
    gpus = [
        FakeGPU(uuid="GPU-aaaa1111-0000-0000-0000-000000000000", bus_id="00000000:1A:00.0"),
        FakeGPU(uuid="GPU-bbbb2222-0000-0000-0000-000000000000", bus_id="00000000:3B:00.0"),
        FakeGPU(uuid="GPU-cccc3333-0000-0000-0000-000000000000", bus_id="00000000:5C:00.0"),
    ]

    def matched(visible, identity):
        s = TelemetrySampler(
            "cuda:1", period_s=SLOW, nvml=FakeNVML(gpus), clock=FakeClock([0.0]), identity=identity, visible=visible
        )
        summary = run(s).summary
        return summary["nvml_index"], summary["nvml_device_match"], summary["gpu_uuid"]

    assert matched("2,0", {"index": 1})[:2] == (0, "visible_devices_index")  # cuda:1 is the 2nd entry: NVML 0
    assert matched("GPU-cccc,GPU-aaaa", {"index": 1})[:2] == (0, "visible_devices_uuid")  # UUID prefixes
    # torch's UUID (no "GPU-" prefix) wins over everything else
    assert matched("0,1", {"index": 1, "uuid": "cccc3333-0000-0000-0000-000000000000"})[:2] == (2, "uuid")
    assert matched(None, {"index": 1, "pci_bus_id": "00000000:1A:00.0"})[:2] == (0, "pci_bus_id")
    assert matched(None, {"index": 1}) == (1, "index", "GPU-bbbb2222-0000-0000-0000-000000000000")
    s = TelemetrySampler("cuda:1", period_s=SLOW, nvml=FakeNVML(gpus), identity={"index": 1}, visible="2")
    assert "cuda:1 is not visible" in run(s).summary["unavailable"]["gpu"]


def test_device_used_bytes_for_a_baseline():
    nvml = FakeNVML([FakeGPU(used_bytes=[3 * GIB])])
    assert device_used_bytes("cuda:0", nvml=nvml, identity={}) == 3 * GIB
    assert nvml.init_calls == nvml.shutdown_calls == 1
    assert device_used_bytes("cpu") is None
    assert device_used_bytes("cuda", nvml=FakeNVML(init_error=FakeNVMLError(12))) is None


def test_nvml_reader_reads_one_sample_from_an_injected_module_and_handle():
    gpu = FakeGPU(
        energy_mj=[2_000_000, 2_000_250],
        power_mw=[120_000],
        temperature=[not_supported()],
        processes=[[(PID, 3 * GIB), (777, 1 * GIB)]],
    )
    nvml = FakeNVML([gpu])
    reader = NvmlReader(nvml, gpu, pid=PID, match="index")
    first, second = {}, {}
    reader.read(first)
    reader.read(second)
    assert first["power_w"] == pytest.approx(120.0) and first["energy_j"] == 0.0
    assert second["energy_j"] == pytest.approx(0.25)  # relative to the first reading
    assert (first["sm_clock_mhz"], first["mem_clock_mhz"], first["gpu_util_pct"]) == (1980, 2619, 90.0)
    assert first["process_bytes"] == 3 * GIB and first["gpu_processes"] == [[PID, 3 * GIB], [777, 1 * GIB]]
    assert "gpu_processes" not in second  # unchanged process list
    assert "temperature_c" not in first and gpu.calls["temperature"] == 1  # not supported: asked once
    assert reader.failures.reasons(2) == {"temperature": "FakeNVMLError: Not Supported"}
    static, unavailable = reader.static_fields()
    assert static == {"nvml_device_match": "index", "gpu_uuid": gpu.uuid, "nvml_index": 0, "power_limit_w": 700.0}
    assert unavailable == {}


def test_add_per_unit_without_energy_or_units():
    assert add_per_unit({"energy_j": None}, 10, "sequence")["joules_per_sequence"] is None
    assert add_per_unit({"energy_j": 3.0}, 0, "token")["joules_per_token"] is None
    assert add_per_unit({"energy_j": 3.0}, 6, "sequence")["joules_per_sequence"] == pytest.approx(0.5)
    with pytest.raises(BadInputError):
        add_per_unit({"energy_j": 3.0}, -1, "token")
    assert {key for key, _ in SUMMARY_COLUMNS} >= {"joules_per_token", "power_mean_w", "energy_j"}


def cuda_torch_or_skip():
    """torch with CUDA, else skip (without paying for a torch import where no NVIDIA driver exists)."""
    if not (os.path.exists("/dev/nvidiactl") or ctypes.util.find_library("nvidia-ml")):
        pytest.skip("needs a CUDA GPU (no NVIDIA driver here)")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return torch


@pytest.mark.gpu
def test_real_nvml_on_a_cuda_device():
    torch = cuda_torch_or_skip()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()  # cached blocks from earlier tests would hide our allocation
    baseline = device_used_bytes("cuda:0")
    torch.cuda.init()
    with TelemetrySampler("cuda:0", period_s=0.01, baseline_used_bytes=baseline) as sampler:
        x = torch.empty(512 * 2**20, dtype=torch.uint8, device="cuda:0")  # 512 MiB
        a = torch.randn(4096, 4096, device="cuda:0")
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            a = a @ a
            a = a / a.norm()
        torch.cuda.synchronize()
    tel = sampler.result
    s = tel.summary
    assert s["nvml_device_match"] in ("uuid", "pci_bus_id")
    assert s["samples"] >= 10
    assert tel.nvml_method in ("process", "device_used")
    assert tel.nvml_process_peak_bytes >= 512 * 2**20
    # a card under half a second of 4096 x 4096 matmuls: real power, energy and clock readings
    assert s["power_max_w"] is not None and 10 < s["power_max_w"] < 2000, s.get("unavailable")
    assert s["energy_j"] is not None and 0 < s["energy_j"] < 2000 * s["duration_s"], s.get("unavailable")
    assert s["sm_clock_max_mhz"] is not None and 100 < s["sm_clock_max_mhz"] < 4000, s.get("unavailable")
    json.dumps(s)
    del x


def test_real_pynvml_without_a_driver_is_a_reason_not_a_crash():
    import ctypes.util

    if ctypes.util.find_library("nvidia-ml") or os.path.exists("/dev/nvidiactl"):
        pytest.skip("an NVIDIA driver is installed here; the gpu-marked test covers this path")
    tel = run(TelemetrySampler("cuda:0", period_s=SLOW))
    assert tel.summary["unavailable"]["gpu"].startswith("NVML unavailable: ")
    assert tel.nvml_process_peak_bytes is None
    assert tel.host_peak_rss_bytes > 0


def _png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_timeline_writes_pngs(tmp_path):
    from bench.report.timeline import plot_timeline

    gpu = FakeGPU(
        power_mw=[90_000, 650_000, 700_000, 120_000],
        sm_clock=[345, 1980, 1755, 345],
        throttle=[0x1, 0x0, 0x4, 0x1],
        processes=[[(PID, 1 * GIB)], [(PID, 9 * GIB)]],
    )
    sampler, _ = gpu_sampler(gpu, [0.0, 0.0, 0.1, 0.2, 0.3])
    sampler.start()
    sampler.sample()
    sampler.mark("decode")
    tel = sampler.stop()
    out = plot_timeline(tel.timeline, tmp_path / "plots" / "timeline.png", "phi-3-mini fp16 L=4096")
    assert out == tmp_path / "plots" / "timeline.png" and _png(out)

    cpu_rows = [{"t_s": 0.0, "rss_bytes": 2**30}, {"t_s": 0.1, "cpu_util_pct": 95.0, "rss_bytes": 2**31}]
    assert _png(plot_timeline(cpu_rows, tmp_path / "cpu.png", "bert-tiny cpu"))
    assert _png(plot_timeline([], tmp_path / "empty.png", "no samples"))
