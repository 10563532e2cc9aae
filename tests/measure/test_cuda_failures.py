"""Out of memory in the CUDA libraries' other words is recorded as oom; after any other CUDA error the
worker is replaced before the next case. Fake exceptions and a fake worker: no GPU needed."""

import pytest
import torch

from bench.config.spec import CaseSpec, TimingPolicy
from bench.measure import runner
from bench.measure.oom import is_oom, poisons_cuda_context
from bench.measure.worker import CaseRunner
from bench.results.record import Record

# What torch and the CUDA libraries raise when device memory runs out (documented allocation failures).
CUDA_OOMS = [
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.77 GiB total capacity)"),
    RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),
    torch.AcceleratorError("CUDA error: out of memory"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasLtMatmul( ltHandle, computeDesc...)`"),
    RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
    RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED"),
    RuntimeError("triton: CUDA_ERROR_OUT_OF_MEMORY while loading the module"),
]
# CUDA errors that are not (documented as) out of memory: the context may be poisoned.
CUDA_ERRORS = [
    torch.AcceleratorError("CUDA error: an illegal memory access was encountered"),
    RuntimeError("CUDA error: device-side assert triggered\nCompile with `TORCH_USE_CUDA_DSA`"),
    RuntimeError("CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`"),
    RuntimeError("CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx( handle, opa, ...)`"),
    RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"),
]


@pytest.mark.parametrize("exc", CUDA_OOMS, ids=lambda e: str(e)[:40])
def test_cuda_out_of_memory_in_other_words_is_oom(exc):
    assert is_oom(exc, "cuda:0")
    assert not poisons_cuda_context(exc)  # an OOM is recoverable: the worker drops its model and goes on


@pytest.mark.parametrize("exc", CUDA_ERRORS, ids=lambda e: str(e)[:40])
def test_other_cuda_errors_are_errors_that_poison_the_context(exc):
    assert not is_oom(exc, "cuda:0")
    assert poisons_cuda_context(exc)


def test_host_memory_and_unrelated_errors():
    host = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8589934592 bytes")
    assert is_oom(host, "cpu") and is_oom(MemoryError(), "cpu")
    assert not is_oom(host, "cuda:0")  # the card did not run out: the host did
    assert not poisons_cuda_context(host)
    assert not poisons_cuda_context(ValueError("CUDA is mentioned, but this is not a CUDA error"))
    assert not poisons_cuda_context(RuntimeError("Expected all tensors to be on the same device, cuda:0 and cpu"))


@pytest.mark.parametrize(
    ("exc", "status", "poisoned"),
    [(CUDA_OOMS[3], "oom", False), (CUDA_ERRORS[0], "error", True), (CUDA_ERRORS[2], "error", True)],
    ids=["alloc-failed", "illegal-address", "not-initialized"],
)
def test_the_case_runner_records_and_remembers(monkeypatch, exc, status, poisoned):
    case_runner = CaseRunner()

    def fail(spec, device):
        raise exc

    monkeypatch.setattr(case_runner, "model_for", fail)
    monkeypatch.setattr(case_runner, "release", lambda device=None: None)
    record = case_runner.run(CaseSpec("phi-3-tiny", "fp16", "generate", 1, 8, 4, device="cuda:0"), TimingPolicy())
    assert record.status == status and record.device == "cuda:0"
    assert case_runner.context_poisoned is poisoned


def test_a_cpu_case_never_poisons(monkeypatch):
    case_runner = CaseRunner()
    monkeypatch.setattr(case_runner, "model_for", lambda spec, device: (_ for _ in ()).throw(CUDA_ERRORS[1]))
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
