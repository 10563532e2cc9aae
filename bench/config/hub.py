"""Hugging Face hub ids (``org/name``) resolved through the local hub cache, offline unless a download is allowed.

A hub model's weights are recorded as ``hub:<org/name>@<commit>``: the same identity on every machine (the
snapshot's local path differs between machines), pinned to the revision that was measured. Resolution reads
the cache with huggingface_hub (``models--org--name/refs/main`` and ``snapshots/<commit>/``); it reaches the
network only through :func:`fetch_snapshot`, which the command line calls for ``--allow-download``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from bench.errors import BadInputError

HUB_PREFIX = "hub:"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_TRUE = {"1", "true", "yes", "on"}
# what a measurement needs from a repository: configs, safetensors weights, tokenizer files
DOWNLOAD_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt")


def is_hub_id(model: str) -> bool:
    """True for a hub repository id such as ``microsoft/Phi-3-mini-4k-instruct`` (one slash, no path parts)."""
    return bool(_HUB_ID.match(model)) and ".." not in model


def hub_cache_dir() -> Path:
    """The hub cache folder, read from the environment now (huggingface_hub reads it once, at import).

    The order is huggingface_hub's: ``HF_HUB_CACHE``, ``HUGGINGFACE_HUB_CACHE``, ``HF_HOME``/hub,
    ``XDG_CACHE_HOME``/huggingface/hub, ``~/.cache/huggingface/hub``.
    """
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` forbids network access (``1``, ``true``, ``yes``, ``on``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_weights(repo_id: str, revision: str) -> str:
    """The ``weights`` field of a case measured from a hub snapshot: ``hub:org/name@commit``."""
    return f"{HUB_PREFIX}{repo_id}@{revision}"


def parse_hub_weights(weights: str) -> tuple[str, str]:
    """``(repo_id, revision)`` of a ``hub:org/name@commit`` weights field."""
    body = weights[len(HUB_PREFIX) :] if weights.startswith(HUB_PREFIX) else ""
    repo_id, _, revision = body.partition("@")
    if not is_hub_id(repo_id) or not revision:
        raise BadInputError(f"weights {weights!r} must look like 'hub:org/name@<commit>'")
    return repo_id, revision


def _fetch_hint(repo_id: str) -> str:
    return f"fetch it with `hf download {repo_id}` (huggingface_hub's command line) or pass --allow-download"


def local_snapshot(repo_id: str, revision: str | None = None) -> tuple[Path, str]:
    """The snapshot folder of ``repo_id`` in the local hub cache and its commit, without touching the network.

    ``revision`` None means the cache's ``refs/main``. A repository or revision missing from the cache is a
    :class:`BadInputError` that says how to fetch it.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = hub_cache_dir()
    try:
        path = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError) as exc:
        what = repo_id if revision is None else f"{repo_id} at revision {revision}"
        raise BadInputError(f"{what} is not in the local Hugging Face cache {cache}; {_fetch_hint(repo_id)}") from exc
    return path, path.name


def fetch_snapshot(repo_id: str) -> tuple[Path, str]:
    """Download ``repo_id``'s configs, safetensors weights and tokenizer into the hub cache (``--allow-download``).

    Refused while ``HF_HUB_OFFLINE`` is set: the environment's "no network" wins over the flag.
    """
    if hub_offline():
        raise BadInputError(
            f"{repo_id} is not complete in the local Hugging Face cache {hub_cache_dir()} and HF_HUB_OFFLINE is "
            f"set, so --allow-download cannot fetch it; unset HF_HUB_OFFLINE, or run `hf download {repo_id}`"
        )
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(repo_id, cache_dir=hub_cache_dir(), allow_patterns=list(DOWNLOAD_PATTERNS)))
    except Exception as exc:  # network, authentication, unknown repository: one line, with the cause
        cause = (str(exc).strip().splitlines() or [""])[0]
        raise BadInputError(
            f"cannot download {repo_id} from the Hugging Face hub: {type(exc).__name__}: {cause}"
        ) from exc
    return path, path.name
