"""The loading phase and the user view: the GPU path under a simulated caching allocator and fake NVML, the
CPU path with a real tiny model (host RSS)."""

import os
import time
from pathlib import Path

import pytest
from fake_nvml import FakeCudaAllocator, FakeGPU, FakeNVML, FakeProcess

from bench.measure.load_phase import LoadMeter
from bench.measure.telemetry.sampler import TelemetrySampler
from bench.measure.user_view import measure_user_view

PID = 4321
MB = 1024**2
CONTEXT = 500 * MB


class FakeTorch:
    def __init__(self, cuda: FakeCudaAllocator):
        self.cuda = cuda


def make_factory(allocator: FakeCudaAllocator, period_s: float = 3600.0):
    """The worker's sampler factory, reading NVML from a fake GPU whose process bytes follow the allocator."""
    gpu = FakeGPU(processes=[lambda: [(PID, allocator.process_bytes())]])

    def make(device, background=True):
        return TelemetrySampler(
            device,
            period_s=period_s,
            nvml=FakeNVML([gpu]),
            pid=PID,
            process=FakeProcess([1.0], [1]),
            identity={"index": 0},
            background=background,
        )

    return make


def quantizing_load(cuda: FakeCudaAllocator, layers: int = 5) -> None:
    """bitsandbytes-like: each layer's 16-bit weight (200 MB) arrives, is quantized (50 MB kept), is freed."""
    for _ in range(layers):
        cuda.alloc(200 * MB)
        cuda.alloc(50 * MB)
        cuda.free(200 * MB)


def test_the_load_is_read_before_anything_frees_its_cache():
    cuda = FakeCudaAllocator(CONTEXT)
    cuda.alloc(10 * MB)  # something live before the load: counted in the peak, not hidden by the reset
    with LoadMeter("cuda:0", make_factory(cuda), torch_module=FakeTorch(cuda)) as meter:
        quantizing_load(cuda)
        load = meter.loaded("case-key")
    # live: 10 MB before + 4 x 50 MB kept + the 5th layer's 200 + 50 in flight
    assert load.load_peak_allocated_bytes == (10 + 200 + 250) * MB
    assert load.load_allocated_after_bytes == (10 + 250) * MB
    assert load.load_reserved_after_bytes == (10 + 200 + 250) * MB  # the freed 16-bit blocks stay pooled
    assert load.load_nvml_process_bytes == CONTEXT + (10 + 450) * MB
    assert load.nvml_method == "process" and load.loaded_for_key == "case-key"
    assert load.load_s is not None and load.load_s >= 0
    assert "empty_cache" not in cuda.calls
    assert cuda.calls.index("reset_peak_memory_stats") < len(cuda.calls)


def test_the_user_view_covers_load_and_generation_without_clean_up():
    cuda = FakeCudaAllocator(CONTEXT)
    with LoadMeter("cuda:0", make_factory(cuda), torch_module=FakeTorch(cuda)) as meter:
        quantizing_load(cuda)
        meter.loaded("k")

        def generate():  # KV cache and activations: 300 MB live at once, all freed when generate returns
            cuda.alloc(300 * MB)
            cuda.free(300 * MB)

        view = measure_user_view(meter, generate)
    assert view.error is None and view.recorded
    assert view.peak_allocated_bytes == (250 + 300) * MB  # above the load's own peak of 450 MB
    assert view.reserved_high_water_bytes == view.reserved_after_bytes == 550 * MB
    assert view.nvml_process_after_bytes == CONTEXT + 550 * MB  # what nvidia-smi shows after the script
    assert view.nvml_process_peak_bytes == CONTEXT + 550 * MB
    assert view.host_peak_rss_bytes is not None and view.host_peak_rss_bytes > 0


def test_the_load_nvml_peak_is_sampled_while_loading():
    """A load that empties the cache at its end (transformers' allocator warm-up frees its block): the NVML
    peak sampled by the thread during the load is above the reading right after it."""
    cuda = FakeCudaAllocator(CONTEXT)
    with LoadMeter("cuda:0", make_factory(cuda, period_s=0.002), torch_module=FakeTorch(cuda)) as meter:
        cuda.alloc(800 * MB)
        time.sleep(0.1)  # the thread samples 800 MB pooled
        cuda.free(800 * MB)
        cuda.empty_cache()
        cuda.alloc(250 * MB)
        load = meter.loaded("k")
    assert load.load_nvml_process_bytes == CONTEXT + 250 * MB
    assert load.load_nvml_process_peak_bytes == CONTEXT + 800 * MB


def test_a_failing_user_view_is_recorded_and_stops_its_sampler():
    cuda = FakeCudaAllocator(CONTEXT)
    made = []
    factory = make_factory(cuda)

    def counting(device, background=True):
        made.append(factory(device, background))
        return made[-1]

    with LoadMeter("cuda:0", counting, torch_module=FakeTorch(cuda)) as meter:
        quantizing_load(cuda)
        meter.loaded("k")

        def generate():
            cuda.alloc(900 * MB)
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore text")

        view = measure_user_view(meter, generate)
    assert view.error == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert not view.recorded and view.generate_s is None
    assert view.peak_allocated_bytes == (250 + 900) * MB  # the readings up to the failure are kept
    assert all(s.result is not None for s in made)  # every sampler stopped: no thread left behind


