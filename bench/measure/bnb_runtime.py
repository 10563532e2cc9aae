"""bitsandbytes as a run meets it: a quiet, offline import, the 4-bit path its layers took, their quantization state.

The import itself is :func:`bench.config.bnb_import.import_bitsandbytes` (the hub-kernel lookup's messages kept,
not printed); this module reads what the loaded library chose, so a run says which kernel it got instead of
printing a failed download in the middle of its progress bar.
"""

from __future__ import annotations

from typing import Any

from bench.config.bnb_import import HUB_KERNEL_ATTRIBUTE, import_bitsandbytes
from bench.config.precision import BNB_4BIT_CPU_DEQUANTIZE, BNB_4BIT_CPU_PACKED, BNB_4BIT_CUDA


def has_avx512_bf16() -> bool:
    """Whether bitsandbytes sees AVX512_BF16 on this CPU (its own ``has_avx512bf16()``, the check its 4-bit layers
    use); without bitsandbytes, the CPU's flag as the machine fingerprint read it."""
    from bench.config.precision import bitsandbytes_available

    if bitsandbytes_available():
        import_bitsandbytes()
        from bitsandbytes.functional import has_avx512bf16

        return bool(has_avx512bf16())
    from bench.config import machine

    return "avx512_bf16" in machine.fingerprint().isa


def cpu_hub_kernel_loaded() -> bool | None:
    """True when bitsandbytes got its CPU 4-bit kernel from the hub, False when it runs its own, None when the
    module does not say (no AVX512_BF16, or another bitsandbytes version)."""
    import_bitsandbytes()
    import importlib

    ops = importlib.import_module("bitsandbytes.backends.cpu.ops")
    if not hasattr(ops, HUB_KERNEL_ATTRIBUTE):
        return None
    return getattr(ops, HUB_KERNEL_ATTRIBUTE) is not None


def four_bit_layers(model: Any) -> list[Any]:
    """The model's bitsandbytes 4-bit linear layers (none without bitsandbytes)."""
    from bench.config.precision import bitsandbytes_available

    if not bitsandbytes_available():
        return []
    from bitsandbytes.nn import Linear4bit

    return [m for m in model.modules() if isinstance(m, Linear4bit)]


def kernel_path(model: Any, device: str) -> str | None:
    """Which 4-bit path the model's layers take (bench.config.precision.BNB_4BIT_PATHS); None without 4-bit layers.

    On a CPU: repacked when bitsandbytes sees AVX512_BF16 and every layer's ``support_avx512bf16_for_cpu`` is on
    (the condition ``Linear4bit.forward`` checks, in eval mode without grad, as every case runs), or when a layer
    already carries the repacked state; "mixed: ..." when the layers disagree."""
    layers = four_bit_layers(model)
    if not layers:
        return None
    if device.startswith("cuda"):
        return BNB_4BIT_CUDA
    bf16 = has_avx512_bf16()
    paths = set()
    for layer in layers:
        state = getattr(layer.weight, "quant_state", None)
        packed = bool(getattr(state, "packing_format_for_cpu", False))
        switched = bool(getattr(layer, "support_avx512bf16_for_cpu", False)) and bf16
        paths.add(BNB_4BIT_CPU_PACKED if packed or switched else BNB_4BIT_CPU_DEQUANTIZE)
    if len(paths) > 1:
        return "mixed: " + ", ".join(sorted(paths))
    return paths.pop()


def quant_state_facts(model: Any) -> dict[str, Any]:
    """What the 4-bit layers' quantization state really is, for the predictor's assumptions to be checked against:
    block sizes, absmax dtypes, nested block sizes and whether the state is repacked (empty without 4-bit layers)."""
    blocks: set[int] = set()
    absmax: set[str] = set()
    nested: set[int] = set()
    packed: set[bool] = set()
    for layer in four_bit_layers(model):
        state = getattr(layer.weight, "quant_state", None)
        if state is None:
            continue
        blocks.add(int(state.blocksize))
        if getattr(state, "absmax", None) is not None:
            absmax.add(str(state.absmax.dtype).replace("torch.", ""))
        inner = getattr(state, "state2", None) if getattr(state, "nested", False) else None
        if inner is not None:
            nested.add(int(inner.blocksize))
        packed.add(bool(getattr(state, "packing_format_for_cpu", False)))
    if not blocks:
        return {}
    return {
        "blocksizes": sorted(blocks),
        "absmax_dtypes": sorted(absmax),
        "nested_blocksizes": sorted(nested),
        "repacked_for_cpu": sorted(packed),
    }


def set_avx512bf16_switch(model: Any, enabled: bool | None) -> int:
    """Set bitsandbytes' own switch for the CPU AVX512-BF16 path, ``Linear4bit.support_avx512bf16_for_cpu`` (an
    attribute of every 4-bit layer, 0.50.2 ``nn/modules.py``), on every 4-bit layer of ``model`` before its first
    forward; None leaves the library's choice. Returns the number of layers set.

    False takes the dequantizing path every CPU has; True needs a CPU with AVX512_BF16 (refused elsewhere: the
    library would then call a kernel it never registered)."""
    if enabled is None:
        return 0
    if enabled and not has_avx512_bf16():
        raise RuntimeError("this CPU has no AVX512_BF16: bitsandbytes cannot take its repacked 4-bit path here")
    layers = four_bit_layers(model)
    for layer in layers:
        layer.support_avx512bf16_for_cpu = enabled
    return len(layers)


def observations(model: Any, device: str) -> dict[str, Any]:
    """What a record keeps of bitsandbytes' choices for a quantized model, read after the timed runs (so a
    repacked state shows): ``bnb_4bit_kernel_path``, the 4-bit ``quant_state`` facts, whether the CPU kernel came
    from the hub (``bnb_cpu_hub_kernel``), the import's collected hub messages, and what the kernel choice reads
    of the device: torch's CPU capability (bitsandbytes picks its CPU int8 kernels by it), or the GPU's compute
    capability and SM count (its CUDA 4-bit rule)."""
    out: dict[str, Any] = {}
    path = kernel_path(model, device)
    if path is not None:
        out["bnb_4bit_kernel_path"] = path
        out["quant_state"] = quant_state_facts(model)
        if path == BNB_4BIT_CPU_PACKED:
            out["bnb_cpu_hub_kernel"] = cpu_hub_kernel_loaded()
    messages = import_bitsandbytes()
    if messages:
        out["bnb_import_messages"] = list(messages)
    import torch

    if device.startswith("cuda"):  # what bitsandbytes' CUDA 4-bit rule reads of the GPU (_gpu_dispatch_props)
        props = torch.cuda.get_device_properties(torch.device(device))
        out["cuda_compute_capability"] = f"{props.major}.{props.minor}"
        out["cuda_multiprocessor_count"] = int(props.multi_processor_count)
    else:
        out["torch_cpu_capability"] = str(torch.backends.cpu.get_cpu_capability())
    return out
