"""The loading phase on a CUDA device: its live peak and what the caching allocator keeps afterwards.

Loading a bitsandbytes model quantizes each 16-bit weight on the device: the 16-bit tensor, the quantized
copy and its workspace are alive at once, on top of every weight loaded so far; the 16-bit tensor is then
freed, and the caching allocator keeps its block. This module lists those allocations and frees tensor by
tensor and replays them through :class:`~bench.predict.cuda_allocator.CachingAllocatorModel`.

What is assumed, as read from the installed libraries (transformers 5.25, bitsandbytes 0.50.2):

- order: ``core_model_loading.convert_and_load_state_dict_in_model`` loads the checkpoint's tensors sorted by
  ``dot_natural_key`` (names split at dots, layer numbers compared as numbers): ``lm_head`` before ``model``,
  layer 2 before layer 10, within a layer alphabetically (``mlp.down_proj`` before ``self_attn.q_proj``).
  transformers 4.x loaded in the checkpoint's order, which is the module order for the usual checkpoints
  (``order="module"``). Tied weights are not in the checkpoint.
- one tensor at a time: with on-the-fly quantization, transformers turns off its loading threads ("sync
  loading ... to avoid worker threads loading full-precision tensors to GPU faster than the main thread can
  quantize them"), so exactly one 16-bit tensor is on the device beside the quantized ones.
- each tensor is materialized on the device in the runtime dtype (``tensor.to(device, dtype)``): a checkpoint
  stored in another dtype is assumed to convert in that copy (no second device copy).
- 4-bit (``Bnb4bitQuantize`` -> ``Params4bit._quantize`` -> ``functional.quantize_4bit``, CUDA kernel): float32
  ``absmax`` (one per 64-element block), then the packed uint8 weight, then the 16-entry float32 code; with
  double quantization ``absmax - absmax.mean()`` (float32) is quantized block-wise (uint8 per block, float32 per
  256 blocks) and both float32 absmax tensors are freed. Then the 16-bit tensor is freed.
- 8-bit (``Int8Params._quantize`` -> ``int8_vectorwise_quant``, CUDA kernel): float32 row scales, then the
  int8 weight; then the 16-bit tensor is freed.
- everything else (embeddings, lm_head, norms, biases, unquantized linears) is one allocation in the runtime
  dtype; non-persistent buffers (rotary frequencies) are allocated before the checkpoint's tensors.

These are checked against the installed modules by the tests (the source names above and the order).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from bench.config.precision import Precision, runtime_dtype
from bench.predict.architecture import DTYPE_BYTES, Architecture
from bench.predict.cuda_allocator import CachingAllocatorModel
from bench.predict.weights import BLOCKSIZE_4BIT, CODE_4BIT_BYTES, NESTED_BLOCKSIZE, loaded_dtype

ORDERS = ("sorted", "module")  # transformers >= 5: sorted by dot_natural_key; 4.x: the checkpoint's (module) order


@dataclass(frozen=True)
class LoadTensor:
    """One checkpoint tensor as loading handles it: its name, 16-bit bytes and whether it is quantized."""

    name: str
    numel: int
    out_features: int  # rows of a linear weight (int8 keeps one scale per row); 0 otherwise
    quantized: bool
    nbytes: int  # bytes as loaded when not quantized (runtime or own dtype)


@dataclass(frozen=True)
class LoadPhase:
    """The loading phase replayed through the allocator model: its live peak, its pool and where it peaks."""

    peak_allocated_bytes: int  # live bytes at the worst moment (weights so far + one 16-bit tensor + workspace)
    allocated_after_bytes: int  # the loaded model as the allocator books it
    reserved_after_bytes: int  # the pool after loading: what nvidia-smi counts besides the context
    peak_tensor: str  # the tensor being loaded at the live peak
    allocator: CachingAllocatorModel  # the pool as loading left it (generation goes on from here)


def dot_natural_key(name: str) -> list[tuple]:
    """transformers' sort key for state-dict names: parts split at dots, digits compared as numbers."""
    parts: list[tuple] = []
    for part in name.split("."):
        if part.isdigit():
            parts.append((0, int(part)))
            continue
        text = part.rstrip("0123456789")
        digits = part[len(text) :]
        parts.append((1, text, int(digits)) if digits else (1, text))
    return parts


