"""Does the harness slow what it measures? Its reported E2E latency against the same call timed bare.

Measures exactly what ``bench run`` does: every harness round is :meth:`CaseRunner.run` on the case (the
worker's own code: warm-up, the timed repetitions with everything a worker runs beside them, the
telemetry repetitions, the record), in a process that also runs the worker's runner watchdog thread; the
E2E it reports is read from the record. Each round also times the same ``model.generate`` call bare (a
clock read before and after, no streamer, no sampler), on the same loaded model, in alternating order.
Prints the ratio of medians and the median of the paired ratios with a bootstrap interval; the target
(judged on the paired ratios, which a drift in the machine's load between rounds does not move) is 3%.

By default the model is a local checkpoint built once (random weights, Phi-3 architecture at hidden 512,
6 layers, fp32), loaded as ``bench run --model-path`` loads one; ``--model NAME`` runs a registered model.

    python benchmarks/timing_overhead.py [--model-path DIR | --model phi-3-tiny] [--context 128] [--new-tokens 64]
                                         [--rounds 30] [--engine eager] [--with-sampler-thread]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

DEFAULT_CHECKPOINT = {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 6}


def local_checkpoint(overrides: dict[str, int]) -> Path:
    """A local checkpoint of the Phi-3 architecture with ``overrides`` and random weights, built once."""
    import transformers

    from bench.config.locations import cache_dir
    from bench.config.models import checkpoint_json
    from bench.measure.loader import fill_random_

    name = "-".join(f"{k.split('_')[0]}{v}" for k, v in sorted(overrides.items()))
    path = cache_dir() / "benchmark-checkpoints" / f"phi3-{name}"
    if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return path
    data = checkpoint_json("microsoft/Phi-3-mini-4k-instruct")
    data.update(overrides, num_attention_heads=8, num_key_value_heads=8)
    config = transformers.Phi3Config.from_dict(data)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype="float32")
    fill_random_(model, 0)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    model.save_pretrained(str(tmp))
    tmp.rename(path)
    return path


def median_interval(values: list[float], level: float = 0.9, resamples: int = 2000) -> tuple[float, float]:
    """A bootstrap interval of the median of ``values`` (seeded, so a rerun on the same data prints the same)."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = (1 - level) / 2
    return medians[int(tail * resamples)], medians[int((1 - tail) * resamples) - 1]


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the ratio; exit 1 when it misses the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a registered model with random weights (default: a local checkpoint)")
    parser.add_argument("--model-path", type=Path, help="a local checkpoint directory")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--engine", default="eager", help="eager or compiled")
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--target", type=float, default=0.03, help="allowed relative overhead")
    parser.add_argument(
        "--with-sampler-thread",
        action="store_true",
        help="also time each round as bench run did before telemetry had repetitions of its own: the same call "
        "with the 20 ms sampling thread running beside it",
    )
    args = parser.parse_args(argv)
    if args.rounds < 20:
        parser.error("--rounds must be at least 20: the median of fewer paired ratios is too noisy to judge 3%")

    from bench.config.spec import CaseSpec, TimingPolicy
    from bench.measure.case_runner import CaseRunner
    from bench.measure.scenarios import generation_kwargs
    from bench.measure.worker_process import die_with_runner, quiet_libraries

    quiet_libraries()
    die_with_runner(os.getpid())  # the watchdog thread every worker runs beside its cases
    if args.model:
        weights, model_name = "random", args.model
    else:
        path = (args.model_path or local_checkpoint(DEFAULT_CHECKPOINT)).expanduser().resolve()
        weights, model_name = f"checkpoint:{path}", path.name
    spec = CaseSpec(
        model=model_name,
        precision=args.precision,
        scenario="generate",
        batch_size=1,
        context_tokens=args.context,
        new_tokens=args.new_tokens,
        weights=weights,
        suite="overhead",
        **({"engine": args.engine} if args.engine != "eager" else {}),
    )
    # one timed repetition per round, as many rounds as asked: the worker's code path, paired with a bare call
    policy = TimingPolicy(warmup_runs=0, min_repetitions=1, max_repetitions=1, min_duration_s=0.0)
    runner = CaseRunner()
    first = runner.run(spec, TimingPolicy(warmup_runs=1, min_repetitions=1, max_repetitions=1))
    if not first.ok:
        print(f"the harness could not run the case: {first.error}", file=sys.stderr)
        return 2
    case = runner.prepared_case(spec, "cpu")
    model = case.loaded.model
    kwargs = dict(generation_kwargs(model, args.new_tokens), **case.engine.generate_kwargs())

    def bare() -> float:
        case.engine.before_call()
        start = time.perf_counter()
        out = model.generate(**case.prompt, **kwargs)
        elapsed = time.perf_counter() - start
        if out.sequences.shape[-1] != args.context + args.new_tokens:
            raise RuntimeError(f"generate returned {out.sequences.shape[-1]} tokens")
        return elapsed

    def harness() -> float:
        record = runner.run(spec, policy)
        if not record.ok:
            raise RuntimeError(f"the harness failed: {record.error}")
        return record.samples.e2e_s[0]

    def beside_thread() -> float:
        sampler = runner.sampler("cpu")  # the sampling thread at its 20 ms period, beside the timed call
        sampler.start()
        try:
            return case.run_once()
        finally:
            sampler.stop()

    for _ in range(2):  # warm-up both
        bare()
        harness()
    bare_s: list[float] = []
    reported_s: list[float] = []
    thread_s: list[float] = []
    for i in range(args.rounds):
        if i % 2 == 0:
            bare_s.append(bare())
            reported_s.append(harness())
            if args.with_sampler_thread:
                thread_s.append(beside_thread())
        else:
            if args.with_sampler_thread:
                thread_s.append(beside_thread())
            reported_s.append(harness())
            bare_s.append(bare())
    b, r = statistics.median(bare_s), statistics.median(reported_s)
    # each round times the two side by side: the median of the paired ratios resists drift in machine load
    ratios = [x / y for x, y in zip(reported_s, bare_s, strict=True)]
    paired = statistics.median(ratios)
    low, high = median_interval(ratios)
    print(
        f"model {model_name} {args.precision} ({args.engine}) on CPU ({os.cpu_count()} cores), prompt {args.context}, "
        f"{args.new_tokens} new tokens, {args.rounds} interleaved rounds, each through CaseRunner.run as bench run"
    )
    print(f"  bare generate call          median {b * 1e3:9.2f} ms")
    print(f"  harness reported E2E        median {r * 1e3:9.2f} ms   ratio of medians {r / b:.4f}")
    print(f"  median of paired ratios     {paired:.4f}   (90% bootstrap interval {low:.4f} to {high:.4f})")
    if thread_s:
        t = statistics.median(thread_s)
        paired_t = statistics.median(x / y for x, y in zip(thread_s, bare_s, strict=True))
        print(
            f"  with the sampler thread     median {t * 1e3:9.2f} ms   ratio of medians {t / b:.4f}, "
            f"median paired ratio {paired_t:.4f}  (bench run before telemetry repetitions)"
        )
    # judged on the paired ratios: the ratio of medians moves with the machine's load between rounds
    overhead = paired - 1
    verdict = "within" if overhead <= args.target else "OUTSIDE"
    print(f"  overhead {overhead * 100:+.2f}% (median paired ratio) -> {verdict} the {args.target * 100:.0f}% target")
    return 0 if overhead <= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
