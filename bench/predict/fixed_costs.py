"""Fixed costs and slack: what a process holds beyond weights, KV cache and activations.

On a GPU: the CUDA context and library memory (measured by ``bench profile``, else an assumed
0.5 GiB), the cuBLAS workspaces, the caching allocator's rounding of each weight tensor, and a slack
fraction of the dynamic memory. On a CPU: a calibrated constant and fraction (see
:data:`CPU_CALIBRATION`), plus, for quantized loads, the checkpoint pages of the quantized layers
that stay mapped.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.config.hardware import HardwareProfile
from bench.config.precision import Precision, runtime_dtype
from bench.predict.architecture import DTYPE_BYTES, Architecture
from bench.predict.weights import loaded_dtype, quantized_linear_bytes
from bench.units import MiB

# Fixed costs on a CUDA GPU when the card's profile has no measurement (reference/gpus.md gives 0.3 to
# 0.7 GiB for a context with lazy module loading; kernels loaded on first use add to it).
DEFAULT_CUDA_CONTEXT_BYTES = 512 * MiB
CUBLAS_WORKSPACE_BYTES = {9: 32 * MiB, 10: 32 * MiB}  # per handle, by compute capability major; else below
CUBLAS_WORKSPACE_DEFAULT_BYTES = 4096 * 1024 * 2 + 16 * 1024 * 8  # torch's ":4096:2:16:8" default
CUDA_SLACK_FRACTION = 0.05  # reserved-but-unallocated share of the dynamic memory (assumed, not yet measured)

# Host-process figures on a CPU, calibrated on this project's CPU measurements (benchmarks/
# predictor_accuracy.py, glibc told to return freed blocks at once): fixed bytes a warm process gains per
# case (Python objects of the generate loop) and a slack fraction of the dynamic memory. Measured
# residuals were -0.1 to +0.35 MiB over 8 unquantized cases of 37 MB to 1.75 GB, so both are small.
CPU_CALIBRATION = {"fixed_bytes": 0.25 * MiB, "slack_fraction": 0.005}
CHECKPOINT_DTYPE_BYTES = 2  # quantized loads read a float16 checkpoint (bench.measure.loader.random_checkpoint)


@dataclass(frozen=True)
class FixedCosts:
    """The fixed bytes (CUDA context, or per-case host bytes) and the slack, each with its basis in words."""

    context_bytes: int
    slack_bytes: int
    context_basis: str
    slack_basis: str


def cuda_context_bytes(profile: HardwareProfile | None) -> tuple[int, str]:
    """``(bytes, basis)`` of the CUDA context and libraries: measured by 'bench profile', else assumed."""
    measured = profile.measured if profile else None
    if measured and measured.runtime_overhead_bytes:
        return int(measured.runtime_overhead_bytes), "CUDA context and libraries measured by 'bench profile'"
    if measured and measured.cuda_context_bytes:
        return int(measured.cuda_context_bytes), "CUDA context measured by 'bench profile' (libraries not included)"
    return DEFAULT_CUDA_CONTEXT_BYTES, "CUDA context assumed 0.5 GiB (reference range 0.3-0.7 GiB; not measured)"


def cublas_workspace_bytes(profile: HardwareProfile | None) -> int:
    """The cuBLAS and cuBLASLt workspaces (two handles) on the profile's compute capability."""
    major = profile.compute_major if profile else None
    return 2 * CUBLAS_WORKSPACE_BYTES.get(major or 0, CUBLAS_WORKSPACE_DEFAULT_BYTES)


def allocator_rounding_bytes(arch: Architecture, precision: Precision) -> int:
    """Bytes the CUDA caching allocator adds to the weights: tensors over 10 MiB round up to 2 MiB."""
    extra = 0
    size = DTYPE_BYTES[runtime_dtype(precision, "cuda")]
    sizes: list[int] = []
    for lin in arch.linears:
        if precision.quantized and lin.quantized:
            storage, _ = quantized_linear_bytes(lin.out_features, lin.in_features, precision)
            sizes.append(storage)
        elif not lin.tied:
            sizes.append(lin.numel * size)
    sizes += [t.numel * DTYPE_BYTES[loaded_dtype(t.dtype, runtime_dtype(precision, "cuda"))] for t in arch.others]
    for s in sizes:
        if s > 10 * MiB:
            extra += -s % (2 * MiB)
        else:
            extra += -s % 512
    return extra


def cuda_fixed_costs(
    arch: Architecture, precision: Precision, profile: HardwareProfile | None, dynamic: int
) -> FixedCosts:
    """A CUDA process's fixed costs and slack, given the ``dynamic`` bytes (KV cache and activations)."""
    fixed, basis = cuda_context_bytes(profile)
    cublas = cublas_workspace_bytes(profile)
    rounding = allocator_rounding_bytes(arch, precision)
    slack = int(cublas + rounding + CUDA_SLACK_FRACTION * dynamic)
    slack_basis = (
        f"cuBLAS/cuBLASLt workspaces ({cublas / MiB:.0f} MiB) + caching-allocator rounding of the weights "
        f"({rounding / MiB:.1f} MiB) + {CUDA_SLACK_FRACTION:.0%} of KV and activations (assumed; not yet "
        "calibrated on a GPU)"
    )
    return FixedCosts(fixed, slack, basis, slack_basis)


def mapped_checkpoint_bytes(arch: Architecture) -> int:
    """The float16 checkpoint pages of the quantized layers, which stay resident after a quantized load.

    transformers keeps the checkpoint file mapped while the model lives; the pages of the layers it
    quantized were read and stay resident (measured: exactly their float16 bytes).
    """
    return sum(lin.numel * CHECKPOINT_DTYPE_BYTES for lin in arch.linears if lin.quantized)


def cpu_fixed_costs(arch: Architecture, precision: Precision, dynamic: int) -> FixedCosts:
    """A host process's per-case fixed bytes and slack, calibrated on CPU runs."""
    fixed = int(CPU_CALIBRATION["fixed_bytes"])
    slack = int(CPU_CALIBRATION["slack_fraction"] * dynamic)
    basis = "per-case host bytes calibrated on CPU runs (benchmarks/predictor_accuracy.py)"
    slack_basis = f"{CPU_CALIBRATION['slack_fraction']:.1%} of KV and activations, calibrated on CPU runs"
    if precision.quantized:
        mapped = mapped_checkpoint_bytes(arch)
        slack += mapped
        slack_basis += f" + {mapped / MiB:.1f} MiB of checkpoint pages of the quantized layers that stay mapped"
    return FixedCosts(fixed, slack, basis, slack_basis)
