"""Suites: TOML files of models x precisions x scenarios x batch sizes x contexts x new tokens, and their policy."""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from bench.config.models import CACHE_POLICIES, DECODER, DEFAULT_CACHE, default_weights, resolve_source
from bench.config.precision import check_engine_precision, get_precision
from bench.config.spec import (
    DEFAULT_ENGINE,
    DEFAULT_KV_CACHE_TYPE,
    DEFAULT_THREADS,
    ENGINES,
    KV_CACHE_TYPES,
    SCENARIOS,
    CaseSpec,
    TimingPolicy,
)
from bench.errors import BadInputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_TOP_KEYS = {"name", "description", "device", "policy", "group"}
_GROUP_KEYS = {
    "models",
    "precisions",
    "scenario",
    "batch_sizes",
    "contexts",
    "new_tokens",
    "attn_implementation",
    "seed",
    "cache",
    "engines",
    "kv_cache_type",
    "threads",
}
_POLICY_KEYS = {f.name for f in fields(TimingPolicy)}


@dataclass(frozen=True)
class Group:
    """One block of a suite: the cross product of its lists is its cases."""

    models: tuple[str, ...]
    precisions: tuple[str, ...]
    contexts: tuple[int, ...]
    batch_sizes: tuple[int, ...] = (1,)
    new_tokens: tuple[int, ...] = (32,)
    scenario: str | None = None  # default: generate for decoders, encode for encoders
    attn_implementation: str = "sdpa"
    seed: int = 0
    cache: str = DEFAULT_CACHE  # decoders' KV-cache policy (CACHE_POLICIES); encoders keep no cache
    engines: tuple[str, ...] = (DEFAULT_ENGINE,)  # how the model runs while timed (ENGINES); each is a case
    kv_cache_type: str = DEFAULT_KV_CACHE_TYPE  # the KV cache's element type (KV_CACHE_TYPES; non-auto: llama.cpp)
    threads: int = DEFAULT_THREADS  # llama.cpp's CPU threads (0: the engine's default)


@dataclass(frozen=True)
class Suite:
    """A named set of cases and how to time them."""

    name: str
    description: str
    device: str
    policy: TimingPolicy
    groups: tuple[Group, ...]
    source: str = ""
    weights: str = "random"
    overrides: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def cases(self) -> list[CaseSpec]:
        """Every case of the suite, validated (unknown names and over-long sequences are refused)."""
        return expand(self)


