"""Which telemetry readings failed, the first reason and how often: the sampler's ``unavailable`` entries.

A reading that can never succeed (NotSupported, NoPermission, a function the binding lacks) is
marked permanent and not asked again; every later sample still counts it as failed, so the
summary can tell "never worked" from "failed in 1 of 40 samples".
"""

from __future__ import annotations

from typing import Any


class FailureLog:
    """Failed readings by field: ``field -> [first reason, count]`` plus the fields not to query again."""

    def __init__(self) -> None:
        self._failures: dict[str, list[Any]] = {}
        self._skip: set[str] = set()

    def __contains__(self, field: str) -> bool:
        return field in self._failures

    def fail(self, field: str, reason: str | None, *, permanent: bool) -> None:
        """Count one failure of ``field`` (the first reason is kept); ``permanent`` stops further queries."""
        entry = self._failures.setdefault(field, [reason or "unknown", 0])
        entry[1] += 1
        if permanent:
            self._skip.add(field)

    def count_again(self, field: str) -> None:
        """Count one more failure of a field already logged (a sample where it was not asked again)."""
        self._failures[field][1] += 1

    def skip(self, field: str) -> bool:
        """True (and the failure counted) when ``field`` failed permanently and must not be queried."""
        if field not in self._skip:
            return False
        self.count_again(field)
        return True

    def reasons(self, samples: int) -> dict[str, str]:
        """``field -> reason`` for the summary, with "(in k of n samples)" where it did not fail every time."""
        return {
            field: reason if count >= samples else f"{reason} (in {count} of {samples} samples)"
            for field, (reason, count) in self._failures.items()
        }
