"""The run report: report.md, report.html (self-contained), the plots as PNG and the records as CSV.

Reporting never measures: it reads a run folder (``results.jsonl``, ``environment.json``, and the
extra records of a boundary search or a capped check in ``boundary/`` and ``capped/<claim>/``),
groups the records by device (never averaging two devices together), judges the claims on each
device's records and writes everything into the run folder. Missing data makes a partial report
with its gaps listed; unusable input (no folder, no results, no valid record) raises
:class:`~bench.errors.BadInputError`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.claims.boundary import DEFAULT_TOLERANCE_TOKENS as BOUNDARY_TOLERANCE_TOKENS
from bench.claims.verdicts import (
    EVIDENCE_LABELS,
    EVIDENCE_SHORT,
    GIB,
    HOLDS_UP_TO,
    NO_EVIDENCE,
    PREDICTED,
    Claim,
    ClaimVerdict,
    Predictor,
    judge_claim,
    load_claims,
)
from bench.errors import BadInputError
from bench.report import plots
from bench.report.advice import advice_blocks
from bench.report.document import Block, Bullets, Details, Heading, Image, Para, Table, render_html, render_markdown
from bench.report.energy import telemetry_blocks
from bench.results.frame import records_to_frame
from bench.results.record import Record
from bench.results.store import ENVIRONMENT_FILE, RESULTS_FILE, latest_by_key, load_records
from bench.units import fmt_gb, fmt_gib, fmt_mib, fmt_ms, fmt_num, is_missing, slugify

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
RECORDS_CSV = "records.csv"
BOUNDARY_DIR = "boundary"
CAPPED_DIR = "capped"

PLOT_DPI = 120
MAX_INLINE_ROWS = 12  # longer per-context tables fold into a <details>

FLAG_MEANINGS = {
    "random_weights": "weights are random (built from the model's config): speed and memory match the real "
    "checkpoint, the generated text does not",
    "noisy": "the timed repetitions vary more than the policy's threshold (coefficient of variation): treat "
    "the speed numbers with care",
    "throttled": "the GPU reported clock throttling (power or thermal) during the case",
    "int8_outliers_unrepresentative": "LLM.int8 with random weights: fewer outlier activations than real "
    "weights, so int8 speed is optimistic",
}
ALWAYS_SHOWN_FLAGS = ("noisy", "throttled", "random_weights")


# ---------------------------------------------------------------------------------------------
# Loading and grouping


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

    run_dir: Path
    records: list[Record]
    boundary_records: list[Record]
    capped: dict[str, list[Record]]
    envelopes: list[dict[str, Any]]
    gaps: list[str] = field(default_factory=list)


def _read_optional_records(path: Path, gaps: list[str]) -> list[Record]:
    if not (path / RESULTS_FILE).is_file():
        return []
    try:
        return load_records(path)
    except BadInputError as exc:
        gaps.append(f"{path / RESULTS_FILE} could not be read and was left out: {exc}")
        return []


def _read_envelopes(run_dir: Path, gaps: list[str]) -> list[dict[str, Any]]:
    path = run_dir / ENVIRONMENT_FILE
    if not path.is_file():
        gaps.append(f"{ENVIRONMENT_FILE} is missing: the environment table shows only what the records say")
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        gaps.append(f"{ENVIRONMENT_FILE} is not valid JSON ({exc}): the environment table shows only the records")
        return []
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list) and all(isinstance(e, dict) for e in data):
        return list(data)
    gaps.append(f"{ENVIRONMENT_FILE} holds a {type(data).__name__}, not an object: it was ignored")
    return []


def load_run(run_dir: str | Path) -> RunData:
    """Read a run folder; raises BadInputError when it has no usable records."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BadInputError(f"run folder {run_dir} does not exist; pass the --out folder of a 'bench run'")
    results = run_dir / RESULTS_FILE
    if not results.is_file():
        raise BadInputError(
            f"{run_dir} has no {RESULTS_FILE}: it is not a run folder (run 'bench run --out {run_dir}' first)"
        )
    records = load_records(run_dir)
    if not records:
        lines = [ln for ln in results.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        if lines:
            raise BadInputError(
                f"{results} holds {len(lines)} line(s) but no valid record; it is corrupt: "
                "rerun the suite into a fresh folder"
            )
        raise BadInputError(f"{results} is empty: no case finished; rerun 'bench run --out {run_dir}'")
    gaps: list[str] = []
    boundary = _read_optional_records(run_dir / BOUNDARY_DIR, gaps)
    capped: dict[str, list[Record]] = {}
    capped_root = run_dir / CAPPED_DIR
    if capped_root.is_dir():
        for sub in sorted(p for p in capped_root.iterdir() if p.is_dir()):
            recs = _read_optional_records(sub, gaps)
            if recs:
                capped[sub.name] = recs
    return RunData(run_dir, records, boundary, capped, _read_envelopes(run_dir, gaps), gaps)


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


# ---------------------------------------------------------------------------------------------
# Display units


def budget_words(claim: Claim) -> str:
    """The budget in every unit a reader may think in: "8 GiB = 8,192 MiB = 8.59 GB"."""
    return f"{claim.budget_text} = {fmt_mib(claim.budget_bytes)} MiB = {fmt_gb(claim.budget_bytes)} GB"


def flag_words(flags: str | Sequence[str]) -> str:
    """Record flags in words ("random weights, noisy")."""
    items = [f for f in (flags.split(",") if isinstance(flags, str) else flags) if f]
    return ", ".join(f.replace("_", " ") for f in items)


# ---------------------------------------------------------------------------------------------
# Claims section


def _verdict_kind(symbol: str) -> str:
    return {"✅": "ok", "❌": "bad"}.get(symbol, "warn")


def _context_rows(verdict: ClaimVerdict) -> Table:
    host = any(v.host_peak_rss_bytes is not None and not v.measured for v in verdict.contexts)
    peak = "Peak or prediction" if any(v.evidence == PREDICTED for v in verdict.contexts) else "Peak"
    headers = [
        "Model",
        "Precision",
        "Batch",
        "Context",
        "New",
        f"{peak} (MiB)",
        f"{peak} (GB)",
        "Budget (MiB)",
        "Margin (MiB)",
        "Margin (GB)",
        "Verdict",
        "Evidence",
    ]
    align = "llrrrrrrrrll"
    if host:
        headers.insert(7, "Host peak RSS (MiB)")
        align = align[:7] + "r" + align[7:]
    rows, kinds = [], []
    for v in verdict.contexts:
        peak = v.peak_bytes
        peak_mib = fmt_mib(peak) if peak is not None else ("OOM" if v.oom else "—")
        row = [
            v.model,
            v.precision,
            str(v.batch_size),
            str(v.context_tokens),
            str(v.new_tokens),
            peak_mib,
            fmt_gb(peak),
            fmt_mib(v.budget_bytes),
            fmt_mib(v.margin_bytes, True),
            fmt_gb(v.margin_bytes, True),
            f"{v.symbol} {v.text}",
            EVIDENCE_SHORT[v.evidence],
        ]
        if host:
            row.insert(7, fmt_mib(v.host_peak_rss_bytes) if not v.measured else "—")
        rows.append(tuple(row))
        kinds.append(_verdict_kind(v.symbol))
    return Table(tuple(headers), tuple(rows), align, tuple(kinds))


def _series_table(verdict: ClaimVerdict) -> Table | None:
    lines = [s for s in verdict.series if s.status == HOLDS_UP_TO]
    if not lines:
        return None
    rows = []
    for s in lines:
        width = (s.fails_from or 0) - (s.holds_up_to or 0)
        located = "yes" if width <= BOUNDARY_TOLERANCE_TOKENS else "no: run 'bench report DIR --find-boundary'"
        rows.append(
            (s.model, s.precision, str(s.batch_size), str(s.holds_up_to), str(s.fails_from), str(width), located)
        )
    return Table(
        (
            "Model",
            "Precision",
            "Batch",
            "Holds up to (tokens)",
            "Fails from (tokens)",
            "Interval (tokens)",
            f"Located to within {BOUNDARY_TOLERANCE_TOKENS} tokens",
        ),
        tuple(rows),
        "llrrrrl",
        caption="Where the claim breaks (largest holding and smallest failing context)",
    )


def _largest_holding(verdict: ClaimVerdict) -> str:
    if verdict.holds_up_to is None:
        return "—"
    text = f"{verdict.holds_up_to} tokens"
    return text if verdict.fails_from is None else f"{text} (fails at {verdict.fails_from})"


def _evidence_words(verdict: ClaimVerdict) -> str:
    if verdict.evidence is None:
        return "none"
    words = EVIDENCE_LABELS[verdict.evidence]
    others = [k for k in verdict.evidence_kinds if k != verdict.evidence]
    if others:
        words += "; also " + ", ".join(EVIDENCE_LABELS[k] for k in others)
    return words


def _evidence_short(verdict: ClaimVerdict) -> str:
    if verdict.evidence is None:
        return "none"
    return " + ".join(EVIDENCE_SHORT[k] for k in dict.fromkeys((verdict.evidence, *verdict.evidence_kinds)))


def _capped_summary(capped: ClaimVerdict | None) -> str:
    if capped is None:
        return "not run"
    return f"{capped.symbol} {capped.text}"


def _claim_blocks(verdict: ClaimVerdict, capped: ClaimVerdict | None, device_label: str) -> list[Block]:
    claim = verdict.claim
    blocks: list[Block] = [Heading(f"{claim.title} — {device_label}", 3)]
    blocks.append(Para(f"{verdict.symbol} {verdict.text}.", _verdict_kind(verdict.symbol)))
    facts = [
        f"Budget: {budget_words(claim)}" + (f' (stated as "{claim.stated_as}")' if claim.stated_as else ""),
        f"Covers: {claim.describe_cases()}; judged on the NVML process peak (CUDA context + allocator "
        "reservations); an out-of-memory case does not fit",
        f"Evidence: {_evidence_words(verdict)}",
    ]
    if claim.source:
        facts.append(f"Source: {claim.source}")
    if claim.note:
        facts.append(f"Note: {claim.note}")
    blocks.append(Bullets(tuple(facts)))
    if verdict.contexts:
        table = _context_rows(verdict)
        if len(verdict.contexts) > MAX_INLINE_ROWS:
            counts = Counter(
                "fit" if v.fits else "not judged" if v.fits is None else "do not fit" for v in verdict.contexts
            )
            tally = ", ".join(f"{counts[k]} {k}" for k in ("fit", "do not fit", "not judged") if counts[k])
            blocks.append(Details(f"{len(verdict.contexts)} cases ({tally}): show the table", (table,)))
        else:
            blocks.append(table)
    series = _series_table(verdict)
    if series is not None:
        blocks.append(series)
    if capped is not None:
        caps = sorted({v.memory_cap_bytes for v in capped.contexts if v.memory_cap_bytes})
        cap_text = ", ".join(f"{fmt_mib(c)} MiB" for c in caps) or "unknown"
        blocks.append(Heading("Second check: the same cases under a per-process memory cap", 4))
        blocks.append(
            Para(
                f"{capped.symbol} {capped.text}. Simulated card of {cap_text} on {capped.device_name or device_label}: "
                f"the allocator was capped at that minus the CUDA context each worker measured.",
                _verdict_kind(capped.symbol),
            )
        )
        if capped.contexts:
            blocks.append(_context_rows(capped))
    if verdict.gaps:
        blocks.append(Para(f"Gaps ({len(verdict.gaps)}):", "warn"))
        blocks.append(Bullets(tuple(verdict.gaps)))
    return blocks


@dataclass
class ClaimResults:
    """The verdicts of every claim on every device group (and the capped second check)."""

    verdicts: list[tuple[DeviceGroup | None, ClaimVerdict, ClaimVerdict | None]]


def judge_groups(
    claims: Sequence[Claim],
    groups: Sequence[DeviceGroup],
    capped: dict[str, list[Record]],
    predict: Predictor | None = None,
) -> ClaimResults:
    """Judge each claim on each device group; a claim with evidence nowhere is shown once, with its gaps."""
    out: list[tuple[DeviceGroup | None, ClaimVerdict, ClaimVerdict | None]] = []
    for claim in claims:
        per_group = []
        for g in groups:
            v = judge_claim(claim, g.records, predict=predict, device=g.device, device_name=g.device_name)
            capped_recs = [r for r in capped.get(claim.id, []) if r.host == g.host and r.device_name == g.device_name]
            c = judge_claim(claim, capped_recs, device=g.device, device_name=g.device_name) if capped_recs else None
            per_group.append((g, v, c))
        with_evidence = [t for t in per_group if t[1].status != NO_EVIDENCE or t[2] is not None]
        if with_evidence:
            out.extend(with_evidence)
        elif per_group:
            out.append(per_group[0])
        else:
            out.append((None, judge_claim(claim, [], predict=predict), None))
    return ClaimResults(out)


def _claims_section(results: ClaimResults) -> list[Block]:
    blocks: list[Block] = [Heading("Claims", 2)]
    rows, kinds = [], []
    for g, v, c in results.verdicts:
        rows.append(
            (
                v.claim.title,
                v.claim.budget_text,
                g.label if g else "—",
                f"{v.symbol} {v.text}",
                _largest_holding(v),
                _evidence_short(v),
                _capped_summary(c),
            )
        )
        kinds.append(_verdict_kind(v.symbol))
    blocks.append(
        Table(
            ("Claim", "Budget", "Device", "Verdict", "Largest context that holds", "Evidence", "Capped check"),
            tuple(rows),
            "lllllll",
            tuple(kinds),
        )
    )
    blocks.append(
        Para(
            "✅ / ❌: measured on a GPU (NVML process peak, what nvidia-smi shows). ⚠️: holds only up to a context, or "
            "not a GPU measurement (host memory or a prediction), or no evidence. Margins: budget minus peak, positive "
            "is headroom; MiB = 2^20 bytes, GB = 10^9 bytes.",
            "note",
        )
    )
    for g, v, c in results.verdicts:
        blocks += _claim_blocks(v, c, g.label if g else "no device")
    return blocks


# ---------------------------------------------------------------------------------------------
# Environment, quality flags, results tables


ENV_KEYS = (
    "run_id",
    "created_utc",
    "suite",
    "host",
    "cpu",
    "ram_bytes",
    "python",
    "torch",
    "transformers",
    "bitsandbytes",
    "cuda",
    "driver",
    "git_commit",
    "gpus",
    "argv",
)
ENV_LABELS = {
    "run_id": "Run id",
    "created_utc": "Started (UTC)",
    "ram_bytes": "Host RAM",
    "git_commit": "Git commit",
    "gpus": "GPUs",
    "argv": "Command",
    "cpu": "CPU",
    "cuda": "CUDA",
    "os": "OS",
    "cpu_count": "CPU cores",
}


def _env_value(key: str, value: Any) -> str:
    if value is None or value == "":
        return "—"
    if key == "ram_bytes" and isinstance(value, (int, float)):
        return fmt_gib(value, 1)
    if key == "gpus" and isinstance(value, list):
        if not value:
            return "none"
        parts = []
        for gpu in value:
            if isinstance(gpu, dict):
                mem = gpu.get("memory_bytes")
                size = f", {fmt_gib(mem, 1)}" if mem else ""
                parts.append(f"{gpu.get('index', '?')}: {gpu.get('name', '?')}{size}")
            else:
                parts.append(str(gpu))
        return "; ".join(parts)
    if key == "argv" and isinstance(value, list):
        return " ".join(str(a) for a in value)
    if isinstance(value, dict):
        if "version" in value:
            return str(value["version"])
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _environment_section(data: RunData, groups: Sequence[DeviceGroup]) -> list[Block]:
    blocks: list[Block] = [Heading("Environment", 2)]
    if data.envelopes:
        keys = [k for k in ENV_KEYS if any(k in e for e in data.envelopes)]
        keys += sorted({k for e in data.envelopes for k in e} - set(ENV_KEYS))
        many = len(data.envelopes) > 1
        headers = ("Item",) + tuple(
            f"Run {e.get('run_id', i + 1)}" if many else "Value" for i, e in enumerate(data.envelopes)
        )
        rows = tuple((ENV_LABELS.get(k, k), *(_env_value(k, e.get(k)) for e in data.envelopes)) for k in keys)
        blocks.append(Table(headers, rows))
    else:
        blocks.append(Para("No environment envelope: the table below is built from the records alone.", "warn"))
    rows = []
    for g in groups:
        statuses = Counter(r.status for r in g.records)
        rows.append(
            (
                g.label,
                g.host or "—",
                "GPU" if g.gpu else "CPU (host memory only)",
                str(len(g.records)),
                ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())),
            )
        )
    blocks.append(
        Table(
            ("Device", "Host", "Kind", "Cases", "Status"),
            tuple(rows),
            "lllrl",
            caption="Devices in this report (each device's records are reported separately)",
        )
    )
    return blocks


