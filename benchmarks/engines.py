"""Eager against compiled decode on the same checkpoint, side by side in one run: tokens/s, TPOT and the roofline.

Two :class:`CaseRunner` in this process hold the same checkpoint, one per engine (``bench run --engine``'s
code path: warm-up, timed repetitions, telemetry repetitions, the record); rounds alternate between them so
that a drift in the machine's load hits both. Per context it prints each engine's median decode tokens/s
and TPOT, the median of the per-round ratios (compiled over eager tokens/s; eager over compiled TPOT), each
engine's fraction of the bandwidth roofline and the compile time. ``--out DIR`` also writes the records
(every round's samples joined per case) as a run folder that ``bench report DIR`` draws.

    python benchmarks/engines.py [--model phi-3-tiny | --model-path DIR] [--precision fp32] [--context 128 ...]
                                 [--new-tokens 64] [--rounds 5] [--repetitions 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any


def _joined(records: list[Any]) -> Any:
    """One record of a case from its rounds: the first round's record with every round's timed samples."""
    from bench.results.record import Samples

    first = records[0]
    samples = Samples(
        ttft_s=tuple(v for r in records for v in r.samples.ttft_s),
        e2e_s=tuple(v for r in records for v in r.samples.e2e_s),
        itl_s=tuple(v for r in records for v in r.samples.itl_s),
    )
    return first.replace(samples=samples, wall_s=sum(r.wall_s for r in records))


def _median(records: list[Any], metric: str) -> float:
    return statistics.median(r.metrics[metric] for r in records)


def main(argv: list[str] | None = None) -> int:
    """Run both engines and print the comparison; exit 1 when a case did not run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="phi-3-tiny", help="a registered model (random weights)")
    parser.add_argument("--model-path", type=Path, help="a local checkpoint directory instead of --model")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--context", type=int, action="append", help="prompt tokens (repeatable; default 128)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per engine and context")
    parser.add_argument("--repetitions", type=int, default=3, help="timed repetitions per round")
    parser.add_argument("--out", type=Path, help="also write the records as a run folder here")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.repetitions < 1 or args.new_tokens < 2:
        parser.error("--rounds and --repetitions must be at least 1 and --new-tokens at least 2")

    from bench.config.spec import CaseSpec, TimingPolicy
    from bench.measure.runner import quiet_libraries
    from bench.measure.worker import CaseRunner

    quiet_libraries()
    weights, model = "random", args.model
    if args.model_path is not None:
        path = args.model_path.expanduser().resolve()
        weights, model = f"checkpoint:{path}", path.name
    runners = {"eager": CaseRunner(), "compiled": CaseRunner()}
    policy = TimingPolicy(warmup_runs=1, min_repetitions=args.repetitions, max_repetitions=args.repetitions)
    contexts = args.context or [128]
    by_case: dict[tuple[str, int], list[Any]] = {}
    for context in contexts:
        for i in range(args.rounds):
            for engine in ("eager", "compiled") if i % 2 == 0 else ("compiled", "eager"):
                spec = CaseSpec(
                    model, args.precision, "generate", 1, context, args.new_tokens, weights, device=args.device,
                    suite="engines", engine=engine,
                )
                record = runners[engine].run(spec, policy)
                if not record.ok:
                    print(f"{engine} L{context}: {record.status}: {record.error}", file=sys.stderr)
                    return 1
                by_case.setdefault((engine, context), []).append(record)

    any_record = by_case[("eager", contexts[0])][0]
    rf = any_record.roofline
    print(
        f"{model} {args.precision} on {any_record.device_name} ({args.device}, {os.cpu_count()} cores), "
        f"{args.new_tokens} new tokens, {args.rounds} alternating rounds x {args.repetitions} repetitions"
    )
    if rf.memory_bandwidth_bytes_per_s:
        print(f"roofline: {rf.memory_bandwidth_bytes_per_s / 1e9:.1f} GB/s, {rf.memory_bandwidth_source}")
    header = (
        f"{'context':>7} | {'eager tok/s':>11} {'compiled tok/s':>14} {'ratio':>6} | {'eager TPOT':>10} "
        f"{'compiled TPOT':>13} {'ratio':>6} | {'roofline eager':>14} {'compiled':>8} | {'compile s':>9}"
    )
    print("ratio: the median of the rounds' compiled/eager tokens/s (eager/compiled TPOT), each round side by side")
    print(header)
    for context in contexts:
        eager, compiled = by_case[("eager", context)], by_case[("compiled", context)]
        tps_ratio = statistics.median(
            c.metrics["decode_tokens_per_s"] / e.metrics["decode_tokens_per_s"]
            for e, c in zip(eager, compiled, strict=True)
        )
        tpot_ratio = statistics.median(
            e.metrics["tpot_s"] / c.metrics["tpot_s"] for e, c in zip(eager, compiled, strict=True)
        )
        fraction = {
            k: (f"{_median(v, 'decode_roofline_fraction'):.1%}" if "decode_roofline_fraction" in v[0].metrics else "—")
            for k, v in (("eager", eager), ("compiled", compiled))
        }
        print(
            f"{context:>7} | {_median(eager, 'decode_tokens_per_s'):>11.1f} "
            f"{_median(compiled, 'decode_tokens_per_s'):>14.1f} {tps_ratio:>5.2f}x | "
            f"{_median(eager, 'tpot_s') * 1e3:>8.2f}ms {_median(compiled, 'tpot_s') * 1e3:>11.2f}ms "
            f"{tpot_ratio:>5.2f}x | {fraction['eager']:>14} {fraction['compiled']:>8} | "
            f"{compiled[0].compile_s:>9.1f}"
        )
    if args.out is not None:
        from bench.measure.environment import collect_environment
        from bench.results.run_folder import RunFolder

        folder = RunFolder(args.out).create(with_results=True)
        folder.record_environment(collect_environment("engines"))
        folder.append_all(_joined(records) for records in by_case.values())
        print(f"records in {folder.results_file}; draw them with: bench report {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
