"""CUDA paths: checked against fakes here, and for real under the gpu marker."""

import pytest

from bench.config.spec import CaseSpec, TimingPolicy
from bench.measure.memory import CudaPeaks


class FakeCuda:
    def __init__(self):
        self.calls = []

    def synchronize(self, device):
        self.calls.append(("sync", device))

    def reset_peak_memory_stats(self, device):
        self.calls.append(("reset", device))

    def max_memory_allocated(self, device):
        return 1000

    def max_memory_reserved(self, device):
        return 2048


class FakeTorch:
    def __init__(self):
        self.cuda = FakeCuda()


def test_cuda_peaks_reset_before_and_read_after_the_region():
    torch = FakeTorch()
    with CudaPeaks("cuda:1", torch) as peaks:
        torch.cuda.calls.append(("work", None))
    assert torch.cuda.calls == [("sync", "cuda:1"), ("reset", "cuda:1"), ("work", None), ("sync", "cuda:1")]
    assert (peaks.peak_allocated_bytes, peaks.peak_reserved_bytes) == (1000, 2048)


def test_cuda_peaks_do_nothing_on_cpu():
    torch = FakeTorch()
    with CudaPeaks("cpu", torch) as peaks:
        pass
    assert torch.cuda.calls == [] and peaks.peak_reserved_bytes is None


def test_scenarios_sync_the_device_around_the_clock():
    from bench.measure.scenarios import run_encode

    events = []

    def clock():
        events.append("clock")
        return float(len(events))

    def model(**inputs):
        events.append("forward")

    latency = run_encode(model, {}, clock, lambda: events.append("sync"))
    assert events == ["sync", "clock", "forward", "sync", "clock"] and latency == 3.0


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "nf4"])
def test_real_gpu_case_records_every_memory_field(tmp_path, precision):
    from bench.measure.run_options import RunOptions
    from bench.measure.runner import run_cases

    spec = CaseSpec("phi-3-tiny", precision, "generate", 1, 64, 8, device="cuda")
    policy = TimingPolicy(warmup_runs=1, min_repetitions=2, max_repetitions=2)
    (record,) = run_cases([spec], policy, RunOptions(tmp_path, progress=False))
    assert record.status == "ok", record.error
    m = record.memory
    assert record.device.startswith("cuda:")
    assert m.peak_reserved_bytes >= m.peak_allocated_bytes > m.weights_bytes > 0
    assert m.baseline_bytes and m.nvml_process_peak_bytes > m.baseline_bytes
    assert m.kv_cache_bytes > 0 and m.device_total_bytes > 0
    tel = record.telemetry
    assert tel.get("energy_j") is not None and tel["energy_j"] > 0, tel.get("unavailable")
    assert tel.get("power_max_w") is not None and 10 < tel["power_max_w"] < 2000, tel.get("unavailable")
    assert tel.get("sm_clock_max_mhz") is not None and 100 < tel["sm_clock_max_mhz"] < 4000, tel.get("unavailable")


@pytest.mark.gpu
def test_real_gpu_load_and_user_view_are_recorded(tmp_path):
    """On a GPU: an nf4 load peaks above what it keeps, the pool after loading is not emptied, and the user
    view's nvidia-smi reading (NVML process after one generation) holds the pool plus the CUDA context."""
    from bench.measure.run_options import RunOptions
    from bench.measure.runner import run_cases

    spec = CaseSpec("phi-3-tiny", "nf4", "generate", 1, 64, 8, device="cuda")
    policy = TimingPolicy(warmup_runs=1, min_repetitions=2, max_repetitions=2)
    (record,) = run_cases([spec], policy, RunOptions(tmp_path, progress=False))
    assert record.status == "ok", record.error
    load, view, m = record.load, record.user_view, record.memory
    assert load.load_s > 0 and load.loaded_for_key == spec.key
    assert load.load_peak_allocated_bytes >= load.load_allocated_after_bytes > 0
    assert load.load_reserved_after_bytes >= load.load_allocated_after_bytes
    assert load.load_nvml_process_bytes >= load.load_reserved_after_bytes + (m.baseline_bytes or 0) // 2
    assert view.recorded, view.error
    assert view.reserved_high_water_bytes >= view.peak_allocated_bytes >= load.load_peak_allocated_bytes
    assert view.nvml_process_after_bytes >= view.reserved_after_bytes
