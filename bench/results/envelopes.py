"""Environment envelopes (one dict per run; a list of them after a merge): matching records to them and
comparing their versions. Reading and writing them is :class:`bench.results.run_folder.RunFolder`'s."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from bench.results.record import Record

# Library versions whose change can move speed or memory; a comparison names every difference.
LIBRARY_KEYS = ("torch", "transformers", "bitsandbytes")
# Versions below the libraries that also move the numbers; named as information.
PLATFORM_KEYS = ("cuda", "driver")


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
