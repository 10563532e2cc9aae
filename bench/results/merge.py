"""Joining run folders (the shards of a suite, or several machines) into one: ``bench merge``.

Records keep their own device; the same case on the same device from two sources is refused; the
envelopes become a list.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bench.errors import BadInputError
from bench.results.envelopes import unique_envelopes
from bench.results.record import Record
from bench.results.run_folder import RunFolder


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
    out = RunFolder(out_dir)
    sources: list[Path] = []
    for d in dirs:
        p = Path(d)
        if p.resolve() == out.root.resolve():
            raise BadInputError(f"cannot merge {p} into itself; choose another --out folder")
        if p.resolve() not in {s.resolve() for s in sources}:
            sources.append(p)
    if out.results_file.exists():
        raise BadInputError(f"{out.results_file} already exists; merge into a new folder")
    seen: dict[tuple[str, str], Path] = {}
    merged: list[Record] = []
    envelopes: list[dict] = []
    for src in sources:
        folder = RunFolder(src)
        if not folder.is_run_folder():
            raise BadInputError(f"{src} is not a run folder (no {folder.RESULTS} or {folder.ENVIRONMENT})")
        records = list(_latest_by_identity(folder.load_records()).values()) if folder.has_results() else []
        for r in records:
            ident = (r.device_name, r.spec.key)
            if ident in seen:
                raise BadInputError(
                    f"case {r.spec.key} on {r.device_name or 'an unnamed device'} is in both {seen[ident]} and {src}; "
                    "each case may come from one folder only (did two shards overlap, or a folder repeat?)"
                )
            seen[ident] = src
        merged += records
        envelopes += folder.read_envelopes()
    out.create(with_results=True)
    out.append_all(merged)
    out.write_envelopes(unique_envelopes(envelopes))
    return merged
