"""The predictor as the claims verdicts take it: a plain ``predict(spec) -> bytes | None`` callable.

``bench.claims`` must not import ``bench.predict``; the command that judges claims builds this callable
and passes it in, so a verdict can say "predicted" where no GPU measured the case.
"""

from __future__ import annotations

from typing import Any

from bench.config.hardware import HardwareProfile
from bench.config.precision import get_precision
from bench.errors import BadInputError
from bench.predict.memory import predict_memory


def _predict(gpu: HardwareProfile | None, spec: Any, nvidia_smi: bool) -> Any:
    try:
        return predict_memory(
            spec.model,
            spec.precision,
            spec.context_tokens,
            spec.batch_size,
            spec.new_tokens,
            gpu,
            attn_implementation=spec.attn_implementation,
            cache=getattr(spec, "cache", "config"),
            nvidia_smi=nvidia_smi,
        )
    except BadInputError:
        return None


def claims_predictor(gpu: HardwareProfile | None = None) -> Any:
    """A ``predict(spec) -> bytes | None`` for the claims verdicts: the predicted fit figure of a case spec on
    ``gpu`` (None: a generic CUDA GPU), the live peak over loading and generation plus context and slack
    (``fit_bytes``), or None when the spec cannot be predicted."""

    def predict(spec: Any) -> int | None:
        if getattr(spec, "engine", "eager") == "llama.cpp" or get_precision(spec.precision).is_gguf:
            return _llamacpp_bytes(spec, gpu)
        pred = _predict(gpu, spec, nvidia_smi=False)
        return None if pred is None else pred.fit_bytes

    return predict


def _llamacpp_bytes(spec: Any, gpu: HardwareProfile | None) -> int | None:
    """llama.cpp's predicted buffers plus the CUDA context (the card's measured one, else the assumed default)."""
    from bench.predict.fixed_costs import cuda_context_bytes
    from bench.predict.llamacpp import predict_llamacpp

    try:
        kv_type = getattr(spec, "kv_cache_type", "auto")
        pred = predict_llamacpp(spec.model, spec.precision, spec.context_tokens, spec.new_tokens, kv_type)
    except BadInputError:
        return None
    return pred.total_bytes + cuda_context_bytes(gpu)[0]


def claims_nvidia_smi_predictor(gpu: HardwareProfile | None = None) -> Any:
    """A ``predict(spec) -> bytes | None``: the predicted nvidia-smi reading for the process after loading
    and one generation without clean-up (``nvidia_smi_bytes``: context plus the caching allocator's pool),
    on ``gpu``; None when the spec cannot be predicted or the device keeps no CUDA pool."""

    def predict(spec: Any) -> int | None:
        if getattr(spec, "engine", "eager") == "llama.cpp" or get_precision(spec.precision).is_gguf:
            return _llamacpp_bytes(spec, gpu)  # ggml's own buffers: no caching allocator keeps blocks
        pred = _predict(gpu, spec, nvidia_smi=True)
        return None if pred is None else pred.nvidia_smi_bytes

    return predict
