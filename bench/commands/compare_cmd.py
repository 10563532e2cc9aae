"""Regression tracking on the command line: ``bench compare``, ``bench baseline save|show``, ``export``, ``merge``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from pathlib import Path

from bench.errors import BadInputError
from bench.results.merge import merge_runs
from bench.results.run_folder import RunFolder
from bench.track import baseline as baselines
from bench.track.compare import SPEED_METRICS, CompareSettings, compare_records
from bench.track.export import FORMATS, export_records, save_to_pytest_benchmark_storage, write_json
from bench.units import MiB

_SIZE_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": MiB, "gib": 1 << 30, "kb": 10**3, "mb": 10**6, "gb": 10**9}


def parse_fraction(text: str) -> float:
    """``"5%"`` or ``"0.05"`` -> 0.05; a bare number of 1 or more is refused as ambiguous."""
    raw = str(text).strip()
    try:
        if raw.endswith("%"):
            return float(raw[:-1]) / 100
        value = float(raw)
    except ValueError:
        raise BadInputError(f"{text!r} is not a fraction; write e.g. 5% or 0.05") from None
    if value >= 1:
        raise BadInputError(f"{text!r} is ambiguous; write a percentage with % (e.g. 5%) or a fraction below 1")
    return value


def parse_size(text: str) -> int:
    """``"32MiB"``, ``"100 MB"`` or a plain number of bytes -> bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _SIZE_UNITS:
        raise BadInputError(f"{text!r} is not a size; write e.g. 32MiB, 100MB or a number of bytes")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def _metric_threshold(text: str) -> tuple[str, float]:
    name, sep, value = str(text).partition("=")
    if not sep:
        raise BadInputError(f"--metric-threshold {text!r} must look like METRIC=PCT, e.g. decode_tokens_per_s=3%")
    return name.strip(), parse_fraction(value)


def _records_or_fail(run_dir: str, what: str) -> list:
    folder = RunFolder(run_dir)
    records = folder.load_records()
    if not records:
        raise BadInputError(f"{what} {folder.results_file} holds no records")
    return records


def _compare(args: argparse.Namespace) -> int:
    """Compare a run with a baseline run, or with the stored baselines of its GPUs."""
    from rich.console import Console

    from bench.report.comparison import render_markdown, render_terminal

    settings = CompareSettings(
        threshold=parse_fraction(args.threshold),
        metric_thresholds=tuple(_metric_threshold(t) for t in args.metric_threshold),
        alpha=args.alpha,
        memory_tolerance=parse_fraction(args.memory_tolerance),
        memory_tolerance_bytes=parse_size(args.memory_tolerance_bytes),
        require_same_versions=args.require_same_versions,
        bootstrap_resamples=args.bootstrap_resamples,
        min_baseline_runs=args.min_baseline_runs,
        allow_inconclusive=args.allow_inconclusive,
    )
    current = _records_or_fail(args.current, "current run")
    current_envs = RunFolder(args.current).read_envelopes()
    extra_warnings: list[str] = []
    run_of: dict[str, str] | None = None
    if args.baseline:
        base = _records_or_fail(args.baseline, "baseline run")
        base_envs = RunFolder(args.baseline).read_envelopes()
        if RunFolder(args.baseline).baseline_meta_file.is_file():  # a stored baseline folder, maybe of several runs
            run_of = baselines.read_baseline(Path(args.baseline)).run_of
    else:
        devices = sorted({r.device_name for r in current})
        found = baselines.load_baselines_for(args.profiles_dir, devices)
        base, base_envs, missing, run_of = found.records, found.envelopes, found.missing, found.run_of
        if len(missing) == len(devices):
            stored = ", ".join(repr(b.device_name) for b in baselines.list_baselines(args.profiles_dir)) or "none"
            raise BadInputError(
                f"no stored baseline for {', '.join(map(repr, missing))} under {args.profiles_dir} (stored: {stored}); "
                "save one with 'bench baseline save RUN_DIR' on that GPU, or pass a BASELINE run folder"
            )
        for name in missing:
            n = sum(1 for r in current if r.device_name == name)
            extra_warnings.append(f"no stored baseline for {name!r}: its {n} case(s) were not compared")
        current = [r for r in current if r.device_name not in missing]
    comparison = compare_records(
        base, current, settings, baseline_envelopes=base_envs, current_envelopes=current_envs, baseline_run_of=run_of
    )
    if extra_warnings:
        comparison = dataclasses.replace(comparison, warnings=(*extra_warnings, *comparison.warnings))
    render_terminal(comparison, Console(), everything=args.all)
    markdown = render_markdown(comparison)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(markdown, encoding="utf-8")
    if args.step_summary:
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(markdown + "\n")
        else:
            Console(stderr=True).print("[yellow]warning:[/yellow] --step-summary: GITHUB_STEP_SUMMARY is not set")
    if args.json:
        write_json(comparison.to_dict(), args.json)
    if comparison.exit_status == 2:
        Console(stderr=True).print(
            "bench: nothing comparable: no case of the current run is in the baseline on the same GPU", highlight=False
        )
    elif comparison.exit_status == 3:
        Console(stderr=True).print(
            f"bench: inconclusive: {len(comparison.inconclusive)} case(s) changed beyond the threshold but could not "
            "be tested (exit status 3); see the warning above for the repetitions needed, or pass "
            "--allow-inconclusive to accept",
            highlight=False,
        )
    return comparison.exit_status


