"""Sessions: ``nox -s bench`` (the main job), ``tests``, ``lint``, and the benchmarks of the harness itself.

Pass arguments after ``--``: ``nox -s bench -- --suite gpu --out reports/mine``.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["bench"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = None  # the interpreter nox itself runs on


def _install(session: nox.Session, *extras: str) -> None:
    spec = f".[{','.join(extras)}]" if extras else "."
    session.install(spec)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The main job: run a suite (gpu on an NVIDIA machine, smoke on a CPU) and write its report."""
    _install(session)
    session.run("bench", "run", *session.posargs)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite: CPU only, tiny models; tests marked ``gpu`` skip without CUDA."""
    _install(session, "test")
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "bench", "tests", "noxfile.py", "benchmarks")


@nox.session(python=PYTHON)
def overhead(session: nox.Session) -> None:
    """Benchmark: the harness's reported E2E latency against the same generate call timed bare."""
    _install(session)
    session.run("python", "benchmarks/timing_overhead.py", *session.posargs)


@nox.session(python=PYTHON)
def compare(session: nox.Session) -> None:
    """Regression gate: ``nox -s compare -- CURRENT [BASELINE] [--markdown FILE --json FILE]``; exit 1 on a regression.

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
    """
    _install(session)
    session.run("python", "benchmarks/predictor_accuracy.py", *session.posargs)
