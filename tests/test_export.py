import json
import subprocess
import sys

import pytest
from synthetic_records import H200, L4, MiB, encode_record, envelope, generate_record, suite_records, write_run

from bench import cli
from bench.errors import BadInputError
from bench.export import (
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
