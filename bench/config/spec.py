"""The frozen, hashable description of one measured case, separate from how it is timed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

SCENARIOS = ("generate", "encode")
# How a case's model runs while timed (bench.measure.engines): transformers as it comes, or a static KV cache
# with the decode step compiled by torch.compile (CUDA graphs on a GPU), or llama.cpp running a GGUF file.
ENGINES = ("eager", "compiled", "llama.cpp")
DEFAULT_ENGINE = "eager"
# The KV cache's element type: "auto" is the engine's own (transformers: the model's dtype; llama.cpp: f16);
# llama.cpp also stores it as q8_0 or q4_0 (bench.measure.llamacpp).
KV_CACHE_TYPES = ("auto", "f16", "q8_0", "q4_0")
DEFAULT_KV_CACHE_TYPE = "auto"
# llama.cpp's CPU threads (n_threads and n_threads_batch); 0 is the engine's default, every core of the
# process's CPU set (bench.measure.llamacpp), and the record's engine_info.n_threads says what was used.
DEFAULT_THREADS = 0

# Fields added after the first run folders were written, with their defaults: a field at its default is left
# out of CaseSpec.key's digest, so the keys of cases written before the field existed stay the same.
KEY_OPTIONAL_DEFAULTS: dict[str, Any] = {
    "cache": "config",
    "engine": DEFAULT_ENGINE,
    "kv_cache_type": DEFAULT_KV_CACHE_TYPE,
    "threads": DEFAULT_THREADS,
}

T = TypeVar("T")


def from_known_fields(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build dataclass ``cls`` from ``data``, ignoring keys it has no field for (newer schema versions)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True, order=True)
class CaseSpec:
    """What is measured: model, weights, precision, scenario and shape. Identity for resume and compare."""

    model: str
    precision: str
    scenario: str
    batch_size: int
    context_tokens: int
    new_tokens: int = 0
    weights: str = "random"
    attn_implementation: str = "sdpa"
    device: str = "cpu"
    suite: str = "adhoc"
    seed: int = 0
    cache: str = "config"  # KV-cache policy of decoders: config | window | full (bench.config.models.CACHE_POLICIES)
    engine: str = DEFAULT_ENGINE  # eager | compiled | llama.cpp (ENGINES)
    kv_cache_type: str = DEFAULT_KV_CACHE_TYPE  # auto | f16 | q8_0 | q4_0 (KV_CACHE_TYPES; the last three: llama.cpp)
    threads: int = DEFAULT_THREADS  # llama.cpp's CPU threads; 0: the engine's default (DEFAULT_THREADS)

    @property
    def key(self) -> str:
        """A short stable identifier of the case (independent of the suite it came from)."""
        ident = {
            k: v
            for k, v in self.to_dict().items()
            if k != "suite" and not (k in KEY_OPTIONAL_DEFAULTS and v == KEY_OPTIONAL_DEFAULTS[k])
        }
        digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
        shape = f"b{self.batch_size}/L{self.context_tokens}/n{self.new_tokens}"
        return f"{self.model}/{self.precision}/{self.scenario}/{shape}/{digest}"

    @property
    def label(self) -> str:
        """A short human name: model, precision, scenario and shape (``phi-3-mini fp16 generate b1 L128 n64``)."""
        shape = f"b{self.batch_size} L{self.context_tokens}"
        if self.scenario == "generate":
            shape += f" n{self.new_tokens}"
        weights = "" if self.weights == "random" else f" [{self.weights}]"
        cache = "" if self.cache == "config" else f" [cache {self.cache}]"
        engine = "" if self.engine == DEFAULT_ENGINE else f" [{self.engine}]"
        kv = "" if self.kv_cache_type == DEFAULT_KV_CACHE_TYPE else f" [kv {self.kv_cache_type}]"
        threads = "" if self.threads == DEFAULT_THREADS else f" [threads {self.threads}]"
        return f"{self.model} {self.precision} {self.scenario} {shape}{weights}{cache}{engine}{kv}{threads}"

    @property
    def group(self) -> tuple[str, ...]:
        """Cases that share a loaded model: same model, weights, precision, device, cache policy and engine."""
        return (self.model, self.weights, self.precision, self.device, self.cache, self.engine)

    @property
    def total_tokens(self) -> int:
        """Prompt plus generated tokens per sequence."""
        return self.context_tokens + self.new_tokens

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseSpec:
        """Inverse of :meth:`to_dict`; ignores unknown keys from newer schema versions."""
        return from_known_fields(cls, data)

    def with_(self, **changes: Any) -> CaseSpec:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TimingPolicy:
    """How a case is timed: warm-up, repetitions, duration and the noise threshold."""

    warmup_runs: int = 1
    min_repetitions: int = 3
    max_repetitions: int = 50
    min_duration_s: float = 0.0
    noisy_cv: float = 0.10
    timeout_s: float = 600.0
    # telemetry (power, energy, clocks, NVML memory at 20 ms) is sampled in repetitions of its own after the
    # timed ones, so the sampling thread never runs beside a timed call: at least this many, and this long
    telemetry_repetitions: int = 1
    telemetry_min_duration_s: float = 0.25

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TimingPolicy:
        """Inverse of :meth:`to_dict`."""
        return from_known_fields(cls, data)
