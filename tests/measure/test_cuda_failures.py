"""Out of memory in the CUDA libraries' own words is recorded as oom; after any other CUDA error the worker is
replaced before the next case. Fake exceptions and a fake worker: no GPU needed.

Every message below is assembled from text the libraries themselves carry, read (``strings``) from the files
installed with torch 2.14.1+cu130, nvidia-cuda-runtime 13.0.96, nvidia-cublas 13.1.1.3, nvidia-cudnn-cu13
9.24.0.43, bitsandbytes 0.50.2 and triton 3.8.0. Each one names its sources as (file, fragment);
``test_the_quoted_text_is_in_the_installed_libraries`` checks every fragment against the installed file where
that file exists (a CPU-only install skips it). Numbers inside a message (sizes, shapes) are examples; the words
around them are quoted.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

from bench.config.spec import CaseSpec, TimingPolicy
from bench.measure import runner
from bench.measure.case_runner import CaseRunner
from bench.measure.oom import is_oom, poisons_cuda_context
from bench.results.record import Record

C10 = "torch/lib/libc10.so"
C10_CUDA = "torch/lib/libc10_cuda.so"
TORCH_CUDA = "torch/lib/libtorch_cuda.so"
ATEN_EXCEPTIONS = "torch/include/ATen/cuda/Exceptions.h"  # TORCH_CUDABLAS_CHECK, AT_CUDNN_CHECK, AT_CUDA_DRIVER_CHECK
CUDART = "nvidia/cu13/lib/libcudart.so.13"  # cudaGetErrorString's texts
CUDNN = "nvidia/cudnn/lib/libcudnn_graph.so.9"  # cudnnGetErrorString's texts (the status names)
CUDA_H = "nvidia/cu13/include/cuda.h"
BNB_CUDA_OPS = "bitsandbytes/backends/cuda/ops.py"
TRITON_DRIVER = "triton/backends/nvidia/driver.c"

# c10_cuda_check_implementation (C10_CUDA_CHECK, c10/cuda/CUDAException.h) raises torch.AcceleratorError with
# "CUDA error: " + cudaGetErrorString(err) and this note (the prefix is built in code, not stored as a string)
ASYNC = (
    "\nCUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace below might "
    "be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1"
)
ASYNC_SRC = (C10_CUDA, "CUDA kernel errors might be asynchronously reported at some other API call")
SGEMM = "cublasSgemm( handle, opa, opb, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc)"


def _case(exc: BaseException, *sources: tuple[str, str]) -> pytest.param:
    return pytest.param(exc, sources, id=str(exc)[:48])


# What the libraries raise when the card's memory runs out.
CUDA_OOMS = [
    _case(  # the caching allocator (c10/cuda/CUDACachingAllocator.cpp)
        torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 15.77 GiB of which "
            "1.06 GiB is free. Including non-PyTorch memory, this process has 14.70 GiB memory in use. Of the "
            "allocated memory 13.90 GiB is allocated by PyTorch, and 120.00 MiB is reserved by PyTorch but "
            "unallocated."
        ),
        (C10_CUDA, "CUDA out of memory. Tried to allocate "), (C10_CUDA, " has a total capacity of "),
        (C10_CUDA, "Including non-PyTorch memory, this process"), (C10_CUDA, " is allocated by PyTorch, "),
        (C10_CUDA, " is reserved by PyTorch but unallocated."),
    ),
    _case(  # a memory cap (torch.cuda.set_per_process_memory_fraction), as --memory-cap sets
        torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Allocation was preemptively rejected because it would exceed "
            "per_process_memory_fraction limit. Requested size: 1073741824"
        ),
        (C10_CUDA, "CUDA out of memory. Allocation was preemptively rejected because it would exceed "
                   "per_process_memory_fraction limit. Requested size: "),
    ),
    _case(  # the CUDA runtime: cudaErrorMemoryAllocation through C10_CUDA_CHECK
        torch.AcceleratorError("CUDA error: out of memory" + ASYNC),
        (CUDART, "out of memory"), ASYNC_SRC, (C10_CUDA, "AcceleratorError"),
    ),
    _case(  # cuBLAS handle creation (TORCH_CUDABLAS_CHECK: "CUDA error: ", status name, " when calling `EXPR`")
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
        (ATEN_EXCEPTIONS, '" when calling `" #EXPR "`"'), (TORCH_CUDA, "CUBLAS_STATUS_ALLOC_FAILED"),
        (TORCH_CUDA, " when calling `cublasCreate(handle)`"),
    ),
    _case(  # a cuBLASLt matmul (aten/src/ATen/cuda/CUDABlas.cpp)
        RuntimeError(
            "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasLtMatmul with transpose_mat1 1 transpose_mat2 "
            "0 m 8192 n 4032 k 3072"
        ),
        (TORCH_CUDA, "CUDA error: "), (TORCH_CUDA, " when calling cublasLtMatmul with transpose_mat1 "),
    ),
    _case(  # the cuBLASLt workspace (CUDABlas.cpp)
        RuntimeError("OOM trying to allocate workspace for cublaslt"),
        (TORCH_CUDA, "OOM trying to allocate workspace for cublaslt"),
    ),
    _case(  # cuDNN 9 (AT_CUDNN_CHECK: "cuDNN error: " + cudnnGetErrorString(status))
        RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED"),
        (ATEN_EXCEPTIONS, '"cuDNN error: ", cudnnGetErrorString(status)'),
        (CUDNN, "CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED"),
    ),
    _case(  # the driver API through torch (NVRTC, jiterator): "CUDA driver error: " + cuGetErrorString(err);
        # CUDA_ERROR_OUT_OF_MEMORY's string is the driver's (libcuda is not in the wheels): the runtime's words
        RuntimeError("CUDA driver error: out of memory"),
        (ATEN_EXCEPTIONS, '"CUDA driver error: ",'), (CUDA_H, "CUDA_ERROR_OUT_OF_MEMORY"), (CUDART, "out of memory"),
    ),
    _case(  # triton loading a compiled kernel (torch.compile on CUDA): gpuAssert's prefix + cuGetErrorString
        RuntimeError("Triton Error [CUDA]: out of memory"),
        (TRITON_DRIVER, 'const char *prefix = "Triton Error [CUDA]: ";'), (CUDART, "out of memory"),
    ),
]
# CUDA errors that are not allocation failures: the context may be poisoned.
CUDA_ERRORS = [
    _case(
        torch.AcceleratorError("CUDA error: an illegal memory access was encountered" + ASYNC),
        (CUDART, "an illegal memory access was encountered"), ASYNC_SRC,
    ),
    _case(
        torch.AcceleratorError("CUDA error: device-side assert triggered" + ASYNC),
        (CUDART, "device-side assert triggered"), ASYNC_SRC,
    ),
    _case(
        torch.AcceleratorError("CUDA error: unspecified launch failure" + ASYNC),
        (CUDART, "unspecified launch failure"), ASYNC_SRC,
    ),
    _case(
        RuntimeError("CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`"),
        (TORCH_CUDA, "CUBLAS_STATUS_NOT_INITIALIZED"), (TORCH_CUDA, " when calling `cublasCreate(handle)`"),
    ),
    _case(
        RuntimeError(f"CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `{SGEMM}`"),
        (TORCH_CUDA, "CUBLAS_STATUS_EXECUTION_FAILED"), (TORCH_CUDA, f" when calling `{SGEMM}`"),
    ),
    _case(
        RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"),
        (TORCH_CUDA, "cuDNN error: "), (CUDNN, "CUDNN_STATUS_EXECUTION_FAILED"),
    ),
    _case(  # bitsandbytes' LLM.int8 matmul when cublasLt returns a failure status (the status is not in the text)
        RuntimeError(
            "cublasLt ran into an error!\n\tshapeA=torch.Size([8192, 3072]), shapeB=torch.Size([4032, 3072]), "
            "shapeC=(4032, 8192)\n\t(lda, ldb, ldc)=(3072, 3072, 8192)\n\t(m, n, k)=(8192, 4032, 3072)"
        ),
        (BNB_CUDA_OPS, 'f"cublasLt ran into an error!\\n\\t{shapeA=}, {shapeB=}, {shapeC=}'),
    ),
]
# Host memory running out, from c10/core/impl/alloc_cpu.cpp.
HOST_OOM = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8589934592 bytes.")
HOST_OOM_SOURCE = (C10, "DefaultCPUAllocator: can't allocate memory: you tried to allocate ")


def _installed(relative: str) -> Path | None:
    """The installed file ``relative`` names (its first part is a top-level package), or None."""
    top, _, rest = relative.partition("/")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / rest
        if path.is_file():
            return path
    return None


def _all_sources() -> list[tuple[str, str]]:
    out = [HOST_OOM_SOURCE]
    for case in CUDA_OOMS + CUDA_ERRORS:
        out.extend(case.values[1])
    return sorted(set(out))


@pytest.mark.parametrize(("relative", "fragment"), _all_sources(), ids=lambda v: str(v)[:40])
def test_the_quoted_text_is_in_the_installed_libraries(relative, fragment):
    path = _installed(relative)
    if path is None:
        pytest.skip(f"{relative} is not installed here")
    assert fragment.encode() in path.read_bytes(), f"{fragment!r} is not in {path}: the library changed its words"


@pytest.mark.parametrize(("exc", "sources"), CUDA_OOMS)
def test_cuda_out_of_memory_in_other_words_is_oom(exc, sources):
    assert is_oom(exc, "cuda:0")
    assert not poisons_cuda_context(exc)  # an OOM is recoverable: the worker drops its model and goes on


@pytest.mark.parametrize(("exc", "sources"), CUDA_ERRORS)
def test_other_cuda_errors_are_errors_that_poison_the_context(exc, sources):
    assert not is_oom(exc, "cuda:0")
    assert poisons_cuda_context(exc)


def test_host_memory_and_unrelated_errors():
    host = HOST_OOM
    assert is_oom(host, "cpu") and is_oom(MemoryError(), "cpu")
    assert not is_oom(host, "cuda:0")  # the card did not run out: the host did
    assert not poisons_cuda_context(host)
    assert not poisons_cuda_context(ValueError("CUDA is mentioned, but this is not a CUDA error"))
    assert not poisons_cuda_context(RuntimeError("Expected all tensors to be on the same device, cuda:0 and cpu"))


@pytest.mark.parametrize(
    ("exc", "status", "poisoned"),
    [(CUDA_OOMS[3].values[0], "oom", False), (CUDA_ERRORS[0].values[0], "error", True),
     (CUDA_ERRORS[3].values[0], "error", True)],
    ids=["alloc-failed", "illegal-address", "not-initialized"],
)
def test_the_case_runner_records_and_remembers(monkeypatch, exc, status, poisoned):
    case_runner = CaseRunner()

    def fail(spec, device, **_):
        raise exc

    monkeypatch.setattr(case_runner, "model_for", fail)
    monkeypatch.setattr(case_runner, "release", lambda device=None: None)
    record = case_runner.run(CaseSpec("phi-3-tiny", "fp16", "generate", 1, 8, 4, device="cuda:0"), TimingPolicy())
    assert record.status == status and record.device == "cuda:0"
    assert case_runner.context_poisoned is poisoned


def test_a_cpu_case_never_poisons(monkeypatch):
    case_runner = CaseRunner()
    def fail(spec, device, **_):
        raise CUDA_ERRORS[1].values[0]

    monkeypatch.setattr(case_runner, "model_for", fail)
    record = case_runner.run(CaseSpec("phi-3-tiny", "fp32", "generate", 1, 8, 4), TimingPolicy())
    assert record.status == "error" and not case_runner.context_poisoned


class FakeWorker:
    """Stands in for a worker process: answers each case with a record and the poisoned flag it was told."""

    started: list["FakeWorker"] = []
    poison_next = False

    def __init__(self, options):
        self.closed = None
        self.loaded_group = None
        FakeWorker.started.append(self)

    def ask(self, spec, policy, run_id, timeout_s):
        status = "error" if FakeWorker.poison_next else "ok"
        record = Record(spec=spec, status=status, error="RuntimeError: CUDA error: x" if status == "error" else None)
        poisoned, FakeWorker.poison_next = FakeWorker.poison_next, False
        return "record", (record.to_dict(), [], poisoned)

    def close(self, kill=False):
        self.closed = "killed" if kill else "closed"


def test_the_worker_is_replaced_after_a_cuda_error_and_kept_otherwise(monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "Worker", FakeWorker)
    FakeWorker.started = []
    executor = runner._Isolated(runner.RunOptions(tmp_path, progress=False))
    spec = [CaseSpec("phi-3-tiny", "fp16", "generate", 1, c, 4, device="cuda:0") for c in (8, 16, 32, 64)]
    policy = TimingPolicy()
    executor.run(spec[0], policy)
    executor.run(spec[1], policy)
    assert len(FakeWorker.started) == 1  # same group: one worker
    FakeWorker.poison_next = True
    record, _ = executor.run(spec[2], policy)
    assert record.status == "error" and "the worker was replaced before the next case" in record.error
    assert FakeWorker.started[0].closed == "killed" and executor.worker is None
    record, _ = executor.run(spec[3], policy)
    assert record.status == "ok" and len(FakeWorker.started) == 2
    executor.close()
