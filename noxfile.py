"""Sessions: ``nox -s bench`` (the main job), ``tests``, ``lint``, and the benchmarks of the harness itself.

Pass arguments after ``--``: ``nox -s bench -- --suite gpu --out reports/mine``. ``nox -s bench_system`` is
the main job with the torch the Python running nox already has (its virtualenv sees that Python's packages).
"""

from __future__ import annotations

import site
import sys
from pathlib import Path

import nox

nox.options.sessions = ["bench"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = None  # the interpreter nox itself runs on


def _install(session: nox.Session, *extras: str) -> None:
    spec = f".[{','.join(extras)}]" if extras else "."
    session.install(spec)


# ``bench_system``'s virtualenv sees the site-packages of the interpreter nox runs on, so pip keeps the torch
# installed there (a CUDA build that works with this machine's driver) instead of resolving a new one.
SYSTEM_SITE_VENV_PARAMS = ["--system-site-packages"]
OUTER_SITE_PTH = "_llm_bench_outer_site.pth"


def outer_site_packages(
    prefix: str = sys.prefix, base_prefix: str = sys.base_prefix, site_dirs: list[str] | None = None
) -> list[str]:
    """The site-packages of the virtualenv nox itself runs in; empty when nox runs on a base interpreter.

    ``--system-site-packages`` exposes the base interpreter's packages only: a virtualenv made from inside
    another one does not see the outer one's packages, where a user's torch usually is.
    """
    if prefix == base_prefix:
        return []
    return list(site.getsitepackages() if site_dirs is None else site_dirs)


def _link_outer_site(session: nox.Session) -> None:
    dirs = outer_site_packages()
    if not dirs:
        return
    purelib = session.run(
        "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", silent=True, log=False
    )
    pth = Path(str(purelib).strip()) / OUTER_SITE_PTH
    pth.write_text("".join(f"{d}\n" for d in dirs), encoding="utf-8")
    session.log(f"the session sees the packages of {sys.prefix} ({pth.name})")


def bench_exit_status(exc: Exception) -> int | None:
    """The exit status ``nox -s bench`` passes on for a failed ``bench run``: 2 (bad input, e.g. a GPU torch
    cannot use) stays 2; anything else is left to nox (None)."""
    return 2 if getattr(exc, "return_code", None) == 2 else None


def _run_bench(session: nox.Session) -> None:
    try:
        session.run("bench", "run", *session.posargs)
    except nox.command.CommandFailed as exc:
        if bench_exit_status(exc) == 2:
            raise SystemExit(2) from None  # the one-line reason is already printed by bench
        raise


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The main job: run a suite (gpu on an NVIDIA machine, smoke on a CPU) and write its report."""
    _install(session)
    _run_bench(session)


@nox.session(python=PYTHON, venv_params=SYSTEM_SITE_VENV_PARAMS)
def bench_system(session: nox.Session) -> None:
    """The main job with the torch already installed where nox runs (nothing installed there is replaced)."""
    _link_outer_site(session)
    _install(session)
    _run_bench(session)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite: CPU only, tiny models; tests marked ``gpu`` skip without CUDA. The ``llamacpp`` extra is
    installed so the llama.cpp engine's tests run (pip builds llama-cpp-python once, then reuses its cached wheel)."""
    _install(session, "test", "llamacpp")
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "bench", "tests", "noxfile.py", "benchmarks")


@nox.session(python=PYTHON)
def overhead(session: nox.Session) -> None:
    """Benchmark: the E2E latency ``bench run`` reports (the worker's whole code path, telemetry included)
    against the same generate call timed bare, interleaved; exit status 1 beyond 3%."""
    _install(session)
    session.run("python", "benchmarks/timing_overhead.py", *session.posargs)


@nox.session(python=PYTHON)
def engines(session: nox.Session) -> None:
    """Benchmark: eager against compiled decode on the same checkpoint in one run: tokens/s and TPOT ratios,
    each engine's fraction of the bandwidth roofline and the compile time (``-- --out DIR`` keeps the records)."""
    _install(session)
    session.run("python", "benchmarks/engines.py", *session.posargs)


@nox.session(python=PYTHON)
def compare(session: nox.Session) -> None:
    """Regression gate: ``nox -s compare -- CURRENT [BASELINE] [--markdown FILE --json FILE]``; exit 1 on a regression,
    3 when inconclusive (too few repetitions to test a change; ``--allow-inconclusive`` accepts it).

    Without BASELINE the run is compared with the stored baseline of each of its GPUs (profiles/baselines/).
    """
    if not session.posargs:
        session.error("name the run folder to judge: nox -s compare -- reports/<run> [BASELINE_RUN]")
    _install(session)
    session.run("bench", "compare", *session.posargs)


@nox.session(python=PYTHON)
def predict_accuracy(session: nox.Session) -> None:
    """Benchmark: predicted vs measured peak memory per case and the worst case (CPU host memory by default).

    ``nox -s predict_accuracy -- --quick`` for a few cases; ``-- --results reports/<gpu-run>`` compares a GPU
    run's NVML peaks with the predictions for its card. Exit status 1 when the worst case is beyond 5%.
    ``-- --published`` predicts every published A100 reading (benchmarks/published) and prints the error per
    reading kind (allocator peaks, composite, device used at the end).
    """
    _install(session)
    session.run("python", "benchmarks/predictor_accuracy.py", *session.posargs)


@nox.session(python=PYTHON)
def cli_latency(session: nox.Session) -> None:
    """Benchmark: each command's wall time beside the bare interpreter's start-up (``-- --smoke-run DIR``)."""
    _install(session)
    session.run("python", "benchmarks/cli_latency.py", *session.posargs)
