"""What a card must hold and what nvidia-smi shows, when a user loads a model and generates in one process.

Three figures beside the steady-state peak (``total_bytes``), each a prediction:

- ``load_peak_bytes``: the CUDA context plus the live peak while loading (the weights loaded so far, the
  16-bit tensor being quantized and its workspace; :mod:`.loading`).
- ``fit_bytes``: what the card must hold to load and run: the context, the larger of the two live peaks
  (loading, generation) and the slack. The caching allocator hands cached blocks back before an allocation
  fails, so cached blocks do not count here. Fit verdicts use this figure.
- ``nvidia_smi_bytes``: what nvidia-smi shows for the process after loading and one generation with no
  ``empty_cache()``: the context plus the allocator's pool, which keeps the blocks freed while loading and
  while generating. The generation is replayed through the same allocator model after the loading: the
  cuBLAS workspaces, the prefill's KV cache layer by layer with the prefill's transient tensors in between,
  then every decode step growing each layer's keys and values by concatenation (a new tensor one token
  longer, the old one freed: at once per layer with transformers' ``DynamicCache``, or at the end of the
  step with the tuple caches of transformers 4.35 and older, ``cache_release="step"``). On a card, torch
  frees cached segments before it fails an allocation, so the reading is capped at the card's usable memory.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.config.hardware import HardwareProfile
from bench.config.models import DECODER
from bench.config.precision import Precision, runtime_dtype
from bench.predict.architecture import DTYPE_BYTES, Architecture
from bench.predict.cuda_allocator import CachingAllocatorModel
from bench.predict.fixed_costs import cublas_workspace_bytes
from bench.predict.kv_cache import storage_tokens
from bench.predict.loading import LoadPhase, simulate_loading
from bench.predict.runtimes import CURRENT, Runtime


@dataclass(frozen=True)
class GenerationShape:
    """What the generation replay needs: the shape of the call and its transient bytes."""

    batch_size: int
    context_tokens: int
    new_tokens: int
    prefill_transient_bytes: int  # activations and workspace live at the prefill's peak (one layer's worth)
    workspace_bytes: tuple[int, ...] = ()  # long-lived workspaces allocated on the first matmul (cuBLAS)
    decode_transient_bytes: int = 0  # a decode step's largest short-lived tensors (a dequantized weight, ...)
    prefill_tensor_bytes: int = 0  # the largest single short-lived tensor of the prefill (0: one block)
    # tensors a decode step's layer allocates and frees one after the other, before and after its keys and
    # values (e.g. 4-bit weights dequantized to 16 bits for a matmul of several rows)
    decode_before_kv: tuple[int, ...] = ()
    decode_after_kv: tuple[int, ...] = ()


@dataclass(frozen=True)
class UserView:
    """The loading phase and the pool after one generation, in bytes (context not included)."""

    load: LoadPhase
    pool_after_generation_bytes: int  # the allocator's reserved high-water over loading and generation
    generation_peak_allocated_bytes: int  # live peak of the replayed generation (weights included)


def _kv_tensor_bytes(arch: Architecture, batch: int, tokens: int, act: int) -> int:
    """One layer's keys (or values) for ``tokens`` tokens of ``batch`` sequences."""
    return batch * arch.kv_heads * arch.head_dim * tokens * act


def _logits(pool: CachingAllocatorModel, arch: Architecture, rows: int, act: int) -> int:
    """The head's logits in the compute dtype, then their float32 copy; the first is freed, the copy kept."""
    half = pool.malloc(rows * arch.vocab * act)
    full = pool.malloc(rows * arch.vocab * 4)
    pool.free(half)
    return full


def _pieces(total: int, largest: int) -> list[int]:
    """A phase's short-lived bytes as tensors: as many of the largest tensor as fit, then the rest."""
    if total <= 0:
        return []
    if largest <= 0 or largest >= total:
        return [total]
    count, rest = divmod(total, largest)
    return [largest] * count + ([rest] if rest else [])


def replay_prefill(
    pool: CachingAllocatorModel, arch: Architecture, act: int, shape: GenerationShape, runtime: Runtime = CURRENT
) -> tuple[list[int], int | None]:
    """One forward over the prompt: per layer its transient tensors, then its keys and values (kept).

    Returns the KV-cache handles and the float32 logits' handle (None for an encoder)."""
    layers = arch.num_layers if arch.family == DECODER else 0
    cache: list[int] = []
    for _ in range(max(layers, 1)):
        transient = [pool.malloc(n) for n in _pieces(shape.prefill_transient_bytes, shape.prefill_tensor_bytes)]
        if layers:
            kv = _kv_tensor_bytes(arch, shape.batch_size, shape.context_tokens, act)
            cache += [pool.malloc(kv), pool.malloc(kv)]
        for handle in transient:
            pool.free(handle)
    if not layers:
        return cache, None
    rows = shape.batch_size * (shape.context_tokens if runtime.logits == "all" else 1)
    return cache, _logits(pool, arch, rows, act)


