"""Measure the machine this runs on (memory bandwidth, matmul rate, CUDA context) and one case's host memory.

``bench profile`` calls :func:`profile_device` and writes the figures into a hardware profile. On a
GPU: a large device-to-device copy timed with CUDA events (bandwidth = bytes read plus written per
second), fp16 and bf16 matrix products (FLOP/s), the CUDA context's device memory read from NVML
before and after CUDA initialisation, and the driver and CUDA versions. On a CPU: the host
equivalents (a large tensor copy, a float32 matrix product, torch's vector ISA).

:func:`measure_host_case` runs one case in a fresh process with the harness's own loader and
scenario code and reports how much the process's resident memory grew: the CPU evidence the
predictor's accuracy benchmark compares against.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bench.config import machine
from bench.config.hardware import HardwareProfile, Measured, find_profile, load_profiles
from bench.errors import BadInputError
from bench.units import GiB, MiB, slugify, utc_now

# A timer runs a callable ``iters`` times after ``warmup`` untimed calls and returns the seconds taken.
Timer = Callable[[Callable[[], Any], int, int], float]


def host_timer(fn: Callable[[], Any], iters: int, warmup: int = 1) -> float:
    """Seconds for ``iters`` calls of ``fn`` on the host clock (after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return time.perf_counter() - start


def cuda_event_timer(torch: Any, device: str) -> Timer:
    """A timer that brackets the calls with CUDA events on ``device`` (device time, not host time)."""

    def timer(fn: Callable[[], Any], iters: int, warmup: int = 1) -> float:
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize(device)
        with torch.cuda.device(device):
            stream = torch.cuda.current_stream(device)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record(stream)
            for _ in range(iters):
                fn()
            end.record(stream)
        end.synchronize()
        return start.elapsed_time(end) / 1000.0

    return timer


def copy_bandwidth(copy: Callable[[], Any], nbytes: int, iters: int, timer: Timer) -> float:
    """Bytes per second of a copy of ``nbytes``: each copy reads and writes ``nbytes`` (2 x nbytes moved)."""
    seconds = timer(copy, iters, 2)
    if seconds <= 0:
        raise RuntimeError("the copy took no measurable time; use a larger buffer")
    return 2.0 * nbytes * iters / seconds


def matmul_rate(matmul: Callable[[], Any], n: int, iters: int, timer: Timer) -> float:
    """FLOP/s of an n x n x n matrix product (2 n^3 floating-point operations each)."""
    seconds = timer(matmul, iters, 2)
    if seconds <= 0:
        raise RuntimeError("the matrix product took no measurable time; use a larger size")
    return 2.0 * n**3 * iters / seconds


# --------------------------------------------------------------------------- CUDA


def _nvml_process_bytes(nvml: Any, handle: Any, pid: int) -> tuple[int | None, int | None]:
    """``(this process's device bytes or None, device used bytes or None)`` per NVML."""
    from bench.measure.telemetry import gpu_check as gpu_state

    procs, _ = gpu_state.processes(nvml, handle)
    mine = None
    if procs is not None:
        for p, used in procs:
            if p == pid:
                mine = used
    mem, _ = gpu_state.call(nvml, "nvmlDeviceGetMemoryInfo", handle)
    return mine, (int(mem.used) if mem is not None else None)


def context_bytes(
    before: tuple[int | None, int | None], after: tuple[int | None, int | None], allocator_reserved: int
) -> int | None:
    """Device memory the CUDA context takes: the process's NVML growth (or the device's) minus torch's reservations."""
    mine_after, used_after = after
    if mine_after is not None:
        return max(0, int(mine_after) - (before[0] or 0) - allocator_reserved)
    if used_after is not None and before[1] is not None:
        return max(0, int(used_after) - int(before[1]) - allocator_reserved)
    return None


def measure_cuda(device: str = "cuda", *, torch_module: Any = None, nvml: Any = None, quick: bool = False) -> Measured:
    """Profile a CUDA device: copy bandwidth, fp16/bf16 matmul rates, context bytes, versions.

    Call it in a process that has not touched CUDA yet, so the context can be measured.
    """
    from bench.measure.telemetry import gpu_check as gpu_state
    from bench.measure.telemetry.nvml import parse_device

    torch = torch_module
    if torch is None:
        import torch
    kind, index = parse_device(device)
    if kind != "cuda":
        raise BadInputError(f"device {device!r} is not a CUDA device")
    index = index or 0
    lib, _ = gpu_state.open_nvml(nvml)
    handle = None
    if lib is not None:
        handle, _ = gpu_state.handle_for_cuda_index(lib, index, visible=os.environ.get("CUDA_VISIBLE_DEVICES"))
    pid = os.getpid()
    before = _nvml_process_bytes(lib, handle, pid) if handle is not None else (None, None)
    torch.cuda.init()
    dev = f"cuda:{index}"
    torch.zeros(1, device=dev)  # creates the context (and one small allocator block)
    torch.cuda.synchronize(dev)
    after = _nvml_process_bytes(lib, handle, pid) if handle is not None else (None, None)
    ctx = context_bytes(before, after, int(torch.cuda.memory_reserved(dev)))

    timer = cuda_event_timer(torch, dev)
    props = torch.cuda.get_device_properties(dev)
    free, _total = torch.cuda.mem_get_info(dev)
    nbytes = int(min(GiB if not quick else 256 * MiB, free // 4))
    bufs = [torch.empty(nbytes, dtype=torch.uint8, device=dev) for _ in range(2)]
    bandwidth = copy_bandwidth(lambda: bufs[1].copy_(bufs[0]), nbytes, 5 if quick else 20, timer)
    bufs.clear()
    torch.cuda.empty_cache()
    rates: dict[str, float | None] = {}
    n = 4096 if quick or free < 4 * GiB else 8192
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        if name == "bf16" and props.major < 8:
            rates[name] = None
            continue
        x = torch.randn(n, n, device=dev, dtype=dtype)
        y = torch.randn(n, n, device=dev, dtype=dtype)
        rates[name] = matmul_rate(lambda x=x, y=y: x @ y, n, 3 if quick else 10, timer)
        del x, y
    # load the attention kernels too, then count what the process holds outside torch's allocator
    q = torch.randn(1, 8, 256, 64, device=dev, dtype=torch.float16)
    torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    torch.cuda.synchronize(dev)
    del q
    now = _nvml_process_bytes(lib, handle, pid) if handle is not None else (None, None)
    overhead = context_bytes(before, now, int(torch.cuda.memory_reserved(dev)))
    driver = None
    if lib is not None:
        value, _ = gpu_state.call(lib, "nvmlSystemGetDriverVersion")
        driver = gpu_state.text(value) if value is not None else None
        gpu_state.close_nvml(lib)
    return Measured(
        memory_bandwidth_bytes_per_s=bandwidth,
        matmul_fp16_flops_per_s=rates.get("fp16"),
        matmul_bf16_flops_per_s=rates.get("bf16"),
        cuda_context_bytes=ctx,
        runtime_overhead_bytes=overhead,
        device_total_bytes=int(props.total_memory),
        multiprocessor_count=getattr(props, "multi_processor_count", None),
        device_name=str(props.name),
        driver=driver,
        cuda=str(torch.version.cuda),
        torch=str(torch.__version__),
        host=socket.gethostname(),
        measured_utc=utc_now(),
        source=f"bench profile: {nbytes / MiB:.0f} MiB device-to-device copy, {n}^3 matmuls, NVML context reading",
    )


# --------------------------------------------------------------------------- CPU


def cpu_model_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else the platform's answer)."""
    from bench.measure.worker import cpu_name

    return cpu_name() or "CPU"


def _cpu_avx512_bf16() -> bool:
    """Whether bitsandbytes takes its AVX512-BF16 4-bit path on this CPU (its own check, or the CPU flag)."""
    from bench.measure.bnb_runtime import has_avx512_bf16

    return has_avx512_bf16()


def measure_cpu(*, torch_module: Any = None, quick: bool = False, timer: Timer = host_timer) -> Measured:
    """Profile the host: tensor copy bandwidth (bytes read plus written), float32 matmul rate, vector ISA."""
    torch = torch_module
    if torch is None:
        import torch
    nbytes = (64 if quick else 512) * MiB
    bufs = [torch.ones(nbytes, dtype=torch.uint8), torch.empty(nbytes, dtype=torch.uint8)]
    bandwidth = copy_bandwidth(lambda: bufs[1].copy_(bufs[0]), nbytes, 3 if quick else 10, timer)
    bufs.clear()
    n = 512 if quick else 2048
    x = torch.randn(n, n)
    y = torch.randn(n, n)
    rate = matmul_rate(lambda: x @ y, n, 2 if quick else 5, timer)
    return Measured(
        memory_bandwidth_bytes_per_s=bandwidth,
        matmul_fp32_flops_per_s=rate,
        device_name=cpu_model_name(),
        torch=str(torch.__version__),
        cpu_capability=str(torch.backends.cpu.get_cpu_capability()),
        cpu_avx512_bf16=_cpu_avx512_bf16(),
        host=socket.gethostname(),
        machine=machine.fingerprint().digest,
        measured_utc=utc_now(),
        source=f"bench profile: {nbytes / MiB:.0f} MiB host tensor copy, {n}^3 float32 matmul, "
        f"{torch.get_num_threads()} threads",
    )


def host_memory_bytes() -> int:
    """Total host RAM in bytes."""
    import psutil

    return int(psutil.virtual_memory().total)


def profile_device(
    device: str | None = None, *, quick: bool = False, profiles: list[HardwareProfile] | None = None
) -> HardwareProfile:
    """Measure ``device`` (default: the first CUDA GPU, else the CPU) and return its profile.

    A GPU that matches a known profile keeps that profile's datasheet figures and sources and gains the
    measured section; an unknown GPU gets a profile whose figures are the measured ones.
    """
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        measured = measure_cpu(quick=quick)
        name = f"{measured.device_name} ({measured.host})"
        return HardwareProfile(
            name=name,
            kind="cpu",
            memory_bytes=host_memory_bytes(),
            memory_bandwidth_bytes_per_s=float(measured.memory_bandwidth_bytes_per_s or 0),
            sources={
                "memory_bytes": "measured: host RAM (psutil)",
                "memory_bandwidth_bytes_per_s": "measured: host tensor copy (bench profile)",
            },
            measured=measured,
        )
    measured = measure_cuda(device, quick=quick)
    pool = profiles if profiles is not None else load_profiles()
    known = find_profile(measured.device_name or "", pool)
    if known is not None:
        return known.with_measured(measured)
    return HardwareProfile(
        name=measured.device_name or device,
        kind="cuda",
        memory_bytes=int(measured.device_total_bytes or 0),
        memory_bandwidth_bytes_per_s=float(measured.memory_bandwidth_bytes_per_s or 0),
        aliases=(),
        measured=measured,
        sources={
            "memory_bytes": "measured: total memory the driver reports (no datasheet profile yet)",
            "memory_bandwidth_bytes_per_s": "measured: device-to-device copy (no datasheet profile yet)",
        },
    )


def default_profile_path(profile: HardwareProfile) -> str:
    """Where ``bench profile`` writes by default: the card's file in the user's profiles/gpus, or profiles/hosts
    for a CPU; a shipped profile (package data) is never written over: its measured copy goes to the user's
    folder, where it takes precedence."""
    from bench.config.hardware import shipped_profiles_dir, user_profiles_dir

    shipped = profile.path is not None and profile.path.resolve().parent == shipped_profiles_dir().resolve()
    if profile.path is not None and not shipped:
        return str(profile.path)
    folder = user_profiles_dir() if profile.kind == "cuda" else user_profiles_dir().parent / "hosts"
    return str(folder / f"{slugify(profile.name)}.toml")


# --------------------------------------------------------------------------- one case's host memory


@dataclass(frozen=True)
class HostCaseMeasurement:
    """Host memory one case added to a warm process: peak RSS minus the RSS before the model was loaded."""

    model: str
    precision: str
    context_tokens: int
    batch_size: int
    new_tokens: int
    baseline_rss_bytes: int  # before the model was loaded (a warm process: one load and run done and dropped)
    peak_rss_bytes: int  # the high-water mark of the run (reset after loading, as the runner does)
    loaded_rss_bytes: int  # after loading, before the run
    weights_bytes: int
    kv_cache_bytes: int | None
    seconds: float
    bnb_4bit_kernel_path: str | None = None  # which 4-bit path bitsandbytes took (bench.config.precision)

    @property
    def measured_bytes(self) -> int:
        """What the case added: peak RSS minus the baseline."""
        return self.peak_rss_bytes - self.baseline_rss_bytes

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (with ``measured_bytes``)."""
        return dict(asdict(self), measured_bytes=self.measured_bytes)


# glibc returns freed blocks of at least this size to the system at once, so resident memory follows
# live tensor memory (as a GPU allocator's reservations would) instead of glibc's heap high-water mark.
HOST_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}


def _run_host_case(spec: dict[str, Any]) -> dict[str, Any]:
    """In this (fresh) process: warm up on the case, drop the model, then load it again and run it while
    reading the resident-memory high-water mark (reset after loading, as the runner does)."""
    import ctypes
    import gc

    import torch

    from bench.config.models import DECODER, resolve_source
    from bench.config.precision import get_precision
    from bench.measure.bnb_runtime import kernel_path
    from bench.measure.loader import load_model, random_checkpoint
    from bench.measure.memory import host_peak_rss_bytes, host_rss_bytes, kv_cache_bytes, reset_host_peak
    from bench.measure.quantization import weights_bytes
    from bench.measure.scenarios import make_prompt, run_encode, run_generate

    torch.set_num_threads(int(spec.get("threads") or torch.get_num_threads()))
    source = resolve_source(spec["model"], "random")
    precision = get_precision(spec["precision"])
    switch = spec.get("bnb_avx512bf16")
    if precision.quantized:
        from bench.measure.bnb_runtime import import_bitsandbytes

        import_bitsandbytes()  # imported before the baseline, as a worker would have it
        random_checkpoint(source)
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except OSError:
        trim = None

    def settle() -> None:
        gc.collect()
        if trim is not None:
            trim(0)

    def load() -> Any:
        loaded = load_model(source, precision, "cpu")
        if switch is not None:
            from bench.measure.bnb_runtime import set_avx512bf16_switch

            set_avx512bf16_switch(loaded.model, switch)
        with torch.no_grad():  # weights loaded from a file may still be mapped pages: make them all resident
            for t in (*loaded.model.parameters(), *loaded.model.buffers()):
                if t.numel():
                    t.view(-1)[:: max(1, 4096 // t.element_size())].sum()
        return loaded

    def run(loaded: Any) -> int | None:
        model = loaded.model
        prompt = make_prompt(model.config.vocab_size, spec["batch_size"], spec["context_tokens"], 0, "cpu")
        if source.family == DECODER:
            sample = run_generate(model, prompt, spec["new_tokens"])
            return kv_cache_bytes(sample.cache)
        prompt["token_type_ids"] = torch.zeros_like(prompt["input_ids"])
        run_encode(model, prompt)
        return None

    warm = load()
    run(warm)
    del warm
    settle()
    baseline = host_rss_bytes() or 0
    start = time.perf_counter()
    loaded = load()
    settle()
    reset_host_peak()  # like the runner: the peak of the run, not of loading
    loaded_rss = host_rss_bytes() or 0
    kv = run(loaded)
    peak = host_peak_rss_bytes() or 0
    seconds = time.perf_counter() - start
    return {
        "model": spec["model"],
        "precision": spec["precision"],
        "context_tokens": spec["context_tokens"],
        "batch_size": spec["batch_size"],
        "new_tokens": spec["new_tokens"],
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak,
        "loaded_rss_bytes": loaded_rss,
        "weights_bytes": weights_bytes(loaded.model),
        "kv_cache_bytes": kv,
        "bnb_4bit_kernel_path": kernel_path(loaded.model, "cpu") if precision.quantized else None,
        "seconds": seconds,
    }


def measure_host_cases(
    cases: list[tuple[str, str, int, int, int]],
    *,
    threads: int | None = None,
    timeout_s: float = 1800.0,
    bnb_avx512bf16: bool | None = None,
) -> list[HostCaseMeasurement]:
    """Measure several ``(model, precision, context, batch, new_tokens)`` cases one after another in one fresh
    process (each with its own warm-up and baseline); see :func:`measure_host_case`. ``bnb_avx512bf16`` sets
    bitsandbytes' CPU AVX512-BF16 switch on the 4-bit layers (:func:`bench.measure.bnb_runtime.set_avx512bf16_switch`;
    None: the library's choice)."""
    specs = [
        {
            "model": m,
            "precision": p,
            "context_tokens": c,
            "batch_size": b,
            "new_tokens": n,
            "threads": threads,
            "bnb_avx512bf16": bnb_avx512bf16,
        }
        for m, p, c, b, n in cases
    ]
    env = dict(os.environ, **HOST_MALLOC_ENV)
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")  # no hub lookups in the measuring process (bench.measure.bnb_runtime)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.measure.profiler", "--host-cases", json.dumps(specs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or len(lines) != len(specs):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"host measurement failed: {' | '.join(tail)}")
    return [HostCaseMeasurement(**json.loads(line)) for line in lines]


def measure_host_case(
    model: str,
    precision: str,
    context_tokens: int,
    batch_size: int = 1,
    new_tokens: int = 0,
    *,
    threads: int | None = None,
    timeout_s: float = 900.0,
) -> HostCaseMeasurement:
    """Run one case in a fresh process (the harness's loader and scenarios) and measure its host memory.

    glibc is told to return freed blocks to the system at once (``HOST_MALLOC_ENV``), so the resident
    set follows live tensor memory; the baseline is taken after one warm-up load and run of the same case.
    """
    (m,) = measure_host_cases(
        [(model, precision, context_tokens, batch_size, new_tokens)], threads=threads, timeout_s=timeout_s
    )
    return m


if __name__ == "__main__":  # the child process of measure_host_cases
    if len(sys.argv) == 3 and sys.argv[1] == "--host-cases":
        for item in json.loads(sys.argv[2]):
            print(json.dumps(_run_host_case(item)), flush=True)
    else:
        print("usage: python -m bench.measure.profiler --host-cases JSON", file=sys.stderr)
        sys.exit(2)
