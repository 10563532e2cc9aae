"""The results store: one JSON line per case, appended, flushed and fsynced as each case ends."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from bench.errors import BadInputError
from bench.results.record import Record

RESULTS_FILE = "results.jsonl"
ENVIRONMENT_FILE = "environment.json"


def results_path(run_dir: str | os.PathLike[str]) -> Path:
    """Where a run folder keeps its records (a path to a .jsonl file is accepted as is)."""
    p = Path(run_dir)
    return p if p.suffix == ".jsonl" else p / RESULTS_FILE


def append_record(path: str | os.PathLike[str], record: Record) -> None:
    """Append one record durably: a crash after this returns never loses it."""
    line = json.dumps(record.to_dict(), sort_keys=True, allow_nan=True) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def load_records(run_dir: str | os.PathLike[str], *, strict: bool = True) -> list[Record]:
    """Read every record of a run folder or JSONL file.

    A truncated last line (a write cut by a crash) is skipped; any other corrupt line raises
    :class:`BadInputError` naming the file and line, unless ``strict`` is False.
    """
    path = results_path(run_dir)
    if not path.is_file():
        raise BadInputError(f"no results file at {path}: run 'bench run --out {path.parent}' first")
    records: list[Record] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(Record.from_dict(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            if number == len(lines) or not strict:
                continue
            raise BadInputError(f"{path}:{number} is not a valid record ({exc}); fix or delete that line") from exc
    return records


def latest_by_key(records: Iterable[Record]) -> dict[str, Record]:
    """The last record written for each case key (a resumed case supersedes its earlier try)."""
    out: dict[str, Record] = {}
    for r in records:
        out[r.spec.key] = r
    return out


def completed_keys(run_dir: str | os.PathLike[str]) -> set[str]:
    """Keys of cases that already have a record; ``--resume`` skips these."""
    path = results_path(run_dir)
    if not path.is_file():
        return set()
    return {r.spec.key for r in load_records(path, strict=False)}
