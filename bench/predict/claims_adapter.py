"""The predictor as the claims verdicts take it: a plain ``predict(spec) -> bytes | None`` callable.

``bench.claims`` must not import ``bench.predict``; the command that judges claims builds this callable
and passes it in, so a verdict can say "predicted" where no GPU measured the case.
"""

from __future__ import annotations

from typing import Any

from bench.config.hardware import HardwareProfile
from bench.errors import BadInputError
from bench.predict.memory import predict_memory


def claims_predictor(gpu: HardwareProfile | None = None) -> Any:
    """A ``predict(spec) -> bytes | None`` for the claims verdicts: the predicted peak of a case spec on
    ``gpu`` (None: a generic CUDA GPU), or None when the spec cannot be predicted."""

    def predict(spec: Any) -> int | None:
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
            ).total_bytes
        except BadInputError:
            return None

    return predict
