"""``bench run``: run a suite (or an ad-hoc matrix) and write records, environment and report."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.errors import BadInputError
from bench.measure.environment import cuda_available


def register(sub: Any) -> None:
    """Add the ``run`` subcommand."""
    p = sub.add_parser(
        "run",
        help="run a suite and write DIR/results.jsonl, environment and report",
        description="Run a suite of cases. Without --suite: 'gpu' where CUDA is available, else 'smoke'.",
    )
    p.add_argument("--suite", help="a shipped suite name (see 'bench list') or a suite .toml file")
    p.add_argument("--model", action="append", help="model name (repeatable); replaces the suite's models")
    p.add_argument("--model-path", type=Path, help="a local checkpoint directory (config.json + safetensors)")
    p.add_argument(
        "--precision", action="append", help="precision (repeatable): fp32 fp16 bf16 int8 nf4 nf4-dq fp4 fp4-dq"
    )
    p.add_argument(
        "--context", action="append", type=int, help="prompt length in tokens (sequence length for encoders)"
    )
    p.add_argument("--batch", action="append", type=int, help="batch size (repeatable)")
    p.add_argument("--new-tokens", type=int, help="tokens to generate per sequence (decoders)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the suite's)")
    p.add_argument("--out", type=Path, help="run folder (default: reports/<suite>-<UTC time>)")
    p.add_argument("--resume", action="store_true", help="run only the cases that have no record in --out yet")
    p.add_argument(
        "--isolate",
        choices=("model", "case"),
        default="model",
        help="a worker process per model x precision group (default) or per case",
    )
    p.add_argument("--shard", help="run only slice K of N of the cases, as K/N (1-based)")
    p.add_argument(
        "--memory-cap",
        type=float,
        metavar="GIB",
        help="simulate a smaller card: cap this process's CUDA allocations at GIB GiB",
    )
    p.add_argument("--timeout", type=float, help="seconds before a hung case is killed (default: the suite's)")
    p.add_argument("--repetitions", type=int, help="minimum timed repetitions per case (default: the suite's)")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_command)


def _check_device(device: str) -> None:
    if device == "cpu":
        return
    if not (device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise BadInputError(f"device {device!r} is not one of cpu, cuda, cuda:N")
    if not cuda_available():
        raise BadInputError(f"--device {device}: no CUDA device is available on this machine; use --device cpu")
    if device.startswith("cuda:"):
        import torch

        count = torch.cuda.device_count()
        if int(device[5:]) >= count:
            raise BadInputError(
                f"--device {device}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})"
            )


def choose_suite(args: argparse.Namespace) -> tuple[str, str | None]:
    """The suite to run and, when chosen automatically, why."""
    if args.suite:
        return args.suite, None
    if args.model or args.model_path:
        return "adhoc", None
    if cuda_available():
        return "gpu", "a CUDA GPU is available, so the full 'gpu' suite runs"
    return "smoke", "no CUDA GPU is available, so the CPU 'smoke' suite runs (tiny models)"


def build_suite(args: argparse.Namespace):  # -> Suite
    """The suite with the command line's overrides applied."""
    from bench.config.spec import TimingPolicy
    from bench.config.suite import Group, Suite, load_suite, with_overrides

    name, why = choose_suite(args)
    if why:
        print(f"bench: {why}", file=sys.stderr)
    if name == "adhoc":
        device = args.device or ("cuda" if cuda_available() else "cpu")
        suite = Suite(
            "adhoc",
            "cases from the command line",
            device,
            TimingPolicy(),
            (
                Group(
                    models=("phi-3-tiny",),
                    precisions=("fp16" if device != "cpu" else "fp32",),
                    contexts=(128,),
                    new_tokens=(32,),
                ),
            ),
        )
    else:
        suite = load_suite(name)
    models = args.model
    weights = None
    if args.model_path is not None:
        from bench.config.models import checkpoint_files

        path = args.model_path.expanduser().resolve()
        checkpoint_files(path)
        weights = f"checkpoint:{path}"
        models = [args.model[0] if args.model else path.name]
    overrides = dict(
        models=tuple(models or ()),
        precisions=tuple(args.precision or ()),
        contexts=tuple(args.context or ()),
        batch_sizes=tuple(args.batch or ()),
        new_tokens=(args.new_tokens,) if args.new_tokens else (),
        device=args.device,
    )
    if weights:
        overrides["weights"] = weights
    for key in ("contexts", "batch_sizes", "new_tokens"):
        bad = [v for v in overrides[key] if v < 1]
        if bad:
            raise BadInputError(f"--{key.rstrip('s').replace('_', '-')} must be at least 1, got {bad[0]}")
    if args.repetitions is not None and args.repetitions < 1:
        raise BadInputError(f"--repetitions must be at least 1, got {args.repetitions}")
    return with_overrides(suite, **overrides)


