"""A fake local Hugging Face hub cache (``models--org--name/refs/main`` + ``snapshots/<commit>/``), and a
``snapshot_download`` stand-in that records its calls and never reaches the network."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

REVISION = "0123456789abcdef0123456789abcdef01234567"


def repo_folder(cache: Path, repo_id: str) -> Path:
    """The cache folder of a model repository, as huggingface_hub names it."""
    return cache / ("models--" + repo_id.replace("/", "--"))


def config_only_checkpoint(path: Path) -> Path:
    """A checkpoint folder that resolves but cannot load: phi-3-tiny's config.json and an empty weights file."""
    import json

    from bench.config.models import get_model

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(get_model("phi-3-tiny").config_dict()))
    (path / "model.safetensors").write_bytes(b"")
    return path


def save_tiny_checkpoint(path: Path, sliding_window: int | None = None) -> Path:
    """A tiny Phi-3 checkpoint (random fp16 weights, save_pretrained) in ``path``."""
    import dataclasses

    from bench.config.models import resolve_source
    from bench.measure.loader import build_random

    source = resolve_source("phi-3-tiny", "random")
    if sliding_window is not None:
        base = source.config_factory

        def factory():
            config = base()
            config.sliding_window = sliding_window
            return config

        source = dataclasses.replace(source, config_factory=factory)
    build_random(source, "float16", "cpu").save_pretrained(str(path))
    return path


def add_snapshot(cache: Path, repo_id: str, checkpoint: Path, revision: str = REVISION) -> Path:
    """Put a copy of ``checkpoint`` into ``cache`` as ``repo_id``'s snapshot ``revision``, with refs/main."""
    folder = repo_folder(cache, repo_id)
    snapshot = folder / "snapshots" / revision
    shutil.copytree(checkpoint, snapshot)
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(revision)
    return snapshot


class FakeDownloader:
    """Stands in for ``huggingface_hub.snapshot_download``: local lookups go to the real function (offline);
    a download copies ``source`` into the cache as ``repo_id`` (or fails when there is no source)."""

    def __init__(self, real: Any, source: Path | None = None):
        self.real, self.source = real, source
        self.downloads: list[dict[str, Any]] = []

    def __call__(self, repo_id: str, **kwargs: Any) -> str:
        if kwargs.get("local_files_only"):
            return self.real(repo_id, **kwargs)
        self.downloads.append({"repo_id": repo_id, **kwargs})
        if self.source is None:
            raise OSError("no network in tests")
        return str(add_snapshot(Path(kwargs["cache_dir"]), repo_id, self.source))
