"""Regression baselines: a run's records stored per GPU under ``profiles/baselines/<gpu-slug>/``.

Each baseline folder is a run folder (``results.jsonl`` + ``environment.json``, the envelopes of
the runs its records came from) plus ``baseline.json`` saying where and when it was taken. A run
that spans several GPUs (a merged matrix) becomes one baseline per GPU.

A baseline may hold several runs (``bench baseline save --append``): ``baseline.json`` lists them
under ``runs``, each with the run ids of its records, so the gate can judge a case against the spread
of the runs' medians. A baseline saved before ``runs`` existed is one run.
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

    @property
    def runs(self) -> list[dict[str, Any]]:
        """The saved runs, oldest first: ``{"source", "saved_utc", "run_ids"}`` each (one for an older baseline)."""
        runs = self.meta.get("runs")
        if isinstance(runs, list) and runs:
            return [dict(r) for r in runs if isinstance(r, dict)]
        ids = sorted({r.run_id for r in self.records})
        return [{"source": self.meta.get("source"), "saved_utc": self.meta.get("saved_utc"), "run_ids": ids}]

    @property
    def run_of(self) -> dict[str, str]:
        """Run id -> the saved run it belongs to (``"run-1"``, ``"run-2"``, ...), for the gate."""
        return {rid: f"run-{i}" for i, run in enumerate(self.runs, 1) for rid in run.get("run_ids", ())}


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
    append: bool = False,
    now: Callable[[], str] = utc_now,
) -> list[Path]:
    """Store a run as the baseline of each GPU it was measured on (or only ``device_name``); returns the folders.

    Every record is kept, failures included (a case that OOMs in the baseline and fits now is news).
    An existing baseline of the same GPU is replaced, or with ``append`` kept and the run added to it
    as one more run (refused when the baseline already holds a run of the same run id).
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
        dest = baseline_dir(profiles_dir, name)
        run = {"source": str(Path(run_dir)), "saved_utc": now(), "run_ids": sorted({r.run_id for r in recs})}
        runs = [run]
        if append and RunFolder(dest).has_results():
            old = read_baseline(dest)
            _refuse_repeated_run(old, run["run_ids"], run_dir)
            recs, envs, runs = [*old.records, *recs], unique_envelopes([*old.envelopes, *envs]), [*old.runs, run]
        _write_run(dest, recs, envs, _meta(name, recs, envs, runs))
        written.append(dest)
    return written


def _refuse_repeated_run(old: Baseline, run_ids: Sequence[str], run_dir: str | os.PathLike[str]) -> None:
    """A run already in the baseline would count twice in the spread of run medians: refuse it."""
    repeated = sorted(set(run_ids) & set(old.run_of))
    if repeated:
        raise BadInputError(
            f"{run_dir}: run {', '.join(repeated)} is already in the baseline of {old.device_name!r} ({old.path}); "
            "append a new run of the suite, or save without --append to replace the baseline"
        )


def _meta(name: str, recs: Sequence[Record], envs: Sequence[dict[str, Any]], runs: list[dict[str, Any]]) -> dict:
    """baseline.json: the device, the latest run's source and time, counts, versions and every saved run."""
    statuses: dict[str, int] = {}
    for r in recs:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    return {
        "device_name": name,
        "source": runs[-1]["source"],
        "saved_utc": runs[-1]["saved_utc"],
        "cases": len({r.spec.key for r in recs}),
        "statuses": statuses,
        "versions": {k: sorted({v for e in envs if (v := version_of(e, k))}) for k in (*LIBRARY_KEYS, "git_commit")},
        "runs": runs,
    }


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


@dataclass(frozen=True)
class StoredBaselines:
    """The stored baselines of several devices joined for the gate: records, envelopes, runs, devices without one."""

    records: list[Record]
    envelopes: list[dict[str, Any]]
    missing: list[str]
    run_of: dict[str, str]  # run id -> "<gpu slug>/run-<n>", the saved run it belongs to


def load_baselines_for(profiles_dir: str | os.PathLike[str], device_names: Sequence[str]) -> StoredBaselines:
    """Records, envelopes and saved runs of the baselines of several devices, and the devices that have none."""
    records: list[Record] = []
    envelopes: list[dict[str, Any]] = []
    run_of: dict[str, str] = {}
    missing = []
    for name in sorted(set(device_names)):
        if not RunFolder(baseline_dir(profiles_dir, name)).has_results():
            missing.append(name)
            continue
        b = load_baseline(profiles_dir, name)
        records += b.records
        envelopes += b.envelopes
        run_of.update({rid: f"{b.path.name}/{run}" for rid, run in b.run_of.items()})
    return StoredBaselines(records, unique_envelopes(envelopes), missing, run_of)