def run_command(args: argparse.Namespace) -> int:
    """Run the cases and write the run folder; returns 0 when every case was recorded (whatever its status)."""
    import dataclasses

    from bench.config.precision import get_precision, require_bitsandbytes
    from bench.measure.environment import collect_environment
    from bench.measure.runner import RunOptions, run_cases
    from bench.report.progress import CaseProgress
    from bench.results.run_folder import RunFolder

    suite = build_suite(args)
    cases = suite.cases
    device = suite.overrides.get("device") or suite.device
    _check_device(device)
    for name in sorted({c.precision for c in cases}):
        require_bitsandbytes(get_precision(name))
    if args.shard:
        from bench.config.shards import parse_shard, select_shard

        k, n = parse_shard(args.shard)
        cases = select_shard(cases, k, n)
    policy = suite.policy
    if args.timeout is not None:
        if args.timeout <= 0:
            raise BadInputError(f"--timeout must be positive, got {args.timeout}")
        policy = dataclasses.replace(policy, timeout_s=args.timeout)
    if args.repetitions is not None:
        policy = dataclasses.replace(
            policy, min_repetitions=args.repetitions, max_repetitions=max(args.repetitions, policy.max_repetitions)
        )
    out = args.out or Path("reports") / f"{suite.name}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"
    folder = RunFolder(out)
    if args.resume and not folder.has_results():
        raise BadInputError(f"--resume: {folder.results_file} does not exist; drop --resume to start a new run")
    if not args.resume and folder.has_results():
        raise BadInputError(f"{out} already holds results; pass --resume to complete it, or choose another --out")
    cap = int(args.memory_cap * 2**30) if args.memory_cap else None
    if cap is not None and not device.startswith("cuda"):
        raise BadInputError("--memory-cap simulates a smaller GPU and needs --device cuda")
    folder.create()
    if args.resume:
        for side in folder.repair():
            print(f"bench: warning: a last line cut by a crash was moved aside to {side}", file=sys.stderr)
    env = collect_environment(suite.name)
    folder.record_environment(env)
    for warning in env.get("gpu_state", {}).get("warnings", []) or []:
        print(f"bench: warning: {warning}", file=sys.stderr)
    options = RunOptions(
        out_dir=out,
        isolate=args.isolate,
        resume=args.resume,
        memory_cap_bytes=cap,
        progress=not args.quiet,
        progress_factory=CaseProgress,
        run_id=env["run_id"],
    )
    print(f"bench: {len(cases)} case(s) of suite '{suite.name}' on {device} -> {out}", file=sys.stderr)
    records = run_cases(cases, policy, options)
    from bench.report.terminal import print_summary

    print_summary(records)
    if not args.no_report:
        _write_report(out)
    print(f"bench: records in {folder.results_file}", file=sys.stderr)
    return 0


def _write_report(out: Path) -> None:
    try:
        from bench.commands.report_cmd import write_report
    except ImportError:
        return
    try:
        path = write_report(out)
    except BadInputError as exc:
        print(f"bench: report skipped: {exc}", file=sys.stderr)
        return
    print(f"bench: report in {path}", file=sys.stderr)


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
