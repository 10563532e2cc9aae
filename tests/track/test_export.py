import json
import subprocess
import sys

import pytest
from synthetic_records import H200, L4, MiB, encode_record, envelope, generate_record, suite_records, write_run

from bench import cli
from bench.errors import BadInputError
from bench.track.export import (
    case_test_name,
    export_records,
    save_to_pytest_benchmark_storage,
    to_github_benchmark,
    to_pytest_benchmark,
)


@pytest.fixture
def bench_main(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("bench.commands.compare_cmd",))
    return cli.main


def test_pytest_benchmark_document_holds_timings_and_extra_info():
    gen = generate_record(reps=5, seed=3)
    enc = encode_record(reps=4, seed=4)
    failed = generate_record(status="oom", context=4032)
    doc = to_pytest_benchmark([gen, enc, failed], [envelope("run-base")])
    assert [b["name"] for b in doc["benchmarks"]] == [case_test_name(gen.spec), case_test_name(enc.spec)]
    g, e = doc["benchmarks"]
    assert g["stats"]["data"] == list(gen.samples.e2e_s)  # one call = E2E seconds
    assert g["stats"]["rounds"] == 5 and g["stats"]["iterations"] == 1
    assert g["stats"]["median"] == pytest.approx(sorted(gen.samples.e2e_s)[2])
    assert g["stats"]["min"] == min(gen.samples.e2e_s)
    assert g["extra_info"]["decode_tokens_per_s"] == pytest.approx(gen.metrics["decode_tokens_per_s"])
    assert g["extra_info"]["nvml_process_peak_bytes"] == gen.memory.nvml_process_peak_bytes
    assert g["extra_info"]["device_name"] == H200
    assert e["stats"]["data"] == list(enc.samples.latency_s)
    middle = sorted(enc.samples.latency_s)[1:3]
    assert e["extra_info"]["tokens_per_s"] == pytest.approx(8 * 128 / (sum(middle) / 2))
    assert doc["machine_info"]["device_name"] == H200 and doc["machine_info"]["torch"] == "2.5.1"
    assert doc["commit_info"]["id"] == "0123456789abcdef"
    json.dumps(doc, allow_nan=False)


def test_pytest_benchmark_export_is_one_device_at_a_time():
    mixed = [generate_record(), generate_record(device_name=L4)]
    with pytest.raises(BadInputError, match="--device-name"):
        export_records(mixed, "pytest-benchmark")
    doc = export_records(mixed, "pytest-benchmark", device_name=L4)
    assert [b["extra_info"]["device_name"] for b in doc["benchmarks"]] == [L4]
    with pytest.raises(BadInputError, match="unknown export format"):
        export_records(mixed, "csv")