def _quality_section(groups: Sequence[DeviceGroup]) -> list[Block]:
    blocks: list[Block] = [Heading("Quality flags", 2)]
    rows = []
    flagged = []
    for g in groups:
        counts = Counter(f for r in g.records for f in r.flags)
        for flag in list(ALWAYS_SHOWN_FLAGS) + sorted(set(counts) - set(ALWAYS_SHOWN_FLAGS)):
            n = counts.get(flag, 0)
            symbol = "⚠️" if n else "✅"
            rows.append(
                (g.label, flag.replace("_", " "), f"{symbol} {n} of {len(g.records)}", FLAG_MEANINGS.get(flag, ""))
            )
        for r in g.records:
            bad = [f for f in r.flags if f in ("noisy", "throttled")]
            if bad:
                flagged.append(
                    (
                        g.label,
                        r.spec.model,
                        r.spec.precision,
                        r.spec.scenario,
                        str(r.spec.batch_size),
                        str(r.spec.context_tokens),
                        ", ".join(bad),
                    )
                )
    blocks.append(Table(("Device", "Flag", "Cases", "Meaning"), tuple(rows), "llrl"))
    if any(r.spec.weights == "random" or "random_weights" in r.flags for g in groups for r in g.records):
        blocks.append(
            Para(
                "Random weights: these cases ran weights built from the model's config, not a trained checkpoint. "
                "Speed and memory are those of the real model; bitsandbytes int8 speed may differ (fewer outliers).",
                "warn",
            )
        )
    if flagged:
        blocks.append(
            Details(
                f"{len(flagged)} case(s) flagged noisy or throttled",
                (
                    Table(
                        ("Device", "Model", "Precision", "Scenario", "Batch", "Context", "Flags"),
                        tuple(flagged),
                        "llllrrl",
                    ),
                ),
            )
        )
    return blocks


