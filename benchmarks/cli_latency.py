"""How fast does the command line answer? Each command's wall time beside the bare interpreter's start-up.

Every command runs as its own process (``python -m bench ...``), interleaved round by round with
``python -c pass``, so a busy machine slows all of them alike. The first round warms the caches (the
architecture summaries under ``$BENCH_CACHE_DIR``, the OS file cache) and is reported apart as "cold";
the table gives the median wall time of the later rounds, its ratio to the start-up's median, the
median CPU time (user + system: what a busy machine's wall time hides), the peak RSS and the target the
command must meet. ``bench report`` runs on a copy of the frozen CPU smoke run (and of
``--smoke-run DIR``, e.g. a full 48-case ``bench run --suite smoke``), so nothing in the tree changes.

    python benchmarks/cli_latency.py [--rounds 5] [--smoke-run DIR] [--cache-dir DIR]

Exit status 1 when a command fails or misses its target.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FROZEN_RUN = ROOT / "tests" / "data" / "runs" / "cpu-smoke"


@dataclass(frozen=True)
class Command:
    """One command line to time, with the wall-time target it must meet (None: shown for comparison only)."""

    label: str
    argv: tuple[str, ...]
    target_s: float | None


@dataclass(frozen=True)
class Timing:
    """One process: its wall time, CPU time (user + system), exit status and peak resident memory."""

    wall_s: float
    returncode: int
    max_rss_bytes: int | None
    cpu_s: float | None = None


def commands(work: Path, smoke_run: Path | None) -> list[Command]:
    """The commands of the responsiveness issue, with copies of the run folders they read in ``work``."""
    frozen_a, frozen_b = work / "cpu-smoke-a", work / "cpu-smoke-b"
    for copy in (frozen_a, frozen_b):
        shutil.copytree(FROZEN_RUN, copy)
    bench = (sys.executable, "-m", "bench")
    out = [
        Command("python -c pass", (sys.executable, "-c", "pass"), None),
        Command("bench --help", (*bench, "--help"), 0.5),
        Command("bench list", (*bench, "list"), 0.5),
        Command("bench compare RUN RUN", (*bench, "compare", str(frozen_a), str(frozen_b)), None),
        Command(
            "bench predict phi-3-mini nf4 4032",
            (*bench, "predict", "--model", "phi-3-mini", "--precision", "nf4", "--context", "4032"),
            1.0,
        ),
        Command("bench advise phi-3-mini 4096", (*bench, "advise", "--model", "phi-3-mini", "--context", "4096"), 1.0),
        Command(
            "bench advise ... --plot FILE",
            (*bench, "advise", "--model", "phi-3-mini", "--context", "4096", "--plot", str(work / "advice.png")),
            None,
        ),
        Command(f"bench report (frozen {FROZEN_RUN.name})", (*bench, "report", str(frozen_a)), 5.0),
    ]
    if smoke_run is not None:
        copy = work / "smoke-run"
        shutil.copytree(smoke_run, copy)
        cases = sum(1 for line in (copy / "results.jsonl").open(encoding="utf-8") if line.strip())
        out.append(Command(f"bench report (smoke run, {cases} cases)", (*bench, "report", str(copy)), 5.0))
    return out


def time_once(argv: tuple[str, ...], env: dict[str, str], cwd: Path) -> Timing:
    """Run ``argv`` in ``cwd`` with output discarded; wall time from start to exit, and its peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if hasattr(os, "wait4"):
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        cpu = usage.ru_utime + usage.ru_stime
        return Timing(wall, proc.returncode, int(usage.ru_maxrss) * 1024, cpu)  # Linux reports KiB
    proc.wait()
    return Timing(time.perf_counter() - start, proc.returncode, None)


def measure(cmds: list[Command], rounds: int, env: dict[str, str], cwd: Path) -> dict[str, list[Timing]]:
    """Every command once per round, in rotation, in ``cwd`` (default outputs land there); round 0 is cold."""
    out: dict[str, list[Timing]] = {c.label: [] for c in cmds}
    for r in range(rounds + 1):
        order = cmds[r % len(cmds) :] + cmds[: r % len(cmds)]
        for cmd in order:
            out[cmd.label].append(time_once(cmd.argv, env, cwd))
    return out


def report(cmds: list[Command], timings: dict[str, list[Timing]]) -> list[str]:
    """Print the table; return the commands that failed or missed their target."""
    startup = statistics.median(t.wall_s for t in timings[cmds[0].label][1:])
    head = f"{'command':40} {'cold s':>7} {'median s':>9} {'x start-up':>10} {'CPU s':>6} {'RSS MiB':>8} {'target':>7}"
    print(f"{head}  verdict")
    misses = []
    for cmd in cmds:
        runs = timings[cmd.label]
        warm = runs[1:]
        median = statistics.median(t.wall_s for t in warm)
        rss = max((t.max_rss_bytes or 0) for t in warm) / 2**20
        cpu = statistics.median(t.cpu_s for t in warm) if all(t.cpu_s is not None for t in warm) else float("nan")
        failed = [t.returncode for t in runs if t.returncode != 0]
        if failed:
            verdict = f"FAILED (exit {failed[0]})"
        elif cmd.target_s is None:
            verdict = "-"
        else:
            verdict = "meets" if median <= cmd.target_s else "MISSES"
        if failed or verdict == "MISSES":
            misses.append(cmd.label)
        target = f"{cmd.target_s:.1f} s" if cmd.target_s is not None else "-"
        print(
            f"{cmd.label:40} {runs[0].wall_s:7.2f} {median:9.3f} {median / startup:10.1f} {cpu:6.2f} {rss:8.0f} "
            f"{target:>7}  {verdict}"
        )
    return misses


def main(argv: list[str] | None = None) -> int:
    """Time the commands and print the table; exit 1 when one fails or misses its target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after the cold one (default 5)")
    parser.add_argument("--smoke-run", type=Path, help="also time 'bench report' on a copy of this run folder")
    parser.add_argument(
        "--cache-dir", type=Path, help="BENCH_CACHE_DIR for the commands (default: a fresh one, so round 0 is cold)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.smoke_run is not None and not (args.smoke_run / "results.jsonl").is_file():
        parser.error(f"--smoke-run {args.smoke_run} has no results.jsonl; pass a run folder")
    with tempfile.TemporaryDirectory(prefix="cli-latency-") as tmp:
        work = Path(tmp)
        env = dict(os.environ, BENCH_CACHE_DIR=str(args.cache_dir or work / "cache"), MPLBACKEND="Agg")
        cmds = commands(work, args.smoke_run)
        python = sys.version.split()[0]
        print(f"{len(cmds)} commands x {args.rounds + 1} rounds on {os.cpu_count()} CPU cores; python {python}")
        misses = report(cmds, measure(cmds, args.rounds, env, work))
    if misses:
        print(f"missed: {', '.join(misses)}")
        return 1
    print("every command meets its target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
