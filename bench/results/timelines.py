"""Telemetry timelines: one JSON line per case in a run folder's ``telemetry/timelines.jsonl``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.errors import BadInputError

TIMELINES_FILE = Path("telemetry") / "timelines.jsonl"


def timelines_path(run_dir: str | os.PathLike[str]) -> Path:
    """The run's telemetry side file: DIR/telemetry/timelines.jsonl."""
    return Path(run_dir) / TIMELINES_FILE


def write_timeline(run_dir: str | os.PathLike[str], case_key: str, timeline: Iterable[Mapping[str, Any]]) -> Path:
    """Append one case's timeline (``{"key": ..., "rows": [...]}``) to the run's side file, durably."""
    path = timelines_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"key": case_key, "rows": [dict(r) for r in timeline]}, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def read_timelines(run_dir: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """Every case's timeline in a run folder, by case key (a later write for a key wins); {} when none.

    A truncated last line (a crash mid-write) is skipped; any other bad line raises BadInputError.
    """
    path = timelines_path(run_dir)
    if not path.is_file():
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            out[str(data["key"])] = list(data["rows"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            if number == len(lines):
                continue
            raise BadInputError(
                f"{path}:{number} is not a telemetry timeline ({exc}); fix or delete that line"
            ) from exc
    return out
