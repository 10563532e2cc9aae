"""``bench run``: run a suite (or an ad-hoc matrix) and write records, environment and report."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.config.spec import ENGINES, KV_CACHE_TYPES
from bench.errors import BadInputError


def register(sub: Any) -> None:
    """Add the ``run`` subcommand."""
    p = sub.add_parser(
        "run",
        help="run a suite and write DIR/results.jsonl, environment and report",
        description="Run a suite of cases. Without --suite: 'gpu' where CUDA is available, else 'smoke'. "
        "A GPU the driver sees but torch cannot use stops the run (exit 2) unless --device cpu is given.",
    )
    p.add_argument("--suite", help="a shipped suite name (see 'bench list') or a suite .toml file")
    p.add_argument(
        "--model",
        action="append",
        help="model name or hub id org/name, read from the local Hugging Face cache (repeatable); "
        "replaces the suite's models",
    )
    p.add_argument(
        "--allow-download",
        action="store_true",
        help="fetch a hub id missing from the local Hugging Face cache (never while HF_HUB_OFFLINE is set)",
    )
    p.add_argument(
        "--model-path",
        type=Path,
        help="a local checkpoint directory (config.json + safetensors), or a .gguf file for --engine llama.cpp",
    )
    p.add_argument(
        "--precision",
        action="append",
        help="precision (repeatable): fp32 fp16 bf16 int8 nf4 nf4-dq fp4 fp4-dq; with --engine llama.cpp the GGUF "
        "types f16 q8_0 q4_0 q4_k_m q5_k_m q6_k, or gguf (a .gguf file's own types)",
    )
    p.add_argument(
        "--context", action="append", type=int, help="prompt length in tokens (sequence length for encoders)"
    )
    p.add_argument("--batch", action="append", type=int, help="batch size (repeatable)")
    p.add_argument("--new-tokens", type=int, help="tokens to generate per sequence (decoders)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the suite's)")
    p.add_argument(
        "--cache",
        choices=("window", "full"),
        help="decoders' KV cache: 'window' keeps the config's sliding window, 'full' removes it and keeps every "
        "token (default: what the checkpoint's config says)",
    )
    p.add_argument(
        "--engine",
        action="append",
        choices=ENGINES,
        help="how the model runs (repeatable): 'eager' transformers as it comes (default), 'compiled' a static KV "
        "cache and the decode step compiled by torch.compile (CUDA graphs on a GPU); compile time is recorded apart; "
        "'llama.cpp' a GGUF file in llama.cpp (llama-cpp-python: pip install 'llm-bench[llamacpp]')",
    )
    p.add_argument(
        "--kv-cache-type",
        choices=KV_CACHE_TYPES,
        help="KV cache element type of --engine llama.cpp: f16 (its default), q8_0 or q4_0; 'auto' the engine's own",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads of --engine llama.cpp (n_threads and n_threads_batch; default: every core of the "
        "process's CPU set; the record's engine_info.n_threads says what was used); other engines refuse it",
    )
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
        metavar="GIB|CARD",
        help='simulate a smaller card: a size in GiB, or a card name ("GeForce RTX 4060": its usable memory); '
        "the worker caps CUDA allocations at that minus the CUDA context it measures",
    )
    p.add_argument("--timeout", type=float, help="seconds before a hung case is killed (default: the suite's)")
    p.add_argument("--repetitions", type=int, help="minimum timed repetitions per case (default: the suite's)")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument(
        "--quality",
        action="store_true",
        help="also score each precision against the checkpoint's own dtype over the shipped evaluation text "
        "(KL divergence, top-1 agreement, perplexity; encoders: embedding cosine); refused for random weights",
    )
    p.add_argument("--quality-tokens", type=int, help="score at most this many tokens of the text (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_command)


def gpu_detection(args: argparse.Namespace) -> Any:  # -> GpuDetection | None
    """The driver's and torch's view of the GPUs; None when ``--device cpu`` asks for the CPU on purpose.

    A GPU the driver sees (NVML or nvidia-smi) but torch cannot use (a CPU-only build, or a CUDA build
    newer than the driver) is a :class:`BadInputError` naming both versions and the torch to install,
    never a silent fall-back to the CPU suite.
    """
    if args.device == "cpu":
        return None
    from bench.measure.cuda_usability import MISMATCH, detect_gpu, mismatch_message

    detection = detect_gpu()
    if detection.verdict == MISMATCH:
        raise BadInputError(mismatch_message(detection))
    return detection


def _check_device(device: str, detection: Any = None) -> None:
    if device == "cpu":
        return
    if not (device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise BadInputError(f"device {device!r} is not one of cpu, cuda, cuda:N")
    if detection is None or not detection.usable:
        from bench.measure.cuda_usability import describe

        why = f" ({describe(detection)})" if detection is not None else ""
        raise BadInputError(f"--device {device}: no CUDA device is available on this machine{why}; use --device cpu")
    if device.startswith("cuda:"):
        import torch

        count = torch.cuda.device_count()
        if int(device[5:]) >= count:
            raise BadInputError(
                f"--device {device}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})"
            )


def choose_suite(args: argparse.Namespace, detection: Any = None) -> tuple[str, str | None]:
    """The suite to run and, when chosen automatically, why (``detection``: :func:`gpu_detection`'s answer)."""
    if args.suite:
        return args.suite, None
    if args.model or args.model_path:
        return "adhoc", None
    if detection is not None and detection.usable:
        return "gpu", "a CUDA GPU is available, so the full 'gpu' suite runs"
    if detection is None:
        return "smoke", "--device cpu, so the CPU 'smoke' suite runs (tiny models)"
    from bench.measure.cuda_usability import describe

    return "smoke", f"{describe(detection)}, so the CPU 'smoke' suite runs (tiny models)"


def build_suite(args: argparse.Namespace, detection: Any = None):  # -> Suite
    """The suite with the command line's overrides applied (``detection``: :func:`gpu_detection`'s answer)."""
    from bench.config.spec import TimingPolicy
    from bench.config.suite import Group, Suite, check_threads, load_suite, with_overrides

    name, why = choose_suite(args, detection)
    if why:
        print(f"bench: {why}", file=sys.stderr)
    if name == "adhoc":
        device = args.device or ("cuda" if detection is not None and detection.usable else "cpu")
        suite = Suite(
            "adhoc",
            "cases from the command line",
            device,
            TimingPolicy(),
            (
                Group(
                    models=("phi-3-tiny",),
                    precisions=_adhoc_precisions(args, device),
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
        from bench.config.checkpoint_check import validate_checkpoint
        from bench.config.models import checkpoint_files, gguf_fields, is_gguf_file

        path = args.model_path.expanduser().resolve()
        if is_gguf_file(path):
            if "llama.cpp" not in (args.engine or ()):
                raise BadInputError(f"--model-path {path} is a GGUF file: run it with --engine llama.cpp")
            _check_gguf_precisions(path, gguf_fields(path)[1], args.precision or ())
        else:
            validate_checkpoint(checkpoint_files(path))  # a corrupt weight file is named now, not in every case
        weights = f"checkpoint:{path}"
        models = [args.model[0] if args.model else path.name]
    _fetch_hub_models(models or (), args.allow_download)
    overrides = dict(
        models=tuple(models or ()),
        precisions=tuple(args.precision or ()),
        contexts=tuple(args.context or ()),
        batch_sizes=tuple(args.batch or ()),
        new_tokens=(args.new_tokens,) if args.new_tokens is not None else (),  # 0 is refused, never ignored
        device=args.device,
        cache=args.cache,
        engines=_engines(args.engine),
        kv_cache_type=args.kv_cache_type,
        threads=check_threads(args.threads) if args.threads is not None else None,
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


def _check_gguf_precisions(path: Path, file_type: str | None, precisions: Any) -> None:
    """Refuse a --precision that is not the GGUF file's own type (``gguf`` takes the file as it is)."""
    from bench.config.precision import get_precision

    for name in precisions:
        wanted = get_precision(name).gguf
        if wanted and file_type is not None and file_type != f"MOSTLY_{wanted}":
            raise BadInputError(
                f"--precision {name}: {path.name} is {file_type.removeprefix('MOSTLY_')}, not {wanted}; "
                "pass --precision gguf to run the file's own types"
            )


def _adhoc_precisions(args: argparse.Namespace, device: str) -> tuple[str, ...]:
    """The ad-hoc run's precision when --precision is not given: q4_0 for llama.cpp alone, else fp16 (GPU) / fp32."""
    if args.engine and set(args.engine) == {"llama.cpp"}:
        return ("gguf",) if args.model_path is not None and args.model_path.suffix.lower() == ".gguf" else ("q4_0",)
    return ("fp16" if device != "cpu" else "fp32",)


def _engines(engines: list[str] | None) -> tuple[str, ...]:
    """The --engine values as given; one named twice is refused (it would run every case twice)."""
    given = tuple(engines or ())
    twice = sorted({e for e in given if given.count(e) > 1})
    if twice:
        raise BadInputError(f"--engine {twice[0]} is given twice; name each engine once")
    return given


def _fetch_hub_models(models: Any, allow_download: bool) -> None:
    """Make sure every hub id among ``models`` is complete in the local Hugging Face cache.

    Offline by default; with ``allow_download`` a missing or incomplete snapshot is fetched, unless
    HF_HUB_OFFLINE is set (then the run stays offline and a missing model is refused).
    """
    from bench.config.hub import fetch_snapshot, hub_offline, is_hub_id, local_snapshot
    from bench.config.models import MODELS, checkpoint_files

    hub_ids = [m for m in models if m not in MODELS and is_hub_id(m)]
    if allow_download and hub_offline():
        print(
            "bench: HF_HUB_OFFLINE is set: --allow-download downloads nothing, hub ids load from the cache only",
            file=sys.stderr,
        )
    for repo_id in hub_ids:
        try:
            checkpoint_files(local_snapshot(repo_id)[0])
        except BadInputError:
            if not allow_download:
                raise
            if not hub_offline():  # offline, fetch_snapshot refuses and says why
                print(f"bench: downloading {repo_id} into the Hugging Face cache (--allow-download)", file=sys.stderr)
            checkpoint_files(fetch_snapshot(repo_id)[0])


def run_command(args: argparse.Namespace) -> int:
    """Run the cases and write the run folder; returns 0 when cases were recorded, 1 when every case failed."""
    import dataclasses

    from bench.config.precision import get_precision, require_bitsandbytes
    from bench.measure.environment import collect_environment
    from bench.measure.run_options import RunOptions
    from bench.measure.runner import run_cases
    from bench.report.progress import CaseProgress
    from bench.results.run_folder import RunFolder

    refuse_bad_numbers(args)
    detection = gpu_detection(args)
    suite = build_suite(args, detection)
    cases = suite.cases
    device = suite.overrides.get("device") or suite.device
    _check_device(device, detection)
    for name in sorted({c.precision for c in cases}):
        require_bitsandbytes(get_precision(name))
    if any(c.engine == "llama.cpp" for c in cases):
        from bench.measure.llamacpp_binding import require_binding, require_gpu_offload

        # asked for on the command line: exit 2 with the install command; a suite's llama.cpp cases are recorded as
        # skipped with it instead. Either way a CPU-only build never runs a --device cuda case on the CPU.
        if "llama.cpp" in (args.engine or ()):
            require_binding()
            require_gpu_offload(device)
    from bench.commands.quality_run import check_quality_args, run_quality

    check_quality_args(args, cases)
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
    cap = None
    if args.memory_cap is not None:
        from bench.config.hardware import parse_memory_cap

        cap, cap_label = parse_memory_cap(args.memory_cap)
        if not device.startswith("cuda"):
            raise BadInputError("--memory-cap simulates a smaller GPU and needs --device cuda")
        print(f"bench: simulated card: {cap_label}, less the CUDA context each worker measures", file=sys.stderr)
    folder.create()
    if args.resume:
        for side in folder.repair():
            print(f"bench: warning: a last line cut by a crash was moved aside to {side}", file=sys.stderr)
    env = collect_environment(suite.name, detection=detection)
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
        allow_download=args.allow_download,
    )
    from bench.measure.runner import hub_offline_for_workers, pending_cases
    from bench.predict.record_check import prediction_annotator

    hub_offline_for_workers(args.allow_download)  # the quality pass's process too
    quality = run_quality(args, pending_cases(cases, options))
    options = dataclasses.replace(options, annotate=prediction_annotator(quality))  # each record's own prediction
    print(f"bench: {len(cases)} case(s) of suite '{suite.name}' on {device} -> {out}", file=sys.stderr)
    records = run_cases(cases, policy, options)
    from bench.report.terminal import print_summary

    print_summary(records, report=None if args.no_report else str(folder.report_md))
    if not args.no_report:
        _write_report(out)
    print(f"bench: records in {folder.results_file}", file=sys.stderr)
    return _exit_status(records)


FAILED_STATUSES = ("oom", "error", "timeout")


def _exit_status(records: list) -> int:
    """1 when every case of this invocation failed (oom / error / timeout), with a line saying so; else 0."""
    failed = [r for r in records if r.status in FAILED_STATUSES]
    if not records or len(failed) < len(records):
        return 0
    counts: dict[str, int] = {}
    for r in failed:
        counts[r.status] = counts.get(r.status, 0) + 1
    what = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    first = next((r.error for r in failed if r.error), "") or ""
    hint = f"; the first error: {first.strip().splitlines()[0]}" if first.strip() else ""
    print(f"bench: every case failed ({what}): nothing was measured{hint}", file=sys.stderr)
    return 1


def refuse_bad_numbers(args: argparse.Namespace) -> None:
    """Refuse numbers that cannot mean what they say, before anything runs (never silently replaced)."""
    if args.new_tokens is not None and args.new_tokens < 1:
        raise BadInputError(
            f"--new-tokens {args.new_tokens}: a generate case needs at least 1 new token (TTFT) and 2 for decode "
            "metrics (TPOT, decode tokens/s); pass --new-tokens 2 or more (encoders ignore it)"
        )
    # --memory-cap <= 0 is refused by bench.config.hardware.parse_memory_cap when the cap is read


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
