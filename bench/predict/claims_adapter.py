"""The predictor as the claims verdicts take it: a plain ``predict(spec) -> bytes | None`` callable.

``bench.claims`` must not import ``bench.predict``; the command that judges claims builds this callable
and passes it in, so a verdict can say "predicted" where no GPU measured the case.
"""

from __future__ import annotations

from typing import Any

from bench.config.hardware import HardwareProfile
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
        pred = _predict(gpu, spec, nvidia_smi=False)
        return None if pred is None else pred.fit_bytes

    return predict


def claims_nvidia_smi_predictor(gpu: HardwareProfile | None = None) -> Any:
    """A ``predict(spec) -> bytes | None``: the predicted nvidia-smi reading for the process after loading
    and one generation without clean-up (``nvidia_smi_bytes``: context plus the caching allocator's pool),
    on ``gpu``; None when the spec cannot be predicted or the device keeps no CUDA pool."""

    def predict(spec: Any) -> int | None:
        pred = _predict(gpu, spec, nvidia_smi=True)
        return None if pred is None else pred.nvidia_smi_bytes

    return predict
