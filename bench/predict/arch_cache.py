"""Architecture summaries on disk: the meta-device build runs once per config, later predictions need no torch.

An :class:`~bench.predict.architecture.Architecture` is what the predictor needs of a model (every linear
layer's shape and role, every other tensor's size and dtype, the config's dimensions). Building it imports
torch and transformers and instantiates the model on the meta device: seconds, most of a ``bench predict``.
The summary is written as JSON under ``$BENCH_CACHE_DIR/architectures/`` and read back with the standard
library, keyed by a hash of everything the build depends on: the config (a registered model's shipped
config.json with its overrides, or a checkpoint's config as a dict), the config class, the family, the
installed transformers version (whose modules decide the tensors and which layers bitsandbytes replaces),
the machine fingerprint (:mod:`bench.config.machine`: CPU, ISA extensions, torch, transformers and bitsandbytes
versions, so two hosts of one name but another ISA or stack never share a summary) and the fields of the
summary itself (a summary written before a field was added is never read).

The cache is only a cache: a missing, unreadable or stale file means a fresh build, and a cache directory
that cannot be written means no file; a prediction never fails because of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench.config import machine
from bench.config.locations import cache_dir
from bench.predict.architecture import Architecture, LinearLayer, OtherTensor
from bench.units import slugify

SUBDIR = "architectures"
FORMAT = 1  # bump when the meaning of a stored field changes (an added or removed field changes the key by itself)


@functools.lru_cache(maxsize=1)
def transformers_version() -> str | None:
    """The installed transformers version, read from its metadata (transformers is not imported)."""
    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return None


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def summary_key(name: str, family: str, config_class: str, config: Mapping[str, Any]) -> str:
    """The hex digest a summary is stored under: config, config class, family, transformers version, machine
    fingerprint, format."""
    payload = {
        "format": FORMAT,
        "fields": [_field_names(c) for c in (Architecture, LinearLayer, OtherTensor)],
        "name": name,
        "family": family,
        "config_class": config_class,
        "config": config,
        "transformers": transformers_version(),
        "machine": machine.fingerprint().digest,
    }
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def summary_path(name: str, key: str) -> Path:
    """Where the summary of ``name`` under ``key`` lives: ``$BENCH_CACHE_DIR/architectures/<name>-<key16>.json``."""
    return cache_dir() / SUBDIR / f"{slugify(name, 'model')}-{key[:16]}.json"


def to_json(arch: Architecture) -> dict[str, Any]:
    """The summary as plain JSON values (layers and tensors as lists of dicts)."""
    return dataclasses.asdict(arch)


def from_json(data: Mapping[str, Any]) -> Architecture:
    """An :class:`Architecture` from :func:`to_json`'s output; ``KeyError``/``TypeError`` when it does not match."""
    values = {name: data[name] for name in _field_names(Architecture)}
    values["linears"] = tuple(LinearLayer(**{k: lin[k] for k in _field_names(LinearLayer)}) for lin in data["linears"])
    values["others"] = tuple(OtherTensor(**{k: t[k] for k in _field_names(OtherTensor)}) for t in data["others"])
    return Architecture(**values)


def load(path: Path, key: str) -> Architecture | None:
    """The summary stored at ``path`` under ``key``, or None when it is missing, unreadable or another key's."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("key") != key:
            return None
        return from_json(stored["architecture"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def save(path: Path, key: str, arch: Architecture) -> bool:
    """Write the summary atomically (a reader never sees half a file); False when the cache cannot be written."""
    text = json.dumps({"key": key, "architecture": to_json(arch)}, separators=(",", ":"))
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return False
    return True


def cached_architecture(
    name: str, family: str, config_class: str, config: Mapping[str, Any], build: Callable[[], Architecture]
) -> Architecture:
    """The summary of this config from the cache, else ``build()`` (the meta-device build), stored for next time."""
    key = summary_key(name, family, config_class, config)
    path = summary_path(name, key)
    arch = load(path, key)
    if arch is None:
        arch = build()
        save(path, key, arch)
    return arch