def test_a_compiled_engine_skips_the_user_view():
    cuda = FakeCudaAllocator(CONTEXT)
    with LoadMeter("cuda:0", make_factory(cuda), torch_module=FakeTorch(cuda)) as meter:
        meter.loaded("k")
        view = measure_user_view(meter, lambda: pytest.fail("must not generate"), engine="compiled")
    assert view.skipped and "compiled" in view.skipped and not view.recorded


def test_a_failed_load_stops_the_sampler():
    cuda = FakeCudaAllocator(CONTEXT)
    made = []
    factory = make_factory(cuda)

    def counting(device, background=True):
        made.append(factory(device, background))
        return made[-1]

    with pytest.raises(MemoryError), LoadMeter("cuda:0", counting, torch_module=FakeTorch(cuda)):
        raise MemoryError("load failed")
    assert len(made) == 1 and made[0].result is not None


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="host RSS is read from Linux's /proc")
def test_on_a_cpu_the_host_rss_peak_covers_the_load():
    import numpy as np

    with LoadMeter("cpu", lambda *a, **k: pytest.fail("no sampler on a CPU")) as meter:
        block = np.ones(64 * MB // 8)  # 64 MB touched, then freed before the reading
        del block
        load = meter.loaded("k")
    assert load.load_host_peak_rss_bytes - load.load_host_rss_before_bytes >= 60 * MB
    assert load.load_host_rss_after_bytes < load.load_host_peak_rss_bytes
    assert load.load_peak_allocated_bytes is None and load.load_nvml_process_bytes is None


FRESH_PROCESS_RUN = """
import json, sys
from bench.config.spec import CaseSpec, TimingPolicy
from bench.measure.case_runner import CaseRunner
policy = TimingPolicy(warmup_runs=0, min_repetitions=1, max_repetitions=1, telemetry_repetitions=0)
runner = CaseRunner()
specs = [CaseSpec("phi-3-tiny", "fp32", "generate", 1, c, 4, device="cpu") for c in (16, 32)]
json.dump([runner.run(s, policy).to_dict() for s in specs], sys.stdout)
"""


def _records_of_a_fresh_process():
    """Two cases of one group, run by a CaseRunner in a new interpreter: host RSS before the load is then the
    interpreter's own, not a heap that earlier tests freed (which the load would reuse without RSS growing)."""
    import json
    import subprocess
    import sys

    import bench
    from bench.results.record import Record

    package_parent = str(Path(bench.__file__).resolve().parents[1])  # the bench this test imported, checkout or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", FRESH_PROCESS_RUN], capture_output=True, text=True, env=env,
                         timeout=600, check=True).stdout
    return [Record.from_dict(d) for d in json.loads(out)]


@pytest.mark.slow
def test_a_cpu_run_records_the_load_and_the_user_view_of_its_group(monkeypatch):
    from bench.config.spec import CaseSpec, TimingPolicy
    from bench.measure import case_runner

    policy = TimingPolicy(warmup_runs=0, min_repetitions=1, max_repetitions=1, telemetry_repetitions=0)
    first = CaseSpec("phi-3-tiny", "fp32", "generate", 1, 16, 4, device="cpu")
    a, b = _records_of_a_fresh_process()
    assert a.status == b.status == "ok", a.error or b.error
    assert a.load == b.load and a.load.loaded_for_key == first.key  # one load, shared by the group
    load, view = a.load, a.user_view
    assert load.load_s > 0 and load.load_host_peak_rss_bytes >= load.load_host_rss_after_bytes
    # the random fp32 weights are in the process after the load
    weights = a.memory.weights_bytes
    assert load.load_host_rss_after_bytes - load.load_host_rss_before_bytes > 0.5 * weights
    assert view.recorded and view.generate_s > 0
    assert view.host_peak_rss_bytes >= load.load_host_peak_rss_bytes  # VmHWM over load and generation
    assert not b.user_view.recorded and b.user_view.error is None  # measured for the group's first case only
    assert len(a.samples.e2e_s) == 1  # the view's generation is not a timed sample

    # a failing user view is recorded; the case's own measurement stands
    calls = []
    real_run_once = case_runner.PreparedCase.run_once

    def failing_first(self):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("user view broke")
        return real_run_once(self)

    monkeypatch.setattr(case_runner.PreparedCase, "run_once", failing_first)
    c = case_runner.CaseRunner().run(first.with_(precision="bf16"), policy)
    assert c.status == "ok" and c.user_view.error == "RuntimeError: user view broke"
    assert len(c.samples.e2e_s) == 1 and c.load.recorded


def test_a_load_outside_torchs_allocator_reads_nvml_and_leaves_torch_alone():
    cuda = FakeCudaAllocator(CONTEXT)  # stands for ggml's own CUDA buffers: NVML sees them, torch is never asked
    factory = make_factory(cuda)

    class NoTorch:
        @property
        def cuda(self):
            raise AssertionError("llama.cpp's load must not read torch's allocator")

    with LoadMeter("cuda:0", factory, torch_module=NoTorch(), torch_allocator=False) as meter:
        cuda.alloc(300 * MB)
        load = meter.loaded("gguf-key")
    assert load.load_nvml_process_bytes == CONTEXT + 300 * MB and load.nvml_method == "process"
    assert load.load_peak_allocated_bytes is None and load.load_reserved_after_bytes is None
    assert load.load_allocated_after_bytes is None and load.load_host_rss_after_bytes > 0
