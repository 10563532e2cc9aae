"""Does the harness slow what it measures? Its reported E2E latency against the same call timed bare.

Side by side in one process, interleaved: a bare ``model.generate`` timed by a clock read before and
after, and the harness's ``run_generate`` (a streamer reading the clock at every token). Prints the
ratio of medians; the target is within 3%.

    python benchmarks/timing_overhead.py [--model phi-3-tiny] [--context 128] [--new-tokens 64] [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the ratio; exit 1 when it misses the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="phi-3-tiny")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--target", type=float, default=0.03, help="allowed relative overhead")
    args = parser.parse_args(argv)

    from bench.config.models import resolve_source
    from bench.config.precision import get_precision
    from bench.measure.loader import load_model
    from bench.measure.scenarios import generation_kwargs, make_prompt, no_sync, run_generate

    loaded = load_model(resolve_source(args.model, "random"), get_precision(args.precision), "cpu")
    model = loaded.model
    prompt = make_prompt(model.config.vocab_size, 1, args.context, 0, "cpu")
    kwargs = generation_kwargs(model, args.new_tokens)

    def bare() -> float:
        start = time.perf_counter()
        out = model.generate(**prompt, **kwargs)
        elapsed = time.perf_counter() - start
        assert out.sequences.shape[-1] == args.context + args.new_tokens
        return elapsed

    def harness() -> tuple[float, float]:
        start = time.perf_counter()
        sample = run_generate(model, prompt, args.new_tokens, time.perf_counter, no_sync)
        return sample.e2e_s, time.perf_counter() - start

    for _ in range(2):  # warm-up both
        bare()
        harness()
    bare_s, reported_s, wall_s = [], [], []
    for i in range(args.rounds):
        order = (bare, harness) if i % 2 == 0 else (harness, bare)
        for fn in order:
            if fn is bare:
                bare_s.append(bare())
            else:
                e2e, wall = harness()
                reported_s.append(e2e)
                wall_s.append(wall)
    b, r, w = statistics.median(bare_s), statistics.median(reported_s), statistics.median(wall_s)
    # each round times the two side by side: the median of the paired ratios resists drift in machine load
    paired_r = statistics.median(x / y for x, y in zip(reported_s, bare_s, strict=True))
    paired_w = statistics.median(x / y for x, y in zip(wall_s, bare_s, strict=True))
    print(
        f"model {args.model} {args.precision} on CPU, prompt {args.context}, {args.new_tokens} new tokens, "
        f"{args.rounds} interleaved rounds"
    )
    print(f"  bare generate call          median {b * 1e3:9.2f} ms")
    print(
        f"  harness reported E2E        median {r * 1e3:9.2f} ms   ratio of medians {r / b:.4f}, "
        f"median paired ratio {paired_r:.4f}"
    )
    print(
        f"  harness call incl. timing   median {w * 1e3:9.2f} ms   ratio of medians {w / b:.4f}, "
        f"median paired ratio {paired_w:.4f}  (per-token timing cost)"
    )
    worst = max(abs(paired_r - 1), paired_w - 1)
    verdict = "within" if worst <= args.target else "OUTSIDE"
    print(f"  overhead {worst * 100:.2f}% -> {verdict} the {args.target * 100:.0f}% target")
    return 0 if worst <= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
