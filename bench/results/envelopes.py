"""Reading a run folder's environment envelope(s): one dict per run, or a list of them after a merge."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.errors import BadInputError
from bench.results.record import Record
from bench.results.store import ENVIRONMENT_FILE, results_path

# Library versions whose change can move speed or memory; a comparison names every difference.
LIBRARY_KEYS = ("torch", "transformers", "bitsandbytes")
# Versions below the libraries that also move the numbers; named as information.
PLATFORM_KEYS = ("cuda", "driver")


def environment_path(run_dir: str | os.PathLike[str]) -> Path:
    """Where a run folder keeps its environment envelope(s)."""
    return results_path(run_dir).parent / ENVIRONMENT_FILE


def read_envelopes(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The envelopes of a run folder: ``[]`` when it has none, a list of one for a single run, all of a merged run."""
    path = environment_path(run_dir)
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path} is not valid JSON ({exc}); restore it from the run or delete it") from exc
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list) and all(isinstance(e, dict) for e in data):
        return list(data)
    raise BadInputError(f"{path} must hold an object or a list of objects, not {type(data).__name__}")


def write_envelopes(run_dir: str | os.PathLike[str], envelopes: Sequence[dict[str, Any]]) -> Path:
    """Write envelopes as a list (the merged-run form) into a run folder; returns the file written."""
    path = environment_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(envelopes), indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path


def unique_envelopes(envelopes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Envelopes without repeats (same run id, or identical content when there is no run id), order kept."""
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for env in envelopes:
        ident = str(env.get("run_id") or json.dumps(env, sort_keys=True, default=str))
        if ident not in seen:
            seen.add(ident)
            out.append(env)
    return out


def envelope_for(record: Record, envelopes: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The envelope of the run that wrote a record: matched by run id (resumed runs included), else the only one."""
    if record.run_id:
        for env in envelopes:
            for candidate in (env, *(e for e in env.get("resumed", ()) if isinstance(e, dict))):
                if candidate.get("run_id") == record.run_id:
                    return candidate
    return envelopes[0] if len(envelopes) == 1 else None


def version_of(envelope: dict[str, Any] | None, key: str) -> str | None:
    """A version string from an envelope (a plain string, or a dict with a ``version`` entry); None if absent."""
    if not envelope:
        return None
    value = envelope.get(key)
    if isinstance(value, dict):
        value = value.get("version")
    return None if value in (None, "") else str(value)


def version_differences(
    baseline: dict[str, Any] | None, current: dict[str, Any] | None, keys: Sequence[str] = LIBRARY_KEYS
) -> dict[str, tuple[str | None, str | None]]:
    """``{name: (baseline version, current version)}`` for each version that differs between two envelopes.

    Nothing is reported when either envelope is missing (unknown is not a difference; the caller warns).
    """
    if baseline is None or current is None:
        return {}
    out = {}
    for key in keys:
        b, c = version_of(baseline, key), version_of(current, key)
        if b != c:
            out[key] = (b, c)
    return out