def _mem_header(gpu: bool) -> str:
    return "Peak VRAM, NVML (GiB)" if gpu else "Peak host RSS (GiB)"


def _gib_cell(value: Any) -> str:
    return "—" if value is None or is_missing(value) else f"{float(value) / GIB:.2f}"


_HIDDEN_TABLE_FLAGS = ("random_weights",)  # said once for the whole report, not on every row


def _table_flags(value: Any) -> str:
    flags = [f for f in str(value or "").split(",") if f and f not in _HIDDEN_TABLE_FLAGS]
    return flag_words(flags) or "—"


def _results_tables(frame: pd.DataFrame, gpu: bool) -> list[Block]:
    blocks: list[Block] = []
    column = "nvml_process_peak_bytes" if gpu else "host_peak_rss_bytes"
    order = ["model", "precision", "batch_size", "context_tokens"]
    random = " (random weights)" if plots.random_weights(frame) else ""
    gen = frame[frame["scenario"] == "generate"].sort_values(order)
    if not gen.empty:
        rows, kinds = [], []
        for _, r in gen.iterrows():
            rows.append(
                (
                    r["model"],
                    r["precision"],
                    str(r["batch_size"]),
                    str(r["context_tokens"]),
                    str(r["new_tokens"]),
                    r["status"],
                    fmt_ms(r.get("ttft_s")),
                    fmt_num(r.get("decode_tokens_per_s")),
                    fmt_ms(r.get("tpot_s")),
                    fmt_ms(r.get("itl_p99_s")),
                    _gib_cell(r.get(column)),
                    _gib_cell(r.get("weights_bytes")),
                    fmt_mib(r.get("kv_cache_bytes")),
                    _table_flags(r.get("flags")),
                )
            )
            kinds.append("" if r["status"] == "ok" else "bad")
        table = Table(
            (
                "Model",
                "Precision",
                "Batch",
                "Context",
                "New",
                "Status",
                "TTFT (ms)",
                "Decode (tokens/s)",
                "TPOT (ms)",
                "ITL p99 (ms)",
                _mem_header(gpu),
                "Weights (GiB)",
                "KV cache (MiB)",
                "Flags",
            ),
            tuple(rows),
            "llrrrlrrrrrrrl",
            tuple(kinds),
            caption=f"Decoder cases (generate){random}: medians over repetitions",
        )
        blocks.append(Details(f"Decoder cases: {len(rows)} (table)", (table,)))
    enc = frame[frame["scenario"] == "encode"].sort_values(order)
    if not enc.empty:
        rows, kinds = [], []
        for _, r in enc.iterrows():
            rows.append(
                (
                    r["model"],
                    r["precision"],
                    str(r["batch_size"]),
                    str(r["context_tokens"]),
                    r["status"],
                    fmt_ms(r.get("latency_s")),
                    fmt_ms(r.get("latency_p90_s")),
                    fmt_num(r.get("sequences_per_s")),
                    fmt_num(r.get("tokens_per_s"), 0),
                    _gib_cell(r.get(column)),
                    _gib_cell(r.get("weights_bytes")),
                    _table_flags(r.get("flags")),
                )
            )
            kinds.append("" if r["status"] == "ok" else "bad")
        table = Table(
            (
                "Model",
                "Precision",
                "Batch",
                "Sequence length",
                "Status",
                "Latency (ms)",
                "p90 (ms)",
                "Sequences/s",
                "Tokens/s",
                _mem_header(gpu),
                "Weights (GiB)",
                "Flags",
            ),
            tuple(rows),
            "llrrlrrrrrrl",
            tuple(kinds),
            caption=f"Encoder cases (encode){random}: medians over repetitions",
        )
        blocks.append(Details(f"Encoder cases: {len(rows)} (table)", (table,)))
    return blocks


