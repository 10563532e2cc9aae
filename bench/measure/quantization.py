"""What a loaded model really stores: weight bytes (quantization state included) and quantized layer counts."""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench.config.precision import Precision


def _tensor_bytes(t: Any) -> int:
    return t.numel() * t.element_size()


def _quant_state_tensors(param: Any) -> list[Any]:
    """Tensors bitsandbytes keeps beside a quantized weight but outside parameters and buffers."""
    out = []
    state = getattr(param, "quant_state", None)
    while state is not None:
        for name in ("absmax", "code", "offset"):
            t = getattr(state, name, None)
            if t is not None and hasattr(t, "element_size"):
                out.append(t)
        state = getattr(state, "state2", None)
    scb = getattr(param, "SCB", None)
    if scb is not None and hasattr(scb, "element_size"):
        out.append(scb)
    return out


def weights_bytes(model: Any) -> int:
    """Bytes the loaded model occupies: parameters, buffers and bitsandbytes quantization state, each once."""
    seen: set[tuple[int, int]] = set()
    total = 0

    def add(t: Any) -> None:
        nonlocal total
        key = (t.data_ptr(), _tensor_bytes(t))
        if t.data_ptr() and key in seen:
            return
        seen.add(key)
        total += _tensor_bytes(t)

    for p in model.parameters():
        add(p)
        for t in _quant_state_tensors(p):
            add(t)
    for b in model.buffers():
        add(b)
    for module in model.modules():
        # bitsandbytes LLM.int8 moves the per-row scales from weight.SCB to module.state.SCB on first use
        scb = getattr(getattr(module, "state", None), "SCB", None)
        if scb is not None and hasattr(scb, "element_size"):
            add(scb)
    return total


def inspect_quantization(model: Any, precision: Precision) -> dict[str, Any]:
    """Count linear layers by kind and storage dtype; raise if a quantized precision did not apply.

    A case that silently ran unquantized is an error, not a result.
    """
    import torch

    kinds: Counter[str] = Counter()
    unquantized: list[str] = []
    for name, module in model.named_modules():
        cls = type(module).__name__
        if cls in ("Linear8bitLt", "Linear4bit", "LinearFP4", "LinearNF4"):
            kinds[cls] += 1
        elif isinstance(module, torch.nn.Linear):
            kinds["Linear"] += 1
            unquantized.append(name)
    dtypes = Counter(str(p.dtype).replace("torch.", "") for p in model.parameters())
    quantized_layers = sum(v for k, v in kinds.items() if k != "Linear")
    details: dict[str, Any] = {
        "method": f"bitsandbytes-{precision.quant}" if precision.quantized else "none",
        "quantized_linear_layers": quantized_layers,
        "unquantized_linear_layers": kinds.get("Linear", 0),
        "unquantized_linear_names": unquantized[:16],
        "parameter_dtypes": dict(dtypes),
        "weights_bytes": weights_bytes(model),
        "double_quant": precision.double_quant,
    }
    if precision.quantized:
        if quantized_layers == 0:
            raise RuntimeError(
                f"precision {precision.name} was requested but no linear layer was quantized "
                f"(layer kinds: {dict(kinds)}); refusing to report an unquantized run as {precision.name}"
            )
        expected = "uint8" if precision.quant in ("nf4", "fp4") else "int8"
        if expected not in dtypes:
            raise RuntimeError(
                f"precision {precision.name}: no {expected} weight storage found (dtypes {dict(dtypes)})"
            )
    return details
