"""One immutable record per measured case: identity, status, raw samples, memory, telemetry, flags."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.config.spec import CaseSpec, TimingPolicy, from_known_fields
from bench.errors import BadInputError
from bench.results import metrics
from bench.results.load_phase import LoadPhase, UserView

# The version of the record's JSON form, stored under "schema". Records written before the field
# existed are version 1. A change to the form bumps it and adds a step to _UPGRADES.
SCHEMA_VERSION = 4
FIRST_SCHEMA_VERSION = 1
STATUSES = ("ok", "oom", "error", "timeout", "skipped")
# Registered Phi-3 models that version-1 harnesses built from transformers' Phi3Config() defaults,
# which have no sliding window: their cache kept every token, unlike the real checkpoint's.
_V1_WINDOWLESS_MODELS = frozenset({"phi-3-mini", "phi-3-mini-2l", "phi-3-tiny"})
V1_WITHOUT_WINDOW_FLAG = "built_without_window"


def _upgrade_1_to_2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2 adds the case's cache policy and engine, what the cache held, compile time and roofline.

    A version-1 record measured none of these: the new fields keep their defaults ("not recorded"). A
    version-1 random-weights Phi-3 record was built without the checkpoint's sliding window, so it is
    flagged ``built_without_window``: its KV cache and peak are those of a runtime that keeps every token.
    """
    out = dict(data)
    spec = out.get("spec") or {}
    if spec.get("weights", "random") == "random" and spec.get("model") in _V1_WINDOWLESS_MODELS:
        flags = list(out.get("flags") or [])
        if V1_WITHOUT_WINDOW_FLAG not in flags:
            flags.append(V1_WITHOUT_WINDOW_FLAG)
        out["flags"] = flags
    return out


# _UPGRADES[n] turns the dict of a version-n record into a version-(n + 1) one; one entry per
# version from FIRST_SCHEMA_VERSION up to SCHEMA_VERSION - 1.
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _upgrade_1_to_2}


def _upgrade_2_to_3(data: dict[str, Any]) -> dict[str, Any]:
    """Version 3 adds the loading phase and the user view (``load``, ``user_view``) and the machine
    fingerprint's digest (``machine``) and the ``quality`` block (KL, top-1, perplexity against the
    reference precision): a version-2 record recorded none of them, so they keep their
    defaults ("not recorded")."""
    return dict(data)


_UPGRADES[2] = _upgrade_2_to_3


def _upgrade_3_to_4(data: dict[str, Any]) -> dict[str, Any]:
    """Version 4 adds the predictor's figures beside the measured ones (``prediction``) and, in ``quantization``,
    the 4-bit path bitsandbytes took and its quantization state: a version-3 record has neither, so they keep
    their defaults ("not recorded") and such a record is never flagged ``predictor_drift``."""
    return dict(data)


_UPGRADES[3] = _upgrade_3_to_4


def upgrade_record_dict(data: dict[str, Any]) -> dict[str, Any]:
    """A stored record's dict in the current schema (a new dict; the input is not changed).

    A record without "schema" is version 1. A record from a newer harness raises
    :class:`BadInputError`; an unknown or malformed version raises ValueError.
    """
    if not isinstance(data, dict):
        raise TypeError(f"a record is a JSON object, not {type(data).__name__}")
    version = data.get("schema", FIRST_SCHEMA_VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"record schema {version!r} is not a version number")
    if version > SCHEMA_VERSION:
        raise BadInputError(
            f"record of schema {version} written by a newer harness (this one reads up to {SCHEMA_VERSION}); "
            "upgrade bench"
        )
    if version < FIRST_SCHEMA_VERSION:
        raise ValueError(f"record schema {version} is older than any this harness knows ({FIRST_SCHEMA_VERSION})")
    out = dict(data)
    for step in range(version, SCHEMA_VERSION):
        out = _UPGRADES[step](out)
    out["schema"] = SCHEMA_VERSION
    return out


