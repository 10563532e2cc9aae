"""What a report reads: a run folder's records, sub-runs and envelopes, and its records grouped by device.

Missing or unreadable optional parts (an envelope, a sub-run) become gaps of a partial report;
unusable input (no folder, no results, no valid record) raises :class:`~bench.errors.BadInputError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BadInputError
from bench.results.frame import records_to_frame
from bench.results.record import Record
from bench.results.run_folder import EnvironmentFileError, RunFolder, latest_by_key
from bench.units import slugify

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class DeviceGroup:
    """The records of one device (host, device, device name), latest record per case."""

    host: str
    device: str
    device_name: str
    records: list[Record]
    label: str = ""
    slug: str = ""

    @property
    def gpu(self) -> bool:
        """True when the device is a CUDA GPU."""
        return self.device.startswith("cuda")

    def frame(self) -> pd.DataFrame:
        """The group's records as a DataFrame (one row per record)."""
        return records_to_frame(self.records)


@dataclass
class RunData:
    """Everything a report reads from a run folder."""

    folder: RunFolder
    records: list[Record]
    boundary_records: list[Record]
    capped: dict[str, list[Record]]
    envelopes: list[dict[str, Any]]
    gaps: list[str] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        """The run folder's path."""
        return self.folder.root

    def sources(self) -> list[tuple[str, list[Record]]]:
        """The records by where they come from: ("run", ...), ("boundary", ...), ("capped/<claim>", ...)."""
        folder = self.folder
        return [("run", self.records), (folder.boundary().label, self.boundary_records)] + [
            (folder.capped(k).label, v) for k, v in self.capped.items()
        ]


def _read_optional_records(folder: RunFolder, gaps: list[str]) -> list[Record]:
    if not folder.has_results():
        return []
    try:
        return folder.load_records()
    except BadInputError as exc:
        gaps.append(f"{folder.results_file} could not be read and was left out: {exc}")
        return []


def _read_envelopes(folder: RunFolder, gaps: list[str]) -> list[dict[str, Any]]:
    name = folder.ENVIRONMENT
    if not folder.has_environment():
        gaps.append(f"{name} is missing: the environment table shows only what the records say")
        return []
    try:
        return folder.read_envelopes()
    except EnvironmentFileError as exc:
        if exc.kind == "json":
            gaps.append(f"{name} is not valid JSON ({exc.detail}): the environment table shows only the records")
        else:
            gaps.append(f"{name} holds a {exc.detail}, not an object: it was ignored")
        return []


def _main_records(folder: RunFolder) -> list[Record]:
    run_dir = folder.root
    if not folder.exists():
        raise BadInputError(f"run folder {run_dir} does not exist; pass the --out folder of a 'bench run'")
    if not folder.has_results():
        raise BadInputError(
            f"{run_dir} has no {folder.RESULTS}: it is not a run folder (run 'bench run --out {run_dir}' first)"
        )
    records = folder.load_records()
    if not records:
        results = folder.results_file
        lines = folder.record_line_count()
        if lines:
            raise BadInputError(
                f"{results} holds {lines} line(s) but no valid record; it is corrupt: "
                "rerun the suite into a fresh folder"
            )
        raise BadInputError(f"{results} is empty: no case finished; rerun 'bench run --out {run_dir}'")
    return records


def load_run(run_dir: str | Path) -> RunData:
    """Read a run folder; raises BadInputError when it has no usable records."""
    folder = RunFolder(Path(run_dir))
    records = _main_records(folder)
    gaps: list[str] = []
    boundary = _read_optional_records(folder.boundary(), gaps)
    capped: dict[str, list[Record]] = {}
    for sub in folder.capped_runs():
        recs = _read_optional_records(sub, gaps)
        if recs:
            capped[sub.name] = recs
    return RunData(folder, records, boundary, capped, _read_envelopes(folder, gaps), gaps)


def group_by_device(records: Sequence[Record]) -> list[DeviceGroup]:
    """Records split by (host, device, device name); a failed case without a device name joins its host's
    only group of the same device kind. Within a group the latest record of each case is kept."""
    named: dict[tuple[str, str, str], list[Record]] = {}
    unnamed: list[Record] = []
    for r in records:
        if r.device_name:
            named.setdefault((r.host, r.device, r.device_name), []).append(r)
        else:
            unnamed.append(r)
    for r in unnamed:
        kind = r.device.split(":")[0]
        same = [k for k in named if k[0] == r.host and k[1].split(":")[0] == kind]
        key = same[0] if len(same) == 1 else (r.host, r.device, "")
        named.setdefault(key, []).append(r)
    hosts = {k[0] for k in named}
    groups = []
    for (host, device, name), recs in sorted(named.items(), key=lambda kv: (not kv[0][1].startswith("cuda"), kv[0])):
        label = f"{name or 'unknown device'} ({device})" + (f" on {host}" if len(hosts) > 1 else "")
        latest = list(latest_by_key(recs).values())
        groups.append(DeviceGroup(host, device, name, latest, label, slugify(label, "device")))
    return groups