def shipped_suites() -> dict[str, str]:
    """Names and descriptions of the suites shipped with the package."""
    out = {}
    for entry in sorted(resources.files("bench.config.suites").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
            out[entry.name[:-5]] = str(data.get("description", ""))
    return out


def load_suite(name_or_path: str) -> Suite:
    """A shipped suite by name, or a suite TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise BadInputError(f"suite file {path} does not exist")
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        names = shipped_suites()
        if name_or_path not in names:
            raise BadInputError(
                f"unknown suite {name_or_path!r}; choose one of: {', '.join(names)} or pass a .toml file"
            )
        text = resources.files("bench.config.suites").joinpath(f"{name_or_path}.toml").read_text(encoding="utf-8")
        source = f"bench/suites/{name_or_path}.toml"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(f"suite {source} is not valid TOML: {exc}") from exc
    return parse_suite(data, source)


def _check_keys(data: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise BadInputError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(sorted(allowed))}")


def _int_list(value: Any, key: str, where: str, minimum: int) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in items):
        raise BadInputError(f"{where}: key {key!r} must be a non-empty list of integers >= {minimum}, got {value!r}")
    return tuple(items)


def _str_list(value: Any, key: str, where: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise BadInputError(f"{where}: key {key!r} must be a non-empty list of strings, got {value!r}")
    return tuple(items)


def parse_suite(data: dict[str, Any], source: str = "<suite>") -> Suite:
    """Validate a parsed TOML suite; every error names the file and the key."""
    _check_keys(data, _TOP_KEYS, source)
    policy_data = data.get("policy", {})
    if not isinstance(policy_data, dict):
        raise BadInputError(f"{source}: key 'policy' must be a table")
    _check_keys(policy_data, _POLICY_KEYS, f"{source} [policy]")
    try:
        policy = TimingPolicy(**policy_data)
    except TypeError as exc:
        raise BadInputError(f"{source} [policy]: {exc}") from exc
    for key in ("warmup_runs", "min_repetitions", "max_repetitions", "telemetry_repetitions"):
        value = getattr(policy, key)
        if not isinstance(value, int) or value < (0 if key in ("warmup_runs", "telemetry_repetitions") else 1):
            raise BadInputError(f"{source} [policy]: key {key!r} must be a positive integer, got {value!r}")
    seconds = policy.telemetry_min_duration_s
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < float("inf"):
        raise BadInputError(
            f"{source} [policy]: key 'telemetry_min_duration_s' must be a number of seconds >= 0, got {seconds!r}"
        )
    if policy.max_repetitions < policy.min_repetitions:
        raise BadInputError(f"{source} [policy]: 'max_repetitions' is below 'min_repetitions'")
    raw_groups = data.get("group")
    if not isinstance(raw_groups, list) or not raw_groups:
        raise BadInputError(f"{source}: needs at least one [[group]] table with models, precisions and contexts")
    groups = []
    for i, g in enumerate(raw_groups, start=1):
        where = f"{source} [[group]] #{i}"
        if not isinstance(g, dict):
            raise BadInputError(f"{where}: must be a table")
        _check_keys(g, _GROUP_KEYS, where)
        for required in ("models", "precisions", "contexts"):
            if required not in g:
                raise BadInputError(f"{where}: missing key {required!r}")
        scenario = g.get("scenario")
        if scenario is not None and scenario not in SCENARIOS:
            raise BadInputError(f"{where}: key 'scenario' must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
        cache = g.get("cache", DEFAULT_CACHE)
        if cache not in CACHE_POLICIES:
            raise BadInputError(f"{where}: key 'cache' must be one of {', '.join(CACHE_POLICIES)}, got {cache!r}")
        engines = _str_list(g.get("engines", [DEFAULT_ENGINE]), "engines", where)
        for engine in engines:
            check_engine(engine, f"{where}: key 'engines'")
        kv_type = g.get("kv_cache_type", DEFAULT_KV_CACHE_TYPE)
        check_kv_cache_type(kv_type, f"{where}: key 'kv_cache_type'")
        threads = check_threads(g.get("threads", DEFAULT_THREADS), f"{where}: key 'threads'", allow_default=True)
        groups.append(
            Group(
                models=_str_list(g["models"], "models", where),
                precisions=_str_list(g["precisions"], "precisions", where),
                contexts=_int_list(g["contexts"], "contexts", where, 1),
                batch_sizes=_int_list(g.get("batch_sizes", [1]), "batch_sizes", where, 1),
                new_tokens=_int_list(g.get("new_tokens", [32]), "new_tokens", where, 1),
                scenario=scenario,
                attn_implementation=str(g.get("attn_implementation", "sdpa")),
                seed=int(g.get("seed", 0)),
                cache=cache,
                engines=engines,
                kv_cache_type=kv_type,
                threads=threads,
            )
        )
    device = data.get("device", "cpu")
    if not isinstance(device, str):
        raise BadInputError(f"{source}: key 'device' must be a string like 'cpu' or 'cuda'")
    return Suite(
        str(data.get("name", Path(source).stem)),
        str(data.get("description", "")),
        device,
        policy,
        tuple(groups),
        source,
    )


def expand(suite: Suite) -> list[CaseSpec]:
    """The cases of a suite, with command-line overrides applied, each validated against its model."""
    o = suite.overrides
    device = o.get("device") or suite.device
    cases: list[CaseSpec] = []
    for g in suite.groups:
        models = o.get("models") or g.models
        for model in models:
            weights = default_weights(model, o.get("weights", suite.weights))
            # encoders keep no KV cache: a suite's or the command line's cache policy applies to decoders only
            cache = o.get("cache") or g.cache
            source = resolve_source(model, weights)
            if source.family == DECODER:
                source = source.with_cache(cache)
            else:
                cache = DEFAULT_CACHE
            scenario = g.scenario or ("generate" if source.family == DECODER else "encode")
            if o.get("models") and g.scenario and ((scenario == "generate") != (source.family == DECODER)):
                scenario = "generate" if source.family == DECODER else "encode"
            new_tokens = (o.get("new_tokens") or g.new_tokens) if scenario == "generate" else (0,)
            for engine, precision, batch, context, new in itertools.product(
                o.get("engines") or g.engines,
                o.get("precisions") or g.precisions,
                o.get("batch_sizes") or g.batch_sizes,
                o.get("contexts") or g.contexts,
                new_tokens,
            ):
                get_precision(precision)
                check_engine_precision(engine, precision)
                kv_type = o.get("kv_cache_type") or g.kv_cache_type
                if kv_type != DEFAULT_KV_CACHE_TYPE and engine != "llama.cpp":
                    raise BadInputError(
                        f"KV cache type {kv_type!r} is set by llama.cpp only; engine {engine!r} keeps the model's "
                        "dtype: drop --kv-cache-type or use --engine llama.cpp"
                    )
                threads = o.get("threads") or g.threads
                if threads != DEFAULT_THREADS and engine != "llama.cpp":
                    raise BadInputError(
                        f"--threads {threads} is set for llama.cpp only; engine {engine!r} uses torch's threads: "
                        "drop --threads or use --engine llama.cpp"
                    )
                if context + new > source.max_positions:
                    raise BadInputError(
                        f"{model}: prompt of {context} plus {new} new tokens is {context + new} tokens, over the "
                        f"model's maximum of {source.max_positions}; use a shorter --context or fewer --new-tokens"
                    )
                cases.append(
                    CaseSpec(
                        model=model,
                        precision=precision,
                        scenario=scenario,
                        batch_size=batch,
                        context_tokens=context,
                        new_tokens=new,
                        weights=weights,
                        attn_implementation=g.attn_implementation,
                        device=device,
                        suite=suite.name,
                        seed=g.seed,
                        cache=cache,
                        engine=engine,
                        kv_cache_type=kv_type,
                        threads=threads,
                    )
                )
    if not cases:
        raise BadInputError(f"suite {suite.name} has no cases")
    if o.get("cache") and not any(c.scenario == "generate" for c in cases):
        raise BadInputError(
            f"--cache {o['cache']}: every case of this run is an encoder, and encoders keep no KV cache; drop --cache"
        )
    return cases


def check_threads(threads: Any, where: str = "--threads", allow_default: bool = False) -> int:
    """``threads`` when it is a whole number of at least 1 (or 0, the engine's default, where allowed)."""
    low = 0 if allow_default else 1
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < low:
        raise BadInputError(f"{where}: threads must be a whole number of at least {low}, got {threads!r}")
    return threads


def check_kv_cache_type(kv_type: Any, where: str = "--kv-cache-type") -> str:
    """``kv_type`` when it is one of KV_CACHE_TYPES; otherwise a BadInputError naming it and the choices."""
    if kv_type not in KV_CACHE_TYPES:
        raise BadInputError(f"{where}: KV cache type {kv_type!r} is not one of {', '.join(KV_CACHE_TYPES)}")
    return str(kv_type)


def check_engine(engine: str, where: str = "--engine") -> str:
    """``engine`` when it is one of ENGINES; otherwise a BadInputError naming it and the choices."""
    if engine not in ENGINES:
        raise BadInputError(f"{where}: engine {engine!r} is not one of {', '.join(ENGINES)}")
    return engine


def with_overrides(suite: Suite, **overrides: Any) -> Suite:
    """The suite with command-line overrides (lists replace the suite's lists in every group)."""
    clean = {k: v for k, v in overrides.items() if v}
    return Suite(
        suite.name,
        suite.description,
        suite.device,
        suite.policy,
        suite.groups,
        suite.source,
        suite.weights,
        {**suite.overrides, **clean},
    )