def _baseline_save(args: argparse.Namespace) -> int:
    """Store a run as the baseline of its GPU(s), or add it to the stored runs with ``--append``."""
    from rich.console import Console

    written = baselines.save_baseline(args.run_dir, args.profiles_dir, device_name=args.device_name, append=args.append)
    console = Console()
    for path in written:
        b = baselines.read_baseline(path)
        runs = f"{len(b.runs)} run{'s' if len(b.runs) != 1 else ''}"
        console.print(f"baseline for {b.device_name!r}: {len(b.records)} records in {runs} -> {path}", highlight=False)
    return 0


def _baseline_show(args: argparse.Namespace) -> int:
    """List stored baselines (or one GPU's)."""
    from rich.console import Console
    from rich.table import Table

    found = baselines.list_baselines(args.profiles_dir)
    if args.gpu:
        found = [b for b in found if b.device_name == args.gpu or b.path.name == baselines.gpu_slug(args.gpu)]
        if not found:
            baselines.load_baseline(args.profiles_dir, args.gpu)  # raises with the list of stored baselines
    console = Console()
    if not found:
        console.print(f"no baselines under {Path(args.profiles_dir) / baselines.BASELINES_DIR}", highlight=False)
        return 0
    table = Table(title="Stored baselines")
    columns = ("GPU", "folder", "records", "statuses", "saved (UTC)", "torch", "transformers", "bitsandbytes", "commit")
    for col in columns:
        table.add_column(col, overflow="fold")
    for b in found:
        versions = b.meta.get("versions", {})
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(b.meta.get("statuses", {}).items()))
        table.add_row(
            b.device_name,
            str(b.path),
            f"{len(b.records)} ({len(b.runs)} run{'s' if len(b.runs) != 1 else ''})",
            statuses,
            str(b.meta.get("saved_utc", "?")),
            *(", ".join(versions.get(k, [])) or "?" for k in ("torch", "transformers", "bitsandbytes")),
            ", ".join(c[:10] for c in versions.get("git_commit", [])) or "?",
        )
    console.print(table)
    return 0


def _export(args: argparse.Namespace) -> int:
    """Write records in another tool's format."""
    from rich.console import Console

    records = _records_or_fail(args.run_dir, "run")
    envelopes = RunFolder(args.run_dir).read_envelopes()
    document = export_records(records, args.format, envelopes, device_name=args.device_name)
    if args.storage:
        if args.format != "pytest-benchmark":
            raise BadInputError("--storage is for --format pytest-benchmark; use --out FILE for the others")
        device = document["machine_info"].get("device_name") or "unnamed-device"
        run_id = next((r.run_id for r in records if r.run_id), "bench")
        path = save_to_pytest_benchmark_storage(document, args.storage, baselines.gpu_slug(device), run_id)
    else:
        path = write_json(document, args.out)
    count = len(document["benchmarks"]) if isinstance(document, dict) else len(document)
    Console().print(f"{count} {args.format} entries -> {path}", highlight=False)
    return 0


