"""Probes of the machine this runs on: memory bandwidth (a timed copy), matmul rate, the CUDA context's device
memory; on a GPU timed with CUDA events, on a CPU the host equivalents (a large tensor copy, a float32 matrix
product, torch's vector ISA).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

from bench.config import machine
from bench.config.hardware import Measured
from bench.errors import BadInputError
from bench.units import GiB, MiB, utc_now

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
    from bench.measure.telemetry import gpu_state

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
    from bench.measure.telemetry import gpu_state
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
    from bench.measure.case_runner import cpu_name

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
