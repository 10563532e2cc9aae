"""Joining run folders (the shards of a suite, or several machines) into one: ``bench merge``.

Records keep their own device; the same case on the same device from two sources is refused; the
envelopes become a list.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bench.errors import BadInputError
from bench.results.envelopes import environment_path, read_envelopes, unique_envelopes, write_envelopes
from bench.results.record import Record
from bench.results.store import append_record, load_records, results_path


def _latest_by_identity(records: Sequence[Record]) -> dict[tuple[str, str], Record]:
    out: dict[tuple[str, str], Record] = {}
    for r in records:  # within one run folder a resumed retry supersedes the earlier record
        out[(r.device_name, r.spec.key)] = r
    return out


def merge_runs(dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]) -> list[Record]:
    """Join run folders (shards, machines) into ``out_dir``; returns the records written.

    A case is identified by (device name, case key): the same case on two GPUs is two records, the
    same case on the same GPU from two folders is refused. A folder with an environment.json and
    no results (an empty shard) contributes its envelope only.
    """
    if not dirs:
        raise BadInputError("nothing to merge: name the run folders of the shards or machines")
    out = Path(out_dir)
    sources: list[Path] = []
    for d in dirs:
        p = Path(d)
        if p.resolve() == out.resolve():
            raise BadInputError(f"cannot merge {p} into itself; choose another --out folder")
        if p.resolve() not in {s.resolve() for s in sources}:
            sources.append(p)
    if results_path(out).exists():
        raise BadInputError(f"{results_path(out)} already exists; merge into a new folder")
    seen: dict[tuple[str, str], Path] = {}
    merged: list[Record] = []
    envelopes: list[dict] = []
    for src in sources:
        has_results = results_path(src).is_file()
        if not has_results and not environment_path(src).is_file():
            raise BadInputError(f"{src} is not a run folder (no results.jsonl or environment.json)")
        records = list(_latest_by_identity(load_records(src)).values()) if has_results else []
        for r in records:
            ident = (r.device_name, r.spec.key)
            if ident in seen:
                raise BadInputError(
                    f"case {r.spec.key} on {r.device_name or 'an unnamed device'} is in both {seen[ident]} and {src}; "
                    "each case may come from one folder only (did two shards overlap, or a folder repeat?)"
                )
            seen[ident] = src
        merged += records
        envelopes += read_envelopes(src)
    out.mkdir(parents=True, exist_ok=True)
    path = results_path(out)
    path.touch()
    for r in merged:
        append_record(path, r)
    write_envelopes(out, unique_envelopes(envelopes))
    return merged