def _plot_files(group: DeviceGroup, frame: pd.DataFrame, out_dir: Path, prefix: str) -> list[Image]:
    images = []
    for stem, make, _ in plots.PLOTS:
        fig = make(frame)
        if fig is None:
            continue
        name = f"{prefix}{stem}.png"
        fig.savefig(out_dir / name, dpi=PLOT_DPI, bbox_inches="tight", pad_inches=0.08)
        title = fig.axes[0].get_title().replace("\n", " — ")
        images.append(Image(name, title))
    return images


def _device_section(
    group: DeviceGroup, run_dir: Path, out_dir: Path, prefix: str, make_plots: bool = True
) -> list[Block]:
    frame = group.frame()
    blocks: list[Block] = [Heading(f"Results on {group.label}", 2)]
    if not group.gpu:
        blocks.append(
            Para(
                f"Measured on {group.label}, not on a GPU: memory figures are host RSS (the process's peak resident "
                "memory), not VRAM.",
                "warn",
            )
        )
    if make_plots:
        blocks += _plot_files(group, frame, out_dir, prefix)
    blocks += _results_tables(frame, group.gpu)
    blocks += telemetry_blocks(group.records, frame, run_dir, out_dir, prefix, group.label, make_plots)
    return blocks


def _failure_gaps(groups: Sequence[DeviceGroup]) -> list[str]:
    gaps = []
    for g in groups:
        for r in g.records:
            if r.status in ("error", "timeout", "skipped"):
                s = r.spec
                reason = (r.error or "").strip().splitlines()[0] if (r.error or "").strip() else "no message"
                gaps.append(
                    f"{g.label}: {s.model} {s.precision} {s.scenario} batch {s.batch_size} at "
                    f"{s.context_tokens} tokens: {r.status} ({reason})"
                )
    return gaps


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class ReportFiles:
    """What a report wrote into the run folder."""

    markdown: Path
    html: Path
    csv: Path
    plots: tuple[Path, ...]
    gaps: tuple[str, ...]
    verdicts: tuple[ClaimVerdict, ...]


