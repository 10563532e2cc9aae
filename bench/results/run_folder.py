"""The run folder: the one class that knows which files a run keeps, where, and how they are written.

A run folder holds::

    results.jsonl                 one record per line, appended and fsynced as each case ends
    environment.json              the run's envelope (later runs of a --resume under "resumed"),
                                  or a list of envelopes after a merge
    telemetry/timelines.jsonl     one telemetry timeline per case, appended like the records
    report.md, report.html        the report (the plots, PNG, lie beside them)
    records.csv                   every record of the report as a table
    boundary/                     a sub-run: the extra cases of a boundary search
    capped/<claim id>/            a sub-run per claim: its cases rerun under a memory cap
    baseline.json                 only in a stored regression baseline: where and when it was taken

Callers never join these names to a path themselves: they ask a :class:`RunFolder`.

Appends survive crashes: a line cut by a crash mid-write (no trailing newline) is moved to a side
file (``results.jsonl.torn-1``, ...) before the next append, so the new line never lands on the
fragment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BadInputError
from bench.results.record import Record

if TYPE_CHECKING:
    import pandas as pd


class EnvironmentFileError(BadInputError):
    """environment.json exists but cannot be used: ``kind`` is "json" (not JSON) or "shape" (not envelopes)."""

    def __init__(self, path: Path, kind: str, detail: str):
        self.path, self.kind, self.detail = path, kind, detail
        if kind == "json":
            message = f"{path} is not valid JSON ({detail}); restore it from the run or delete it"
        else:
            message = f"{path} must hold an object or a list of objects, not {detail}"
        super().__init__(message)


def latest_by_key(records: Iterable[Record]) -> dict[str, Record]:
    """The last record written for each case key (a resumed case supersedes its earlier try)."""
    out: dict[str, Record] = {}
    for r in records:
        out[r.spec.key] = r
    return out


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _append_line(path: Path, line: str) -> None:
    """Append one newline-terminated line durably (flush + fsync), after setting aside a torn last line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    set_aside_torn_line(path)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line if line.endswith("\n") else line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def set_aside_torn_line(path: Path) -> Path | None:
    """Repair a JSONL file whose last line has no newline (a write cut by a crash); returns the side file, if any.

    A last line that is a whole JSON object only lacks its newline, which is added. Anything else is
    moved into ``<file>.torn-<n>`` (the first free n) and cut from the file, so the next append starts
    on a line of its own.
    """
    if not path.is_file():
        return None
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return None
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return None
        fh.seek(0)
        data = fh.read()
        start = data.rfind(b"\n") + 1
        fragment = data[start:]
        try:
            whole = isinstance(json.loads(fragment.decode("utf-8")), dict)
        except (UnicodeDecodeError, json.JSONDecodeError):
            whole = False
        if whole:
            fh.seek(0, os.SEEK_END)
            fh.write(b"\n")
            fh.flush()
            os.fsync(fh.fileno())
            return None
        side = _free_side_file(path)
        with open(side, "wb") as out:
            out.write(fragment)
            out.flush()
            os.fsync(out.fileno())
        fh.truncate(start)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(path.parent)
    return side


def _free_side_file(path: Path) -> Path:
    n = 1
    while (side := path.with_name(f"{path.name}.torn-{n}")).exists():
        n += 1
    return side


def _read_jsonl(path: Path, parse: Callable[[Any], Any], what: str, *, strict: bool) -> list[Any]:
    """Parse every line of a JSONL file; a bad line raises naming ``file:line`` (or is skipped).

    The last line is skipped when it does not parse (a write cut by a crash); with ``strict`` False
    every bad line is. A :class:`BadInputError` from ``parse`` (a record from a newer harness) is
    never skipped.
    """
    out: list[Any] = []
    lines = path.read_bytes().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(parse(json.loads(line.decode("utf-8"))))
        except BadInputError as exc:
            raise BadInputError(f"{path}:{number}: {exc}") from exc
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            if number == len(lines) or not strict:
                continue
            raise BadInputError(f"{path}:{number} is not {what} ({exc}); fix or delete that line") from exc
    return out


def _timeline_entry(data: Any) -> tuple[str, list[dict[str, Any]]]:
    return str(data["key"]), list(data["rows"])