@dataclass(frozen=True)
class Samples:
    """Every timed repetition, in seconds. Generate fills ttft/e2e/itl; encode fills latency."""

    ttft_s: tuple[float, ...] = ()
    e2e_s: tuple[float, ...] = ()
    itl_s: tuple[tuple[float, ...], ...] = ()
    latency_s: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (lists)."""
        return {
            "ttft_s": list(self.ttft_s),
            "e2e_s": list(self.e2e_s),
            "itl_s": [list(r) for r in self.itl_s],
            "latency_s": list(self.latency_s),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Samples:
        """Inverse of :meth:`to_dict`."""
        return cls(
            ttft_s=tuple(data.get("ttft_s", ())),
            e2e_s=tuple(data.get("e2e_s", ())),
            itl_s=tuple(tuple(r) for r in data.get("itl_s", ())),
            latency_s=tuple(data.get("latency_s", ())),
        )


@dataclass(frozen=True)
class Memory:
    """Memory of one case in bytes (see DESIGN.md, "Memory semantics"); None where not measurable."""

    weights_bytes: int | None = None
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    nvml_process_peak_bytes: int | None = None
    baseline_bytes: int | None = None
    kv_cache_bytes: int | None = None
    host_peak_rss_bytes: int | None = None
    host_baseline_rss_bytes: int | None = None
    device_total_bytes: int | None = None
    memory_cap_bytes: int | None = None
    nvml_method: str | None = None
    # what a decoder's KV cache held at the end of generation (None / () for encoders and older records):
    # the cache layer classes, the sliding window (tokens), "window" or "full", tokens kept per layer, and
    # the bytes of the tensors' storage (a window layer's keys are a view of one token more, until the next step)
    cache_layer_classes: tuple[str, ...] = ()
    cache_window_tokens: int | None = None
    cache_policy: str | None = None
    kv_cache_tokens: int | None = None
    kv_cache_storage_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Memory:
        """Inverse of :meth:`to_dict`; ignores unknown keys."""
        memory = from_known_fields(cls, data)
        return dataclasses.replace(memory, cache_layer_classes=tuple(memory.cache_layer_classes or ()))


@dataclass(frozen=True)
class Roofline:
    """What a decode step must read, and the memory bandwidth it is held against (None where unknown).

    ``weights_read_bytes``: the weights as stored, read once per decode step (an untied input embedding
    counts only the rows the step looks up). ``kv_bytes_per_token``: KV-cache bytes per token per sequence,
    as the cache stores them. ``window_tokens``: the sliding window that caps the tokens a step reads (None:
    every token). ``memory_bandwidth_source``: "measured by bench profile" (the device's profile),
    "datasheet" (the profile's datasheet figure) or "measured host bandwidth" (a copy benchmark at worker
    start, a CPU without a host profile); ``memory_bandwidth_note`` says which profile or measurement, or why
    the bandwidth is unknown. The fraction itself is derived (:func:`bench.results.metrics.roofline_metrics`).
    """

    weights_read_bytes: int | None = None
    kv_bytes_per_token: int | None = None
    window_tokens: int | None = None
    memory_bandwidth_bytes_per_s: float | None = None
    memory_bandwidth_source: str | None = None
    memory_bandwidth_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Roofline:
        """Inverse of :meth:`to_dict`; ignores unknown keys."""
        return from_known_fields(cls, data)


@dataclass(frozen=True)
class Prediction:
    """What the memory predictor (bench.predict) said for this case, attached when the record was written, so
    that every record carries its own prediction beside its measurement; None where there was none.

    ``peak_reading`` names the measured reading the predicted peak stands beside
    (:func:`bench.results.metrics.measured_peak_for_prediction`); ``bnb_4bit_path`` is the bitsandbytes 4-bit path
    predicted for; ``assumptions`` lists what the predictor assumes of the libraries that the loaded model
    contradicted, or that it had to guess; ``note`` says why there is no prediction.
    """

    predicted_peak_bytes: int | None = None
    predicted_weights_bytes: int | None = None
    peak_reading: str | None = None
    bnb_4bit_path: str | None = None
    assumptions: tuple[str, ...] = ()
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return dict(dataclasses.asdict(self), assumptions=list(self.assumptions))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Prediction:
        """Inverse of :meth:`to_dict`; ignores unknown keys; None or {} is "not recorded"."""
        found = from_known_fields(cls, data or {})
        return dataclasses.replace(found, assumptions=tuple(found.assumptions or ()))


@dataclass(frozen=True)
class Record:
    """The result of one case. Statistics are derived from ``samples`` by :attr:`metrics`."""

    spec: CaseSpec
    status: str
    run_id: str = ""
    policy: TimingPolicy = field(default_factory=TimingPolicy)
    error: str | None = None
    device: str = "cpu"
    device_name: str = ""
    host: str = ""
    started_utc: str = ""
    wall_s: float = 0.0
    samples: Samples = field(default_factory=Samples)
    memory: Memory = field(default_factory=Memory)
    model_info: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)
    telemetry: dict[str, Any] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    schema: int = SCHEMA_VERSION
    # the compiled engine's first call of the case (compilation and one warm-up generation), never a timed
    # sample; None for eager. engine_info: mode, cache and how many calls ran compiled (bench.measure.engines)
    compile_s: float | None = None
    engine_info: dict[str, Any] = field(default_factory=dict)
    roofline: Roofline = field(default_factory=Roofline)
    # schema 3: the worker group's load, and the user view (load + one generation, no clean-up)
    load: LoadPhase = field(default_factory=LoadPhase)
    user_view: UserView = field(default_factory=UserView)
    # the digest of the machine fingerprint (bench.config.machine) of the process that measured it; "" = not recorded
    machine: str = ""
    # the precision's quality against the model's reference precision (bench.measure.quality_stage; formulas in
    # bench.results.quality): kl_mean_nats, kl_p99_nats, top1_agreement, perplexity, reference_precision,
    # eval_text_chars, tokens_scored, ...; empty where not measured (no --quality)
    quality: dict[str, Any] = field(default_factory=dict)
    # schema 4: the predictor's peak and weights for this case (bench.predict.record_check); gaps in ``metrics``
    prediction: Prediction = field(default_factory=Prediction)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"record status {self.status!r} is not one of {', '.join(STATUSES)}")

    @property
    def ok(self) -> bool:
        """True when the case was measured."""
        return self.status == "ok"

    @property
    def metrics(self) -> dict[str, float]:
        """Derived statistics (medians, percentiles, rates) computed from the raw samples."""
        s = self.spec
        if s.scenario == "generate":
            out = metrics.generate_metrics(
                self.samples.ttft_s,
                self.samples.e2e_s,
                self.samples.itl_s,
                s.batch_size,
                s.context_tokens,
                s.new_tokens,
            )
            timings = self.engine_info.get("llama_timings") if self.engine_info else None
            if out and timings:
                out.update(
                    metrics.engine_timing_metrics(
                        self.samples.ttft_s,
                        self.samples.e2e_s,
                        timings.get("prompt_eval_s") or (),
                        timings.get("eval_s") or (),
                        s.new_tokens,
                    )
                )
            if out:
                rf = self.roofline
                out.update(
                    metrics.roofline_metrics(
                        out.get("tpot_s"),
                        rf.weights_read_bytes,
                        rf.kv_bytes_per_token,
                        rf.memory_bandwidth_bytes_per_s,
                        s.batch_size,
                        s.context_tokens,
                        s.new_tokens,
                        rf.window_tokens,
                    )
                )
            out.update(metrics.prediction_gaps(self))
            return out
        out = metrics.encode_metrics(self.samples.latency_s, s.batch_size, s.context_tokens)
        if out:
            out.update(metrics.prediction_gaps(self))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for one JSONL line; ``metrics`` is included for readers but recomputed on load."""
        return {
            "schema": self.schema,
            "run_id": self.run_id,
            "key": self.spec.key,
            "spec": self.spec.to_dict(),
            "policy": self.policy.to_dict(),
            "status": self.status,
            "error": self.error,
            "device": self.device,
            "device_name": self.device_name,
            "host": self.host,
            "started_utc": self.started_utc,
            "wall_s": self.wall_s,
            "samples": self.samples.to_dict(),
            "memory": self.memory.to_dict(),
            "model_info": self.model_info,
            "quantization": self.quantization,
            "telemetry": self.telemetry,
            "flags": list(self.flags),
            "compile_s": self.compile_s,
            "engine_info": self.engine_info,
            "roofline": self.roofline.to_dict(),
            "load": self.load.to_dict(),
            "user_view": self.user_view.to_dict(),
            "machine": self.machine,
            "quality": self.quality,
            "prediction": self.prediction.to_dict(),
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        """Inverse of :meth:`to_dict`; a record of an older schema is upgraded first (:func:`upgrade_record_dict`)."""
        data = upgrade_record_dict(data)
        return cls(
            spec=CaseSpec.from_dict(data["spec"]),
            status=data["status"],
            run_id=data.get("run_id", ""),
            policy=TimingPolicy.from_dict(data.get("policy", {})),
            error=data.get("error"),
            device=data.get("device", "cpu"),
            device_name=data.get("device_name", ""),
            host=data.get("host", ""),
            started_utc=data.get("started_utc", ""),
            wall_s=float(data.get("wall_s", 0.0)),
            samples=Samples.from_dict(data.get("samples", {})),
            memory=Memory.from_dict(data.get("memory", {})),
            model_info=dict(data.get("model_info", {})),
            quantization=dict(data.get("quantization", {})),
            telemetry=dict(data.get("telemetry", {})),
            flags=tuple(data.get("flags", ())),
            schema=data["schema"],
            compile_s=data.get("compile_s"),
            engine_info=dict(data.get("engine_info") or {}),
            roofline=Roofline.from_dict(data.get("roofline") or {}),
            load=LoadPhase.from_dict(data.get("load")),
            user_view=UserView.from_dict(data.get("user_view")),
            machine=str(data.get("machine") or ""),
            quality=dict(data.get("quality") or {}),
            prediction=Prediction.from_dict(data.get("prediction")),
        )

    def replace(self, **changes: Any) -> Record:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)