def load_tensors(arch: Architecture, precision: Precision, order: str = "sorted") -> list[LoadTensor]:
    """The checkpoint tensors of ``arch`` in the order loading handles them (buffers excluded)."""
    if order not in ORDERS:
        raise ValueError(f"load order {order!r} is not one of {', '.join(ORDERS)}")
    runtime = runtime_dtype(precision, "cuda")
    size = DTYPE_BYTES[runtime]
    tensors: list[LoadTensor] = []
    for lin in arch.linears:
        if not lin.tied:
            quantized = precision.quantized and lin.quantized
            tensors.append(LoadTensor(f"{lin.name}.weight", lin.numel, lin.out_features, quantized, lin.numel * size))
        if lin.bias:
            tensors.append(LoadTensor(f"{lin.name}.bias", lin.out_features, 0, False, lin.out_features * size))
    for t in arch.others:
        if not t.buffer:
            nbytes = t.numel * DTYPE_BYTES[loaded_dtype(t.dtype, runtime)]
            tensors.append(LoadTensor(t.name, t.numel, 0, False, nbytes))
    if order == "sorted":
        return sorted(tensors, key=lambda t: dot_natural_key(t.name))
    return sorted(tensors, key=lambda t: _module_position(arch, t.name))


def _module_position(arch: Architecture, name: str) -> tuple[int, int]:
    """Module order: the stack layer, then the position the architecture listed the tensor in."""
    match = re.search(r"\.(\d+)\.", name)
    names = [f"{lin.name}.weight" for lin in arch.linears] + [t.name for t in arch.others]
    position = names.index(name) if name in names else len(names)
    if match is None:
        return (-1 if "embed" in name or "wte" in name or "wpe" in name else 1 << 30, position)
    return (int(match.group(1)), position)


def _quantize_steps(t: LoadTensor, precision: Precision, act: int) -> Iterator[tuple[str, str, int]]:
    """The allocations (``("malloc", tag, bytes)``) and frees (``("free", tag, 0)``) of quantizing one tensor."""
    n = t.numel
    yield "malloc", "16-bit", n * act
    if precision.quant == "int8":
        yield "malloc", "keep", t.out_features * 4  # row scales (SCB)
        yield "malloc", "keep", n  # int8 weight
    else:
        blocks = math.ceil(n / BLOCKSIZE_4BIT)
        yield "malloc", "absmax", blocks * 4
        yield "malloc", "keep", (n + 1) // 2
        yield "malloc", "keep", CODE_4BIT_BYTES
        if precision.double_quant:
            yield "malloc", "keep", 4  # offset = absmax.mean()
            yield "malloc", "centred", blocks * 4  # absmax - offset
            yield "malloc", "keep", math.ceil(blocks / NESTED_BLOCKSIZE) * 4  # nested absmax
            yield "malloc", "keep", blocks  # quantized absmax
            yield "free", "centred", 0
            yield "free", "absmax", 0
    yield "free", "16-bit", 0


def simulate_loading(arch: Architecture, precision: Precision, order: str = "sorted") -> LoadPhase:
    """Replay the loading of ``arch`` at ``precision`` on a CUDA device through the caching allocator model."""
    runtime = runtime_dtype(precision, "cuda")
    act = DTYPE_BYTES[runtime]
    pool = CachingAllocatorModel()
    peak, peak_tensor = 0, ""
    for t in arch.others:
        if t.buffer:
            pool.malloc(t.numel * DTYPE_BYTES[loaded_dtype(t.dtype, runtime)])
    for t in load_tensors(arch, precision, order):
        if not t.quantized:
            pool.malloc(t.nbytes)
        else:
            held: dict[str, int] = {}
            for op, tag, nbytes in _quantize_steps(t, precision, act):
                if op == "free":
                    pool.free(held.pop(tag))
                elif nbytes and tag != "keep":
                    held[tag] = pool.malloc(nbytes)
                elif nbytes:
                    pool.malloc(nbytes)
        if pool.peak_allocated_bytes > peak:
            peak, peak_tensor = pool.peak_allocated_bytes, t.name
    return LoadPhase(pool.peak_allocated_bytes, pool.allocated_bytes, pool.reserved_bytes, peak_tensor, pool)