def replay_generation(
    pool: CachingAllocatorModel,
    arch: Architecture,
    precision: Precision,
    shape: GenerationShape,
    runtime: Runtime = CURRENT,
    prefill: Callable[[CachingAllocatorModel], tuple[list[int], int | None]] | None = None,
) -> None:
    """Replay one generate call through ``pool``: workspaces, the prefill, then every decode step growing each
    layer's keys and values by concatenation (the old tensor freed per ``runtime.cache_release``).

    ``prefill`` replaces :func:`replay_prefill` with a finer trace (it returns the KV handles and the logits')."""
    act = DTYPE_BYTES[runtime_dtype(precision, "cuda")]
    for nbytes in shape.workspace_bytes:
        pool.malloc(nbytes)
    cache, logits = prefill(pool) if prefill else replay_prefill(pool, arch, act, shape, runtime)
    if logits is not None and not runtime.logits_kept:
        pool.free(logits)
        logits = None
    layers = arch.num_layers if arch.family == DECODER else 0
    for step in range(1, shape.new_tokens if layers else 0):
        tokens = storage_tokens(shape.context_tokens, step, arch.sliding_window)
        kv = _kv_tensor_bytes(arch, shape.batch_size, tokens, act)
        old, cache = cache, []
        for i in range(layers):
            transient = pool.malloc(shape.decode_transient_bytes) if shape.decode_transient_bytes else None
            for nbytes in shape.decode_before_kv:
                pool.free(pool.malloc(nbytes))
            for j in (2 * i, 2 * i + 1):
                cache.append(pool.malloc(kv))
                if runtime.cache_release == "layer":
                    pool.free(old[j])
            for nbytes in shape.decode_after_kv:
                pool.free(pool.malloc(nbytes))
            if transient is not None:
                pool.free(transient)
        new_logits = _logits(pool, arch, shape.batch_size, act)
        if runtime.cache_release == "step":
            for handle in old:
                pool.free(handle)
        if logits is not None:
            pool.free(logits)
        if runtime.logits_kept:
            logits = new_logits
        else:
            pool.free(new_logits)
            logits = None


def user_view(arch: Architecture, precision: Precision, shape: GenerationShape, runtime: Runtime = CURRENT) -> UserView:
    """Load ``arch`` at ``precision``, then generate at ``shape``, in one pool with no clean-up in between."""
    load = simulate_loading(arch, precision, runtime.load_order)
    pool = load.allocator
    before = pool.peak_allocated_bytes
    pool.peak_allocated_bytes = pool.allocated_bytes
    replay_generation(pool, arch, precision, shape, runtime)
    generation_peak = pool.peak_allocated_bytes
    pool.peak_allocated_bytes = max(before, generation_peak)
    return UserView(load, pool.peak_reserved_bytes, generation_peak)


@functools.lru_cache(maxsize=32)
def _loading(arch: Architecture, precision: Precision) -> LoadPhase:
    """The loading phase, replayed once per architecture and precision (read only: its pool is not reused)."""
    return simulate_loading(arch, precision)


def loading_fields(
    arch: Architecture,
    precision: Precision,
    peak: Any,
    context_bytes: int,
    total_bytes: int,
    context_tokens: int,
    batch_size: int,
    new_tokens: int,
    device_kind: str,
    card: HardwareProfile | None,
    nvidia_smi: bool = True,
) -> dict[str, Any]:
    """The loading and user-view fields of a :class:`~bench.predict.memory.MemoryPrediction`.

    ``peak`` is the steady state's :class:`~bench.predict.memory.Peak`, ``context_bytes`` its fixed costs
    (CUDA context) and ``total_bytes`` its predicted peak. On a CPU there is no caching allocator to model:
    ``fit_bytes`` is the steady-state total and the rest is None.
    """
    steady = total_bytes
    if device_kind != "cuda":
        return {"fit_bytes": int(steady)}
    act = DTYPE_BYTES[runtime_dtype(precision, "cuda")]
    dequantized = [lin.numel * act for lin in arch.layer_linears(0) if lin.quantized] if precision.quant else []
    # 4-bit weights are dequantized to 16 bits for a matmul of more rows than the fused kernel takes
    prefill_dequant = dequantized if precision.quant != "int8" and batch_size * context_tokens > 4 else []
    decode_dequant = dequantized if precision.quant != "int8" and batch_size > CURRENT.fused_4bit_max_rows else []
    rows = batch_size * context_tokens
    shape = GenerationShape(
        batch_size,
        context_tokens,
        new_tokens,
        int(peak.activation_bytes),
        (cublas_workspace_bytes(card) // 2,) * 2,
        0,
        max([rows * arch.intermediate * act, *prefill_dequant]),
        (),
        tuple(decode_dequant),
    )
    if nvidia_smi:
        view = user_view(arch, precision, shape)
        load, pool = view.load, view.pool_after_generation_bytes
    else:
        load, pool = _loading(arch, precision), None
    load_peak = context_bytes + load.peak_allocated_bytes
    smi = note = None
    if pool is not None:
        smi = context_bytes + pool
        if card is not None and smi > card.usable_memory_bytes:
            note = (
                f"the allocator's pool would outgrow {card.name}: torch returns its cached blocks when an "
                "allocation fails, so nvidia-smi shows the card about full"
            )
            smi = card.usable_memory_bytes
        elif smi > 2 * max(steady, load_peak):
            note = (
                "the pool grows with the KV cache's concatenations (each longer tensor needs a new block, freed "
                "shorter ones stay cached): on a card it fills the card, where torch returns cached blocks"
            )
    return {
        "load_peak_bytes": int(load_peak),
        "load_peak_tensor": load.peak_tensor,
        "fit_bytes": int(max(steady, load_peak)),
        "nvidia_smi_bytes": None if smi is None else int(smi),
        "nvidia_smi_note": note,
        "pool_after_load_bytes": int(load.reserved_after_bytes),
    }