def _merge(args: argparse.Namespace) -> int:
    """Join run folders into one."""
    from rich.console import Console

    merged = merge_runs(args.run_dirs, args.out)
    devices = sorted({r.device_name for r in merged})
    Console().print(
        f"merged {len(merged)} records from {len(args.run_dirs)} folders ({', '.join(devices) or 'no records'}) "
        f"-> {args.out}",
        highlight=False,
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``compare``, ``baseline``, ``export`` and ``merge``."""
    _register_compare(subparsers)
    _register_others(subparsers)


def _register_compare(subparsers: argparse._SubParsersAction) -> None:
    speed = ", ".join(m.name for m in SPEED_METRICS)
    p = subparsers.add_parser(
        "compare",
        help="compare a run with a baseline: exit 1 on a regression, 2 on unusable input, 3 when inconclusive",
        description="Compare CURRENT with BASELINE (a run folder) or, without BASELINE, with the stored baseline of "
        "each GPU in CURRENT. Speed regresses when its median worsens beyond the threshold and a one-sided "
        "Mann-Whitney U test puts the raw samples beyond baseline x (1 +/- threshold) with p < alpha (that needs "
        "at least 5 repetitions per side at alpha 0.01); against a stored baseline of at least --min-baseline-runs "
        "runs (bench baseline save --append), when the current median is also outside the range of the baseline "
        "runs' medians widened by the threshold. Memory regresses when the peak grows beyond max(tolerance, "
        "tolerance bytes). Exit status: 1 on a regression; 2 on unusable input (including nothing comparable); "
        "3 inconclusive: a change beyond the threshold that too few repetitions could not test (unless "
        "--allow-inconclusive); else 0.",
    )
    p.add_argument("current", help="run folder (or results.jsonl) to judge")
    p.add_argument("baseline", nargs="?", help="baseline run folder; default: stored baselines in --profiles-dir")
    p.add_argument("--profiles-dir", default=baselines.DEFAULT_PROFILES_DIR, help="where baselines are stored")
    p.add_argument("--threshold", default="5%", help="relative speed change that counts (default 5%%)")
    p.add_argument(
        "--metric-threshold",
        action="append",
        default=[],
        metavar="METRIC=PCT",
        help=f"threshold of one metric, repeatable; metrics: {speed}",
    )
    p.add_argument("--alpha", type=float, default=0.01, help="significance level of the test (default 0.01)")
    p.add_argument(
        "--allow-inconclusive",
        action="store_true",
        help="exit 0, not 3, when changes beyond the threshold could not be tested (too few repetitions)",
    )
    p.add_argument(
        "--min-baseline-runs",
        type=int,
        default=3,
        metavar="N",
        help="judge by the spread of run medians when the stored baseline holds N or more runs of a case (default 3)",
    )
    p.add_argument("--memory-tolerance", default="1%", help="relative peak-memory growth allowed (default 1%%)")
    p.add_argument("--memory-tolerance-bytes", default="32MiB", help="absolute growth allowed (default 32MiB)")
    p.add_argument(
        "--require-same-versions",
        action="store_true",
        help="do not compare cases whose torch/transformers/bitsandbytes versions differ",
    )
    p.add_argument(
        "--bootstrap-resamples",
        type=int,
        default=2000,
        metavar="N",
        help="resamples of the interval of the ratio of medians (default 2000; 0: no interval)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    p.add_argument("--markdown", metavar="FILE", help="also write the comparison as Markdown")
    p.add_argument("--step-summary", action="store_true", help="append the Markdown to $GITHUB_STEP_SUMMARY")
    p.add_argument("--all", action="store_true", help="show unchanged metrics in the terminal table too")
    p.set_defaults(func=_compare)


def _register_others(subparsers: argparse._SubParsersAction) -> None:
    b = subparsers.add_parser("baseline", help="store or list regression baselines (one per GPU)")
    bsub = b.add_subparsers(dest="baseline_command", required=True, parser_class=type(b))
    save = bsub.add_parser("save", help="store a run as the baseline of the GPU(s) it ran on")
    save.add_argument("run_dir", help="run folder to store")
    save.add_argument("--profiles-dir", default=baselines.DEFAULT_PROFILES_DIR)
    save.add_argument("--device-name", help="store only this device's records (default: every device in the run)")
    save.add_argument(
        "--append",
        action="store_true",
        help="add the run to the stored baseline as one more run (the gate judges by the spread of run medians "
        "from 3 runs on), instead of replacing it",
    )
    save.set_defaults(func=_baseline_save)
    show = bsub.add_parser("show", help="list stored baselines")
    show.add_argument("gpu", nargs="?", help="one GPU's baseline (name or folder name)")
    show.add_argument("--profiles-dir", default=baselines.DEFAULT_PROFILES_DIR)
    show.set_defaults(func=_baseline_show)

    e = subparsers.add_parser("export", help="write records as pytest-benchmark or github-action-benchmark JSON")
    e.add_argument("run_dir", help="run folder to export")
    e.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        help="pytest-benchmark, github-bigger (customBiggerIsBetter) or github-smaller (customSmallerIsBetter)",
    )
    where = e.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", metavar="FILE", help="file to write")
    where.add_argument(
        "--storage",
        metavar="DIR",
        help="pytest-benchmark storage folder: saves DIR/<gpu>/NNNN_<run id>.json like --benchmark-save",
    )
    e.add_argument("--device-name", help="export only this device's records")
    e.set_defaults(func=_export)

    m = subparsers.add_parser("merge", help="join the run folders of shards or machines into one")
    m.add_argument("run_dirs", nargs="+", metavar="DIR", help="run folders to join")
    m.add_argument("--out", required=True, metavar="DIR", help="new run folder to write")
    m.set_defaults(func=_merge)