def _records_csv(data: RunData, path: Path) -> None:
    parts = []
    for source, recs in [("run", data.records), (BOUNDARY_DIR, data.boundary_records)] + [
        (f"{CAPPED_DIR}/{k}", v) for k, v in data.capped.items()
    ]:
        if recs:
            frame = records_to_frame(recs)
            frame.insert(0, "record_source", source)
            parts.append(frame)
    pd.concat(parts, ignore_index=True).to_csv(path, index=False)


def build_report(
    run_dir: str | Path,
    claims: Sequence[Claim] | None = None,
    *,
    predict: Predictor | None = None,
    notes: Sequence[str] = (),
    make_plots: bool = True,
) -> ReportFiles:
    """Write report.md, report.html, the plots and records.csv into ``run_dir``; returns what was written.

    ``make_plots=False`` leaves the plots out (tables and verdicts only, much faster).
    """
    data = load_run(run_dir)
    claims = list(claims) if claims is not None else load_claims()
    out = data.run_dir
    groups = group_by_device(data.records + data.boundary_records)
    results = judge_groups(claims, groups, data.capped, predict)

    gaps = list(data.gaps) + _failure_gaps(groups)
    for g, v, _ in results.verdicts:
        gaps += [f"claim '{v.claim.id}' on {g.label if g else 'no device'}: {gap}" for gap in v.gaps]

    env = data.envelopes[0] if data.envelopes else {}
    suite = env.get("suite") or ", ".join(sorted({r.spec.suite for r in data.records}))
    title = f"Benchmark report: {suite}" if suite else "Benchmark report"
    blocks: list[Block] = [Heading(title, 1)]
    blocks.append(
        Para(
            f"Run folder {out.name}: {len(data.records)} record(s) on {len(groups)} device(s): "
            + "; ".join(g.label for g in groups)
            + "."
            + (f" Run id {env['run_id']}." if env.get("run_id") else "")
        )
    )
    if not any(g.gpu for g in groups):
        blocks.append(
            Para(
                'No GPU in this run: every memory verdict says "not measured on a GPU"; memory figures '
                "are host RSS, and predictions (where shown) are labelled as predictions.",
                "warn",
            )
        )
    if gaps:
        blocks.append(Para(f"Partial report: {len(gaps)} gap(s), listed under Gaps at the end.", "warn"))
    for note in notes:
        blocks.append(Para(note, "note"))
    blocks += _claims_section(results)
    prefix_needed = len(groups) > 1
    for g in groups:
        blocks += _device_section(g, data.run_dir, out, f"{g.slug}--" if prefix_needed else "", make_plots)
    blocks += advice_blocks(data.records)
    blocks += _environment_section(data, groups)
    blocks += _quality_section(groups)
    blocks.append(Heading("Gaps", 2))
    blocks.append(Bullets(tuple(gaps)) if gaps else Para("None: every expected case has a record.", "ok"))

    images = [b for b in blocks if isinstance(b, Image)]
    files = [REPORT_MD, REPORT_HTML, RECORDS_CSV] + [i.filename for i in images]
    blocks.append(Heading("Files", 2))
    blocks.append(Bullets(tuple(files)))

    md_path, html_path, csv_path = out / REPORT_MD, out / REPORT_HTML, out / RECORDS_CSV
    md_path.write_text(render_markdown(blocks), encoding="utf-8")
    html_path.write_text(render_html(blocks, title, out), encoding="utf-8")
    _records_csv(data, csv_path)
    return ReportFiles(
        md_path,
        html_path,
        csv_path,
        tuple(out / i.filename for i in images),
        tuple(gaps),
        tuple(v for _, v, _ in results.verdicts),
    )
