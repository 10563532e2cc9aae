"""Hardware profiles (files, lookup, user folders) and the profiler's measurements (with fakes and on this CPU)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_nvml import FakeGPU, FakeNVML, proc

from bench.config.hardware import (
    HardwareProfile,
    Measured,
    dumps_profile,
    find_profile,
    get_profile,
    load_profile,
    load_profiles,
    profile_dirs,
    save_profile,
    shipped_profiles_dir,
)
from bench.errors import BadInputError
from bench.measure.device_probes import context_bytes, copy_bandwidth, matmul_rate, measure_cpu, measure_cuda
from bench.measure.device_profile import profile_device
from bench.units import GiB

# reference/gpus.md: name -> (box GB, GB/s)
REFERENCE = {
    "GeForce GTX 1660 Super": (6, 336), "GeForce RTX 2060": (6, 336), "GeForce RTX 3060 Laptop": (6, 336),
    "GeForce RTX 3060": (12, 360), "GeForce RTX 3070": (8, 448), "GeForce RTX 3080": (10, 760),
    "GeForce RTX 3090": (24, 936), "GeForce RTX 4060": (8, 272), "GeForce RTX 4060 Ti 16 GB": (16, 288),
    "GeForce RTX 4070": (12, 504), "GeForce RTX 4080": (16, 717), "GeForce RTX 4090": (24, 1008),
    "Tesla T4": (16, 320), "L4": (24, 300), "A10": (24, 600), "V100 SXM2 16 GB": (16, 900),
    "A100 40 GB PCIe": (40, 1555), "A100 80 GB SXM": (80, 2039), "H100 SXM": (80, 3350), "H200": (141, 4800),
}


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENCH_PROFILES_DIR", raising=False)


def test_shipped_profiles_match_the_reference_table_and_name_their_sources(no_env: None) -> None:
    profiles = {p.name: p for p in load_profiles()}
    assert set(profiles) == set(REFERENCE)
    for name, (gb, gbs) in REFERENCE.items():
        p = profiles[name]
        assert p.memory_bytes == gb * GiB, name
        assert p.memory_bandwidth_bytes_per_s == gbs * 1e9, name
        assert p.kind == "cuda"
        for field in ("memory_bytes", "memory_bandwidth_bytes_per_s"):
            assert "NVIDIA" in p.sources[field], (name, field)
        if p.peak_fp16_flops_per_s is not None:
            assert "datasheet" in p.sources["peak_fp16_flops_per_s"]


def test_one_file_per_gpu_named_after_it(no_env: None) -> None:
    files = sorted(shipped_profiles_dir().glob("*.toml"))
    assert len(files) == len(REFERENCE)
    for f in files:
        assert load_profile(f).slug == f.stem


@pytest.mark.parametrize(
    ("query", "expected"),
    [("RTX 3060", "GeForce RTX 3060"), ("NVIDIA GeForce RTX 3060", "GeForce RTX 3060"),
     ("geforce-rtx-3060-laptop", "GeForce RTX 3060 Laptop"),
     ("NVIDIA GeForce RTX 3060 Laptop GPU", "GeForce RTX 3060 Laptop"),
     ("t4", "Tesla T4"), ("Tesla T4", "Tesla T4"), ("NVIDIA A100-SXM4-80GB", "A100 80 GB SXM"),
     ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("nvidia h200", "H200")],
)
def test_lookup_by_name_alias_or_driver_name(no_env: None, query: str, expected: str) -> None:
    assert get_profile(query).name == expected


def test_unknown_gpu_lists_the_closest_names(no_env: None) -> None:
    with pytest.raises(BadInputError) as err:
        get_profile("RTX 3061")
    text = str(err.value)
    assert "'RTX 3061'" in text and "GeForce RTX 3060" in text and "closest" in text
    assert "--profiles" in text


def test_round_trip_keeps_every_field(tmp_path) -> None:
    prof = HardwareProfile(
        name="My Card", kind="cuda", memory_bytes=10 * GiB, memory_bandwidth_bytes_per_s=512e9,
        compute_capability="8.9", peak_fp16_flops_per_s=1.5e14, price_usd=499.0, aliases=("mine",),
        sources={"memory_bytes": "box", "memory_bandwidth_bytes_per_s": "spec \"sheet\"", "price_usd": "shop, 2025"},
        measured=Measured(memory_bandwidth_bytes_per_s=4.5e11, cuda_context_bytes=300 * 2**20, driver="550.1"),
    )
    path = save_profile(prof, tmp_path / "x" / "my.toml")
    back = load_profile(path)
    assert back == prof
    assert back.bandwidth_bytes_per_s == 4.5e11 and back.bandwidth_basis == "measured"
    assert "[measured]" in dumps_profile(prof)


def test_bad_profile_files_are_named(tmp_path) -> None:
    (tmp_path / "a.toml").write_text('name = "A"\nmemory_bytes = 1\n')
    with pytest.raises(BadInputError, match="a.toml lacks required field 'memory_bandwidth_bytes_per_s'"):
        load_profile(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text('name = "B"\nmemory_bytes = 1\nmemory_bandwidth_bytes_per_s = 1\nprice_usd = 9\n')
    with pytest.raises(BadInputError, match="price_usd needs a source"):
        load_profile(tmp_path / "b.toml")
    (tmp_path / "c.toml").write_text("name = \n")
    with pytest.raises(BadInputError, match="not valid TOML"):
        load_profile(tmp_path / "c.toml")


def test_user_folder_adds_and_overrides(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_profile(HardwareProfile(name="H200", memory_bytes=140 * GiB, memory_bandwidth_bytes_per_s=4.0e12),
                 tmp_path / "h200.toml")
    save_profile(HardwareProfile(name="Lab Card 7", memory_bytes=7 * GiB, memory_bandwidth_bytes_per_s=1e11),
                 tmp_path / "lab.toml")
    monkeypatch.setenv("BENCH_PROFILES_DIR", str(tmp_path))
    profiles = load_profiles()
    assert get_profile("lab card 7", profiles).memory_bytes == 7 * GiB
    assert get_profile("H200", profiles).memory_bytes == 140 * GiB  # the user's file wins
    assert len(profiles) == len(REFERENCE) + 1
    monkeypatch.delenv("BENCH_PROFILES_DIR")
    assert len(load_profiles(profile_dirs([tmp_path]))) == len(REFERENCE) + 1
    with pytest.raises(BadInputError, match="does not exist"):
        load_profiles([tmp_path / "missing"])


def test_find_profile_does_not_guess() -> None:
    pool = [HardwareProfile(name="GeForce RTX 4060 Ti 16 GB", memory_bytes=16 * GiB,
                            memory_bandwidth_bytes_per_s=2.88e11)]
    assert find_profile("NVIDIA GeForce RTX 4060 Ti", pool) is None  # the 8 GB card reports the same name
    assert find_profile("", pool) is None


# --------------------------------------------------------------------------- profiler arithmetic


def fixed_timer(seconds: float):
    calls = []

    def timer(fn, iters, warmup=1):
        for _ in range(warmup + iters):
            fn()
        calls.append(iters)
        return seconds

    return timer, calls


def test_copy_bandwidth_counts_bytes_read_plus_written() -> None:
    timer, calls = fixed_timer(0.5)
    done = []
    assert copy_bandwidth(lambda: done.append(1), 1_000_000_000, 10, timer) == 2 * 1e9 * 10 / 0.5
    assert calls == [10] and len(done) == 12  # two warm-up copies, then ten timed


def test_matmul_rate_is_two_n_cubed_per_product() -> None:
    timer, _ = fixed_timer(2.0)
    assert matmul_rate(lambda: None, 1000, 4, timer) == 2 * 1000**3 * 4 / 2.0
    with pytest.raises(RuntimeError):
        matmul_rate(lambda: None, 10, 1, fixed_timer(0.0)[0])


def test_context_bytes_prefers_the_process_reading() -> None:
    mib = 2**20
    assert context_bytes((None, 1000 * mib), (520 * mib, 1522 * mib), 2 * mib) == 518 * mib
    assert context_bytes((None, 1000 * mib), (None, 1522 * mib), 2 * mib) == 520 * mib  # device-wide fallback
    assert context_bytes((None, None), (None, None), 0) is None


def test_cpu_profile_measures_this_host() -> None:
    m = measure_cpu(quick=True)
    assert m.memory_bandwidth_bytes_per_s > 1e8
    assert m.matmul_fp32_flops_per_s > 1e6
    assert m.cpu_capability and m.host
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").is_file() else None
    if flags is not None:  # bitsandbytes' own AVX512_BF16 check agrees with the kernel's flag list
        assert m.cpu_avx512_bf16 is ("avx512_bf16" in flags)
    prof = profile_device("cpu", quick=True)
    assert prof.kind == "cpu" and prof.memory_bytes > GiB and prof.measured is not None
    assert prof.bandwidth_basis == "measured"


class _FakeTensor:
    def __init__(self, nbytes: int = 0) -> None:
        self.nbytes = nbytes

    def copy_(self, other: _FakeTensor) -> _FakeTensor:
        return self

    def __matmul__(self, other: _FakeTensor) -> _FakeTensor:
        return self


def _fake_torch(reserved: int, free: int) -> SimpleNamespace:
    events = []
    streams = []

    class Event:
        def __init__(self, enable_timing: bool = False) -> None:
            events.append(self)

        def record(self, stream: object = None) -> None:
            streams.append(stream)

        def synchronize(self) -> None:
            pass

        def elapsed_time(self, end: Event) -> float:
            return 10.0  # milliseconds

    cuda = SimpleNamespace(
        init=lambda: None, synchronize=lambda *a: None, memory_reserved=lambda *a: reserved, Event=Event,
        device=lambda d: contextlib.nullcontext(), current_stream=lambda d: f"stream of {d}", streams=streams,
        get_device_properties=lambda *a: SimpleNamespace(major=9, total_memory=150 * GiB, name="NVIDIA H200"),
        mem_get_info=lambda *a: (free, 150 * GiB), empty_cache=lambda: None,
    )
    return SimpleNamespace(
        cuda=cuda, uint8="uint8", float16="float16", bfloat16="bfloat16",
        zeros=lambda *a, **k: _FakeTensor(), empty=lambda n, **k: _FakeTensor(n), randn=lambda *a, **k: _FakeTensor(),
        nn=SimpleNamespace(functional=SimpleNamespace(scaled_dot_product_attention=lambda *a, **k: _FakeTensor())),
        version=SimpleNamespace(cuda="12.8"), __version__="2.13.0",
    )


def test_measure_cuda_glue_with_fake_torch_and_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    mib = 2**20
    pid = os.getpid()
    gpu = FakeGPU(processes=[[], [proc(pid, 514 * mib)], [proc(pid, 700 * mib)]],
                  used_bytes=[10 * GiB, 10 * GiB + 514 * mib, 10 * GiB + 700 * mib])
    torch = _fake_torch(reserved=2 * mib, free=100 * GiB)
    m = measure_cuda("cuda:0", torch_module=torch, nvml=FakeNVML([gpu]), quick=True)
    assert m.cuda_context_bytes == 512 * mib  # NVML growth minus torch's 2 MiB block
    assert m.runtime_overhead_bytes == 698 * mib
    assert m.memory_bandwidth_bytes_per_s == pytest.approx(2 * 256 * mib * 5 / 0.010)
    assert m.matmul_fp16_flops_per_s == pytest.approx(2 * 4096**3 * 3 / 0.010)
    assert m.matmul_bf16_flops_per_s == pytest.approx(2 * 4096**3 * 3 / 0.010)
    assert (m.device_name, m.driver, m.cuda) == ("NVIDIA H200", "550.54.15", "12.8")
    assert set(torch.cuda.streams) == {"stream of cuda:0"}  # events on the measured device's stream


@pytest.mark.gpu
def test_measure_cuda_on_a_real_gpu() -> None:
    m = measure_cuda("cuda", quick=True)
    assert m.memory_bandwidth_bytes_per_s > 1e10
    assert m.matmul_fp16_flops_per_s > 1e12
    assert m.device_total_bytes > GiB
