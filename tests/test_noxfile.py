"""The noxfile's ``bench`` sessions: the system-site option that keeps the user's torch, and exit status 2 passed on."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

nox = pytest.importorskip("nox")

NOXFILE = Path(__file__).resolve().parents[1] / "noxfile.py"


@pytest.fixture(scope="module")
def noxfile():
    spec = importlib.util.spec_from_file_location("bench_noxfile", NOXFILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeSession:
    """Records what a session body asks nox to do; ``run`` answers with ``output`` or raises ``fail``."""

    def __init__(self, output: str = "", fail: Exception | None = None, posargs: tuple[str, ...] = ()) -> None:
        self.output, self.fail, self.posargs = output, fail, list(posargs)
        self.runs: list[tuple[str, ...]] = []
        self.installs: list[tuple[str, ...]] = []
        self.logs: list[str] = []

    def run(self, *args: str, **kwargs: object) -> str:
        self.runs.append(args)
        if self.fail is not None and args[:2] == ("bench", "run"):
            raise self.fail
        return self.output

    def install(self, *args: str) -> None:
        self.installs.append(args)

    def log(self, text: str) -> None:
        self.logs.append(text)


def test_bench_system_builds_its_venv_with_system_site_packages(noxfile):
    assert list(noxfile.bench_system.venv_params) == ["--system-site-packages"]
    assert not noxfile.bench.venv_params  # the default session stays isolated


def test_outer_site_packages_only_inside_a_virtualenv(noxfile):
    assert noxfile.outer_site_packages("/usr", "/usr", ["/usr/lib/python3/site-packages"]) == []
    inner = ["/home/u/venv/lib/python3.11/site-packages"]
    assert noxfile.outer_site_packages("/home/u/venv", "/usr", inner) == inner


def test_bench_system_links_the_outer_virtualenv_before_installing(noxfile, tmp_path, monkeypatch):
    outer = ["/home/u/venv/lib/python3.11/site-packages"]
    monkeypatch.setattr(noxfile, "outer_site_packages", lambda: outer)
    session = FakeSession(output=f"{tmp_path}\n")
    noxfile.bench_system.func(session)
    assert (tmp_path / noxfile.OUTER_SITE_PTH).read_text() == outer[0] + "\n"
    assert session.installs == [(".",)] and session.runs[-1] == ("bench", "run")


def test_bench_system_outside_a_virtualenv_writes_nothing(noxfile, tmp_path, monkeypatch):
    monkeypatch.setattr(noxfile, "outer_site_packages", lambda: [])
    session = FakeSession(output=f"{tmp_path}\n")
    noxfile.bench_system.func(session)
    assert list(tmp_path.iterdir()) == [] and session.runs == [("bench", "run")]


def test_bad_input_from_bench_run_leaves_nox_with_exit_2(noxfile):
    session = FakeSession(fail=nox.command.CommandFailed("Returned code 2", return_code=2))
    with pytest.raises(SystemExit) as stopped:
        noxfile.bench.func(session)
    assert stopped.value.code == 2


def test_other_failures_stay_nox_failures(noxfile):
    failure = nox.command.CommandFailed("Returned code 1", return_code=1)
    with pytest.raises(nox.command.CommandFailed):
        noxfile.bench.func(FakeSession(fail=failure))
    assert noxfile.bench_exit_status(failure) is None