class RunFolder:
    """A run folder (or a sub-run inside one): its records, envelopes, timelines, report files and sub-runs.

    ``RunFolder(path)`` takes a folder, or a ``.jsonl`` file whose folder is the run folder (the
    records are then read from that file).
    """

    RESULTS = "results.jsonl"
    ENVIRONMENT = "environment.json"
    TIMELINES = "telemetry/timelines.jsonl"
    REPORT_MD = "report.md"
    REPORT_HTML = "report.html"
    RECORDS_CSV = "records.csv"
    BOUNDARY = "boundary"
    CAPPED = "capped"
    BASELINE_META = "baseline.json"

    def __init__(self, path: str | os.PathLike[str], *, parent: RunFolder | None = None):
        p = Path(path)
        if p.suffix == ".jsonl":
            self.root, self.results_file = p.parent, p
        else:
            self.root, self.results_file = p, p / self.RESULTS
        self.parent = parent

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunFolder) and (self.root, self.results_file) == (other.root, other.results_file)

    def __hash__(self) -> int:
        return hash((self.root, self.results_file))

    # --- the folder ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The folder's name (a capped sub-run's name is its claim id)."""
        return self.root.name

    @property
    def label(self) -> str:
        """Where the records come from: "run", or a sub-run's path inside its run ("boundary", "capped/<id>")."""
        if self.parent is None:
            return "run"
        return self.root.relative_to(self.parent.root).as_posix()

    def exists(self) -> bool:
        """True when the folder exists."""
        return self.root.is_dir()

    def has_results(self) -> bool:
        """True when the folder has a results file (possibly empty)."""
        return self.results_file.is_file()

    def has_environment(self) -> bool:
        """True when the folder has an environment file."""
        return self.environment_file.is_file()

    def is_run_folder(self) -> bool:
        """True when the folder has results or an envelope (a shard that got no cases has only the envelope)."""
        return self.has_results() or self.has_environment()

    def create(self, *, with_results: bool = False) -> RunFolder:
        """Make the folder (and, with ``with_results``, an empty results file); returns self."""
        self.root.mkdir(parents=True, exist_ok=True)
        if with_results:
            self.results_file.touch()
        return self

    # --- records ------------------------------------------------------------------------------

    def append(self, record: Record) -> None:
        """Append one record durably: a crash after this returns never loses it.

        A last line cut by an earlier crash is set aside first (see :func:`set_aside_torn_line`).
        """
        _append_line(self.results_file, json.dumps(record.to_dict(), sort_keys=True, allow_nan=True))

    def append_all(self, records: Iterable[Record]) -> None:
        """Append records in order."""
        for r in records:
            self.append(r)

    def repair(self) -> list[Path]:
        """Set aside torn last lines of the records and timelines now; returns the side files written."""
        sides = [set_aside_torn_line(self.results_file), set_aside_torn_line(self.timelines_file)]
        return [s for s in sides if s is not None]

    def load_records(self, *, strict: bool = True) -> list[Record]:
        """Every record in file order.

        A truncated last line (a write cut by a crash) is skipped; any other corrupt line raises
        :class:`BadInputError` naming ``file:line``, unless ``strict`` is False. A record written by a
        newer harness always raises.
        """
        if not self.has_results():
            raise BadInputError(
                f"no results file at {self.results_file}: run 'bench run --out {self.results_file.parent}' first"
            )
        return _read_jsonl(self.results_file, Record.from_dict, "a valid record", strict=strict)

    def latest(self) -> dict[str, Record]:
        """The last record of each case key."""
        return latest_by_key(self.load_records())

    def completed_keys(self) -> set[str]:
        """Keys of cases that already have a record; ``--resume`` skips these."""
        if not self.has_results():
            return set()
        return {r.spec.key for r in self.load_records(strict=False)}

    def record_line_count(self) -> int:
        """How many non-blank lines the results file holds (0 when there is none)."""
        if not self.has_results():
            return 0
        text = self.results_file.read_text(encoding="utf-8", errors="replace")
        return sum(1 for ln in text.splitlines() if ln.strip())

    # --- environment envelopes ----------------------------------------------------------------

    @property
    def environment_file(self) -> Path:
        """The environment envelope(s) file."""
        return self.root / self.ENVIRONMENT

    def read_envelopes(self) -> list[dict[str, Any]]:
        """``[]`` when there is no envelope, a list of one for a single run, all of them for a merged run.

        Raises :class:`EnvironmentFileError` (a BadInputError) when the file is not JSON or not envelopes.
        """
        data = self._load_environment()
        if data is None:
            return []
        if isinstance(data, dict):
            return [data]
        if isinstance(data, list) and all(isinstance(e, dict) for e in data):
            return list(data)
        raise EnvironmentFileError(self.environment_file, "shape", type(data).__name__)

    def record_environment(self, env: Mapping[str, Any]) -> Path:
        """Write the envelope of a run starting here; on resume keep the first and add this one under 'resumed'.

        An unreadable file, or a merged folder's list, is replaced by this run's envelope.
        """
        try:
            first = self._load_environment()
        except EnvironmentFileError:
            first = None
        if isinstance(first, dict):
            first.setdefault("resumed", []).append(dict(env))
            return self._write_environment(first)
        return self._write_environment(dict(env))

    def _load_environment(self) -> Any:
        """The environment file's JSON as written (None when there is no file)."""
        path = self.environment_file
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EnvironmentFileError(path, "json", str(exc)) from exc

    def write_envelopes(self, envelopes: Sequence[Mapping[str, Any]]) -> Path:
        """Write envelopes as a list (the merged-run form); returns the file written."""
        return self._write_environment([dict(e) for e in envelopes])

    def _write_environment(self, data: Any) -> Path:
        path = self.environment_file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    # --- telemetry timelines ------------------------------------------------------------------

    @property
    def timelines_file(self) -> Path:
        """The telemetry side file: one JSON line per case."""
        return self.root / self.TIMELINES

    def append_timeline(self, case_key: str, timeline: Iterable[Mapping[str, Any]]) -> Path:
        """Append one case's timeline (``{"key": ..., "rows": [...]}``) durably; returns the file."""
        line = json.dumps({"key": case_key, "rows": [dict(r) for r in timeline]}, sort_keys=True)
        _append_line(self.timelines_file, line)
        return self.timelines_file

    def read_timelines(self) -> dict[str, list[dict[str, Any]]]:
        """Every case's timeline by case key (a later write for a key wins); {} when there are none.

        A truncated last line is skipped; any other bad line raises BadInputError naming ``file:line``.
        """
        if not self.timelines_file.is_file():
            return {}
        entries = _read_jsonl(self.timelines_file, _timeline_entry, "a telemetry timeline", strict=True)
        return dict(entries)

    # --- report files -------------------------------------------------------------------------

    @property
    def report_md(self) -> Path:
        """The Markdown report."""
        return self.root / self.REPORT_MD

    @property
    def report_html(self) -> Path:
        """The self-contained HTML report."""
        return self.root / self.REPORT_HTML

    @property
    def records_csv(self) -> Path:
        """Every record of the report as CSV."""
        return self.root / self.RECORDS_CSV

    @property
    def plots_dir(self) -> Path:
        """Where the report's plots are written (and read back to be embedded in the HTML)."""
        return self.root

    def plot_file(self, name: str) -> Path:
        """The path of one plot."""
        return self.plots_dir / name

    def write_report(self, markdown: str, html: str) -> tuple[Path, Path]:
        """Write report.md and report.html; returns their paths."""
        self.report_md.write_text(markdown, encoding="utf-8")
        self.report_html.write_text(html, encoding="utf-8")
        return self.report_md, self.report_html

    def write_records_csv(self, frame: pd.DataFrame) -> Path:
        """Write the records table; returns its path."""
        frame.to_csv(self.records_csv, index=False)
        return self.records_csv

    # --- sub-runs -----------------------------------------------------------------------------

    def boundary(self) -> RunFolder:
        """The sub-run of the boundary search's extra cases."""
        return RunFolder(self.root / self.BOUNDARY, parent=self)

    def capped(self, claim_id: str) -> RunFolder:
        """The sub-run of one claim's cases rerun under a memory cap."""
        return RunFolder(self.root / self.CAPPED / claim_id, parent=self)

    def capped_runs(self) -> list[RunFolder]:
        """Every capped sub-run there is, sorted by claim id."""
        root = self.root / self.CAPPED
        if not root.is_dir():
            return []
        return [self.capped(p.name) for p in sorted(root.iterdir()) if p.is_dir()]

    # --- stored baselines ---------------------------------------------------------------------

    @property
    def baseline_meta_file(self) -> Path:
        """A stored baseline's metadata (absent in an ordinary run)."""
        return self.root / self.BASELINE_META

    def read_baseline_meta(self) -> dict[str, Any]:
        """A baseline's metadata; {} when there is none."""
        path = self.baseline_meta_file
        if not path.is_file():
            return {}
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{path} is not valid JSON ({exc}); save the baseline again") from exc

    def write_baseline_meta(self, meta: Mapping[str, Any]) -> Path:
        """Write a baseline's metadata; returns the file."""
        self.baseline_meta_file.write_text(json.dumps(dict(meta), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return self.baseline_meta_file
