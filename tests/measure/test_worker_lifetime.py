"""Workers die with their runner: a SIGKILL of `bench run` itself (not its process group) leaves no worker
holding the GPU, and no forkserver either."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals and /proc")


def _gone(proc: psutil.Process) -> bool:
    """Exited (a zombie waiting for its parent to reap it counts as exited)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(procs, seconds: float) -> list[psutil.Process]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [p for p in procs if not _gone(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return [p for p in procs if not _gone(p)]


WATCHED_WORKER = """
import sys, time
from bench.measure.worker_process import die_with_runner
die_with_runner(int(sys.argv[1]), period_s=0.1)
print("watching", flush=True)
time.sleep(60)
"""


def test_a_worker_watching_a_killed_runner_exits():
    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    worker = subprocess.Popen(
        [sys.executable, "-c", WATCHED_WORKER, str(runner.pid)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout.readline().strip() == "watching"
        os.kill(runner.pid, signal.SIGKILL)  # not reaped yet: the runner is a zombie, which must count as dead
        assert worker.wait(timeout=5) == -signal.SIGKILL
    finally:
        for p in (runner, worker):
            p.kill()
            p.wait()
        worker.stdout.close()


def test_a_worker_of_a_runner_already_gone_exits_at_once():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    worker = subprocess.run([sys.executable, "-c", WATCHED_WORKER, str(dead.pid)], capture_output=True, timeout=30)
    assert worker.returncode == -signal.SIGKILL and b"watching" not in worker.stdout


@pytest.mark.slow
def test_sigkill_of_bench_run_leaves_no_worker_or_forkserver(tmp_path):
    suite = tmp_path / "long.toml"
    suite.write_text(
        'name = "long"\ndevice = "cpu"\n[policy]\nwarmup_runs = 0\nmin_repetitions = 100000\n'
        "max_repetitions = 100000\ntimeout_s = 600\n"
        '[[group]]\nmodels = ["phi-3-tiny"]\nprecisions = ["fp32"]\ncontexts = [16]\nnew_tokens = [4]\n'
    )
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "run",
        "--suite",
        str(suite),
        "--out",
        str(tmp_path / "run"),
        "--quiet",
        "--no-report",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # same process group as us
    try:
        runner = psutil.Process(proc.pid)
        deadline = time.monotonic() + 120
        workers: list[psutil.Process] = []
        forkservers: list[psutil.Process] = []
        while time.monotonic() < deadline and not workers:
            forkservers = [c for c in runner.children() if "forkserver" in " ".join(c.cmdline())]
            workers = [w for f in forkservers for w in f.children()]
            time.sleep(0.1)
        assert workers, "no worker process appeared"
        time.sleep(1.0)  # let it get into the case
        os.kill(proc.pid, signal.SIGKILL)  # the runner only, not its process group
        left = _wait_gone([*workers, *forkservers], 10)
        assert left == [], f"still running after the runner was killed: {[p.pid for p in left]}"
    finally:
        proc.kill()
        proc.wait()
        for p in psutil.Process().children(recursive=True):
            p.kill()


def test_a_worker_takes_the_runners_settings_not_the_forkservers(monkeypatch):
    """The forkserver keeps the environment it started with; a worker adopts its runner's settings instead:
    those the runner has are set, those it lacks are dropped, anything else is left alone."""
    from bench.measure.worker_process import adopt_environment, runner_environment

    monkeypatch.setenv("HF_HUB_CACHE", "/runner/hub")
    monkeypatch.setenv("PATH_LIKE_UNRELATED", "kept")
    sent = runner_environment()
    assert sent["HF_HUB_CACHE"] == "/runner/hub" and "PATH_LIKE_UNRELATED" not in sent

    monkeypatch.setenv("HF_HUB_CACHE", "/forkserver/hub")  # as the worker inherits it
    monkeypatch.setenv("HF_STALE_SETTING", "x")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    adopt_environment({**sent, "HF_HUB_OFFLINE": "1"})
    assert os.environ["HF_HUB_CACHE"] == "/runner/hub" and os.environ["HF_HUB_OFFLINE"] == "1"
    assert "HF_STALE_SETTING" not in os.environ and os.environ["PATH_LIKE_UNRELATED"] == "kept"
