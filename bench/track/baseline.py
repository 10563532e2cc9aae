"""Regression baselines: a run's records stored per GPU under ``profiles/baselines/<gpu-slug>/``.

Each baseline folder is a run folder (``results.jsonl`` + ``environment.json``, the envelopes of
the runs its records came from) plus ``baseline.json`` saying where and when it was taken. A run
that spans several GPUs (a merged matrix) becomes one baseline per GPU.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BadInputError
from bench.results.envelopes import LIBRARY_KEYS, envelope_for, unique_envelopes, version_of
from bench.results.record import Record
from bench.results.run_folder import RunFolder
from bench.units import slugify, utc_now

BASELINES_DIR = "baselines"
DEFAULT_PROFILES_DIR = "profiles"


def gpu_slug(device_name: str) -> str:
    """A folder name for a device: lower case, runs of other characters as one dash ("NVIDIA H200" -> "nvidia-h200")."""
    return slugify(device_name, "unnamed-device")


def baseline_dir(profiles_dir: str | os.PathLike[str], device_name: str) -> Path:
    """Where the baseline of one device lives."""
    return Path(profiles_dir) / BASELINES_DIR / gpu_slug(device_name)


@dataclass(frozen=True)
class Baseline:
    """A stored baseline: its folder, records, envelopes and metadata."""

    path: Path
    device_name: str
    records: tuple[Record, ...]
    envelopes: tuple[dict[str, Any], ...]
    meta: dict[str, Any]


def _write_run(
    dest: Path, records: Sequence[Record], envelopes: Sequence[dict[str, Any]], meta: dict[str, Any]
) -> None:
    """Write a run folder next to ``dest`` and swap it in, so a failed write never leaves half a baseline."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        folder = RunFolder(tmp)
        folder.append_all(records)
        folder.write_envelopes(envelopes)
        folder.write_baseline_meta(meta)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_baseline(
    run_dir: str | os.PathLike[str],
    profiles_dir: str | os.PathLike[str] = DEFAULT_PROFILES_DIR,
    *,
    device_name: str | None = None,
    now: Callable[[], str] = utc_now,
) -> list[Path]:
    """Store a run as the baseline of each GPU it was measured on (or only ``device_name``); returns the folders.

    Every record is kept, failures included (a case that OOMs in the baseline and fits now is news).
    An existing baseline of the same GPU is replaced.
    """
    run = RunFolder(run_dir)
    records = run.load_records()
    if not records:
        raise BadInputError(f"{run.results_file} has no records; run the suite before saving it as a baseline")
    envelopes = run.read_envelopes()
    by_device: dict[str, list[Record]] = {}
    for r in records:
        by_device.setdefault(r.device_name, []).append(r)
    if device_name is not None:
        if device_name not in by_device:
            found = ", ".join(repr(d) for d in sorted(by_device))
            raise BadInputError(f"no records of device {device_name!r} in {run_dir}; it holds {found}")
        by_device = {device_name: by_device[device_name]}
    written = []
    for name, recs in sorted(by_device.items()):
        envs = unique_envelopes(e for r in recs if (e := envelope_for(r, envelopes)) is not None)
        statuses: dict[str, int] = {}
        for r in recs:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        meta = {
            "device_name": name,
            "source": str(Path(run_dir)),
            "saved_utc": now(),
            "cases": len({r.spec.key for r in recs}),
            "statuses": statuses,
            "versions": {
                k: sorted({v for e in envs if (v := version_of(e, k))}) for k in (*LIBRARY_KEYS, "git_commit")
            },
        }
        dest = baseline_dir(profiles_dir, name)
        _write_run(dest, recs, envs, meta)
        written.append(dest)
    return written


def list_baselines(profiles_dir: str | os.PathLike[str] = DEFAULT_PROFILES_DIR) -> list[Baseline]:
    """Every stored baseline under a profiles folder, sorted by folder name."""
    root = Path(profiles_dir) / BASELINES_DIR
    if not root.is_dir():
        return []
    folders = [p for p in sorted(root.iterdir()) if not p.name.startswith(".") and RunFolder(p).has_results()]
    return [read_baseline(p) for p in folders]


def read_baseline(path: Path) -> Baseline:
    """A baseline folder's records, envelopes and metadata."""
    folder = RunFolder(path)
    meta = folder.read_baseline_meta()
    records = tuple(folder.load_records())
    name = meta.get("device_name") or (records[0].device_name if records else path.name)
    return Baseline(path, name, records, tuple(folder.read_envelopes()), meta)


def load_baseline(profiles_dir: str | os.PathLike[str], device_name: str) -> Baseline:
    """The stored baseline of one device; a missing one names the baselines there are and how to make one."""
    path = baseline_dir(profiles_dir, device_name)
    if not RunFolder(path).has_results():
        have = ", ".join(repr(b.device_name) for b in list_baselines(profiles_dir)) or "none"
        raise BadInputError(
            f"no baseline for {device_name!r} under {Path(profiles_dir) / BASELINES_DIR} (stored: {have}); "
            "save one with 'bench baseline save RUN_DIR' on that GPU"
        )
    return read_baseline(path)


def load_baselines_for(
    profiles_dir: str | os.PathLike[str], device_names: Sequence[str]
) -> tuple[list[Record], list[dict[str, Any]], list[str]]:
    """Records and envelopes of the baselines of several devices, and the devices that have none."""
    records: list[Record] = []
    envelopes: list[dict[str, Any]] = []
    missing = []
    for name in sorted(set(device_names)):
        if not RunFolder(baseline_dir(profiles_dir, name)).has_results():
            missing.append(name)
            continue
        b = load_baseline(profiles_dir, name)
        records += b.records
        envelopes += b.envelopes
    return records, unique_envelopes(envelopes), missing