def test_pytest_benchmark_compare_reads_the_exported_runs(tmp_path):
    storage = tmp_path / "storage"
    base = to_pytest_benchmark(suite_records(seed=1), [envelope("run-base")])
    cur = to_pytest_benchmark(suite_records(seed=2, slowdown=1.2, run_id="run-cur"), [envelope("run-cur")])
    first = save_to_pytest_benchmark_storage(base, storage, "nvidia-h200", "run-base")
    second = save_to_pytest_benchmark_storage(cur, storage, "nvidia-h200", "run-cur")
    assert (first.name, second.name) == ("0001_run-base.json", "0002_run-cur.json")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_benchmark", "--storage", str(storage), "compare", "--columns", "min,median,max"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    key = suite_records(seed=1)[0].spec.key
    assert f"test_case[{key}] (0001_" in out  # pytest-benchmark shortens the file name
    assert f"test_case[{key}] (0002_" in out
    assert "benchmark 'phi-3-mini fp16 generate': 6 tests" in out
    assert "benchmark 'bert-base int8 encode': 2 tests" in out
    listing = subprocess.run([sys.executable, "-m", "pytest_benchmark", "--storage", str(storage), "list"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert listing.stdout.split() == [str(first), str(second)]


def test_github_action_benchmark_documents():
    gen = generate_record(reps=5, seed=3, context=1024)
    enc = encode_record(reps=4, seed=4)
    bigger = to_github_benchmark([gen, enc], bigger=True)
    assert [(e["unit"], e["name"].rsplit("] ", 1)[1]) for e in bigger] == [
        ("tokens/s", "decode tokens/s"), ("tokens/s", "prefill tokens/s"), ("tokens/s", "encode tokens/s")]
    assert bigger[0]["name"] == "phi-3-mini fp16 generate b1 L1024 n64 [NVIDIA H200] decode tokens/s"
    assert bigger[0]["value"] == pytest.approx(gen.metrics["decode_tokens_per_s"], abs=1e-3)
    smaller = to_github_benchmark([gen, enc], bigger=False)
    by_name = {e["name"].rsplit("] ", 1)[1] + " " + e["name"].split()[0]: e for e in smaller}
    assert by_name["E2E latency phi-3-mini"]["unit"] == "ms"
    assert by_name["E2E latency phi-3-mini"]["value"] == pytest.approx(gen.metrics["e2e_s"] * 1e3, abs=1e-3)
    assert by_name["peak memory phi-3-mini"] == {
        "name": "phi-3-mini fp16 generate b1 L1024 n64 [NVIDIA H200] peak memory", "unit": "MiB",
        "value": round(gen.memory.nvml_process_peak_bytes / MiB, 1),
        "extra": "nvml_process_peak_bytes; " + by_name["peak memory phi-3-mini"]["extra"].split("; ", 1)[1],
    }
    assert by_name["encode latency bert-base"]["unit"] == "ms"
    for entry in bigger + smaller:  # the fields github-action-benchmark's custom tools require
        assert isinstance(entry["name"], str) and isinstance(entry["unit"], str)
        assert isinstance(entry["value"], (int, float))
    assert to_github_benchmark([generate_record(status="oom")], bigger=True) == []


def test_cli_export_formats(tmp_path, bench_main):
    run = write_run(tmp_path / "run", suite_records(seed=1), envelope("run-base"))
    for fmt in ("pytest-benchmark", "github-bigger", "github-smaller"):
        out = tmp_path / f"{fmt}.json"
        assert bench_main(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
        data = json.loads(out.read_text())
        assert len(data["benchmarks"] if fmt == "pytest-benchmark" else data) > 0
    assert bench_main(["export", str(run), "--format", "pytest-benchmark", "--storage", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "nvidia-h200" / "0001_run-base.json").is_file()
    assert bench_main(["export", str(run), "--format", "github-bigger", "--storage", str(tmp_path / "s")]) == 2
    assert bench_main(["export", str(tmp_path / "none"), "--format", "github-bigger", "--out", "x.json"]) == 2


FAKE_WORKER = '''
import bench.measure.case_runner


class FakePrepared:
    """Stands in for the worker's prepared case: fixed numbers, no model."""

    def __init__(self, spec, device):
        self.spec, self.device, self.calls, self.closed = spec, device, 0, False

    def run_once(self):
        self.calls += 1
        return 0.002

    def extra_info(self):
        return {"decode_tokens_per_s": 500.0, "host_peak_rss_bytes": 123456789, "device": self.device}

    def close(self):
        self.closed = True


bench.measure.case_runner.prepare_case = FakePrepared
'''

TINY_SUITE = '''
name = "tiny"
description = "two tiny cases"
device = "cpu"

[policy]
warmup_runs = 1
min_repetitions = 4
max_repetitions = 4

[[group]]
models = ["phi-3-tiny"]
precisions = ["fp32"]
contexts = [16]
new_tokens = [4]

[[group]]
models = ["bert-tiny"]
precisions = ["fp32"]
contexts = [16]
'''


def test_pytest_suite_runs_under_pytest_benchmark_and_compares_with_an_export(tmp_path):
    from pathlib import Path

    from bench.config.suite import load_suite

    (tmp_path / "fake_worker_plugin.py").write_text(FAKE_WORKER)
    suite_file = tmp_path / "tiny.toml"
    suite_file.write_text(TINY_SUITE)
    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "pytest-run.json"
    env = {**__import__("os").environ, "BENCH_PYTEST_SUITE": str(suite_file), "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "fake_worker_plugin", "-q", "tests/benchmarks/test_suite_benchmark.py",
         f"--benchmark-json={out}"],
        capture_output=True, text=True, cwd=repo, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    cases = load_suite(str(suite_file)).cases
    assert sorted(b["name"] for b in doc["benchmarks"]) == sorted(case_test_name(c) for c in cases)
    for bench_json in doc["benchmarks"]:
        assert bench_json["stats"]["rounds"] == 4  # the suite's repetitions, after its one warm-up
        assert bench_json["extra_info"]["decode_tokens_per_s"] == 500.0
        assert bench_json["extra_info"]["harness_samples_s"] == [0.002] * 4
    # an export of records of the same cases reads side by side with the pytest run
    storage = tmp_path / "storage"
    (storage / "cpu").mkdir(parents=True)
    (storage / "cpu" / "0001_pytest.json").write_text(out.read_text())
    records = [generate_record(model="phi-3-tiny", precision="fp32", context=16, new_tokens=4, reps=4)]
    records[0] = records[0].replace(spec=next(c for c in cases if c.scenario == "generate"))
    save_to_pytest_benchmark_storage(to_pytest_benchmark(records), storage, "cpu", "export")
    proc = subprocess.run([sys.executable, "-m", "pytest_benchmark", "--storage", str(storage), "compare"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    name = case_test_name(records[0].spec)
    assert f"{name} (0001_" in proc.stdout and f"{name} (0002_" in proc.stdout
