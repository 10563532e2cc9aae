import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bench.config.spec import CaseSpec, TimingPolicy
from bench.measure.run_options import RunOptions
from bench.measure.runner import run_cases
from bench.results.run_folder import RunFolder

pytestmark = pytest.mark.slow

FAST = TimingPolicy(warmup_runs=0, min_repetitions=1, max_repetitions=1, timeout_s=120)


def phi(context, new=4, precision="fp32"):
    return CaseSpec("phi-3-tiny", precision, "generate", 1, context, new)


def bert(context, batch=1):
    return CaseSpec("bert-tiny", "fp32", "encode", batch, context)


def test_one_worker_per_group_records_appended(tmp_path):
    cases = [phi(8), bert(8), phi(16)]
    seen = []
    records = run_cases(cases, FAST, RunOptions(tmp_path, progress=False, on_record=seen.append))
    assert [r.status for r in records] == ["ok"] * 3
    # grouped: both phi cases ran together, in one worker; bert in another
    assert [r.spec.model for r in records] == ["phi-3-tiny", "phi-3-tiny", "bert-tiny"]
    pids = [r.model_info["pid"] for r in records]
    assert pids[0] == pids[1] != pids[2]
    assert len(RunFolder(tmp_path).load_records()) == 3 and seen == records
    r = records[0]
    assert len(r.samples.itl_s[0]) == 3 and r.metrics["decode_tokens_per_s"] > 0
    assert r.memory.kv_cache_bytes > 0 and r.memory.weights_bytes > 0 and r.memory.host_peak_rss_bytes > 0
    assert "random_weights" in r.flags and r.telemetry["samples"] >= 2
    assert records[2].metrics["sequences_per_s"] > 0


def test_isolate_case_uses_fresh_workers(tmp_path):
    records = run_cases([phi(8), phi(12)], FAST, RunOptions(tmp_path, isolate="case", progress=False))
    assert records[0].model_info["pid"] != records[1].model_info["pid"]


def test_hung_case_times_out_and_the_run_goes_on(tmp_path):
    policy = TimingPolicy(warmup_runs=0, min_repetitions=50, max_repetitions=50, timeout_s=1.0)
    cases = [phi(8, new=2), phi(1024, new=512), bert(8)]
    records = run_cases(cases, policy, RunOptions(tmp_path, progress=False))
    assert [r.status for r in records] == ["ok", "timeout", "ok"]
    assert "did not finish within" in records[1].error


# What a worker adds to its address space to load bert-tiny and run one small case, measured in a fresh
# interpreter with the worker's imports: it depends on the torch build (a CUDA build maps far more) and
# on the machine (thread stacks and malloc arenas per core), so the test's headroom is derived from it.
_ADDRESS_SPACE_PROBE = """
import json
from bench.measure.worker_process import PRELOAD
import importlib
for name in PRELOAD:
    importlib.import_module(name)
from bench.config.spec import CaseSpec, TimingPolicy
from bench.measure.case_runner import CaseRunner

def vm(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key + ":"))

start = vm("VmSize")
record = CaseRunner().run(CaseSpec("bert-tiny", "fp32", "encode", 1, 8), TimingPolicy(warmup_runs=0,
                          min_repetitions=1, max_repetitions=1))
print(json.dumps({"status": record.status, "growth_bytes": vm("VmPeak") - start}))
"""


def _small_case_address_space_bytes() -> int:
    out = subprocess.run([sys.executable, "-c", _ADDRESS_SPACE_PROBE], capture_output=True, text=True, check=True)
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["status"] == "ok", probe
    return probe["growth_bytes"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and sets RLIMIT_AS")
def test_host_oom_is_recorded_and_the_run_goes_on(tmp_path):
    # headroom: twice what the small case needs on this machine and torch build, plus 256 MiB
    headroom = 2 * _small_case_address_space_bytes() + 256 * 2**20
    # the big case's embedding output alone (batch x 512 tokens x hidden 128 x 4 bytes) is 4x the headroom
    batch = -(-4 * headroom // (512 * 128 * 4))
    big = CaseSpec("bert-tiny", "fp32", "encode", batch, 512)
    options = RunOptions(tmp_path, progress=False, host_memory_headroom_bytes=headroom)
    records = run_cases([big, bert(8)], FAST, options)
    assert records[0].status == "oom", records[0].error
    assert records[1].status == "ok", records[1].error


def test_crashed_worker_is_recorded_and_replaced(tmp_path):
    def kill_worker(record):
        if record.spec.context_tokens == 8:
            os.kill(record.model_info["pid"], signal.SIGKILL)
            time.sleep(0.2)

    records = run_cases([phi(8), phi(12), phi(16)], FAST, RunOptions(tmp_path, progress=False, on_record=kill_worker))
    assert [r.status for r in records] == ["ok", "error", "ok"]
    assert "SIGKILL" in records[1].error


def test_killed_run_keeps_records_and_resume_completes(tmp_path):
    out = tmp_path / "run"
    suite = tmp_path / "s.toml"
    suite.write_text(
        'name = "k"\n[policy]\nwarmup_runs = 0\nmin_repetitions = 1\nmax_repetitions = 1\n'
        '[[group]]\nmodels = ["bert-tiny"]\nprecisions = ["fp32", "fp16"]\ncontexts = [8, 16, 32, 64]\n'
    )
    cmd = [sys.executable, "-m", "bench", "run", "--suite", str(suite), "--out", str(out), "--quiet", "--no-report"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = RunFolder(out).results_file
    deadline = time.time() + 120
    while time.time() < deadline:
        if results.is_file() and len(results.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = [json.loads(x)["key"] for x in results.read_text().splitlines() if x.strip()]
    assert 2 <= len(kept) < 8
    subprocess.run(cmd + ["--resume"], check=True, capture_output=True)
    keys = [json.loads(x)["key"] for x in results.read_text().splitlines() if x.strip()]
    assert len(keys) == 8 == len(set(keys))
    assert keys[: len(kept)] == kept


def test_cli_runs_a_local_checkpoint(tmp_path):
    from bench.cli import main
    from bench.config.models import resolve_source
    from bench.measure.loader import build_random

    ckpt = tmp_path / "my-phi"
    build_random(resolve_source("phi-3-tiny", "random"), "float32", "cpu").save_pretrained(str(ckpt))
    out = tmp_path / "run"
    argv = [
        "run",
        "--model-path",
        str(ckpt),
        "--device",
        "cpu",
        "--context",
        "8",
        "--new-tokens",
        "3",
        "--precision",
        "fp32",
        "--repetitions",
        "1",
        "--out",
        str(out),
        "--quiet",
        "--no-report",
    ]
    assert main(argv) == 0
    (record,) = RunFolder(out).load_records()
    assert record.status == "ok", record.error
    assert record.spec.model == "my-phi" and record.spec.weights == f"checkpoint:{ckpt}"
    assert "random_weights" not in record.flags and record.model_info["random_weights"] is False
    assert RunFolder(out).has_environment()
