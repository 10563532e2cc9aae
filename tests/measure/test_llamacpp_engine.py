"""The llama.cpp engine: its case fields and refusals (always), and GGUF files and measured records where
llama-cpp-python is installed (``pip install 'llm-bench[llamacpp]'``; ``nox -s tests`` installs it)."""

from __future__ import annotations

import hashlib
import importlib.util
import json

import pytest

from bench.cli import main
from bench.config.spec import CaseSpec
from bench.config.suite import expand, parse_suite
from bench.errors import BadInputError
from bench.measure import llamacpp_binding
from bench.results.metrics import engine_timing_metrics

HAS_BINDING = all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", "gguf"))
needs_binding = pytest.mark.skipif(
    not HAS_BINDING, reason="llama-cpp-python or gguf is not installed: pip install 'llm-bench[llamacpp]'"
)


def _suite(**group):
    base = {"models": ["phi-3-tiny"], "precisions": ["q4_0"], "contexts": [16], "new_tokens": [4]}
    return {"name": "t", "device": "cpu", "group": [dict(base, **group)]}


def test_engine_and_precision_must_match():
    cases = expand(parse_suite(_suite(engines=["llama.cpp"], precisions=["f16", "q8_0", "q4_0"])))
    assert [(c.engine, c.precision) for c in cases] == [("llama.cpp", p) for p in ("f16", "q8_0", "q4_0")]
    with pytest.raises(BadInputError, match="engine llama.cpp runs GGUF files: precision 'fp16' is not one"):
        expand(parse_suite(_suite(engines=["llama.cpp"], precisions=["fp16"])))
    with pytest.raises(BadInputError, match="precision 'q4_0' is a GGUF file type: run it with --engine llama.cpp"):
        expand(parse_suite(_suite()))


def test_kv_cache_type_is_a_case_field_out_of_old_keys_and_llamacpp_only():
    spec = CaseSpec("phi-3-tiny", "q4_0", "generate", 1, 128, 32, engine="llama.cpp")
    assert spec.kv_cache_type == "auto"
    old = {k: v for k, v in spec.to_dict().items() if k not in ("suite", "cache", "kv_cache_type", "threads")}
    assert spec.key.endswith(hashlib.sha1(json.dumps(old, sort_keys=True).encode()).hexdigest()[:12])
    q8 = spec.with_(kv_cache_type="q8_0")
    assert q8.key != spec.key and q8.label.endswith("[llama.cpp] [kv q8_0]")
    cases = expand(parse_suite(_suite(engines=["llama.cpp"], kv_cache_type="q4_0")))
    assert cases[0].kv_cache_type == "q4_0"
    with pytest.raises(BadInputError, match="KV cache type 'q8_0' is set by llama.cpp only"):
        expand(parse_suite(_suite(precisions=["fp32"], kv_cache_type="q8_0")))
    with pytest.raises(BadInputError, match="KV cache type 'int2' is not one of auto, f16, q8_0, q4_0"):
        parse_suite(_suite(engines=["llama.cpp"], kv_cache_type="int2"))


def test_threads_is_a_case_field_out_of_old_keys_and_llamacpp_only(capsys, tmp_path):
    spec = CaseSpec("phi-3-tiny", "q4_0", "generate", 1, 128, 32, engine="llama.cpp")
    assert spec.threads == 0  # the engine's default
    old = {k: v for k, v in spec.to_dict().items() if k not in ("suite", "cache", "kv_cache_type", "threads")}
    assert spec.key.endswith(hashlib.sha1(json.dumps(old, sort_keys=True).encode()).hexdigest()[:12])
    two = spec.with_(threads=2)
    assert two.key != spec.key and two.label.endswith("[llama.cpp] [threads 2]")
    assert CaseSpec.from_dict(two.to_dict()) == two
    assert expand(parse_suite(_suite(engines=["llama.cpp"], threads=1)))[0].threads == 1
    with pytest.raises(BadInputError, match="--threads 2 is set for llama.cpp only; engine 'eager' uses torch's"):
        expand(parse_suite(_suite(precisions=["fp32"], threads=2)))
    with pytest.raises(BadInputError, match="key 'threads': threads must be a whole number of at least 0, got -1"):
        parse_suite(_suite(engines=["llama.cpp"], threads=-1))
    argv = ["run", "--model", "phi-3-tiny", "--device", "cpu", "--no-report", "--quiet"]
    for extra, message in (
        (["--threads", "2"], "--threads 2 is set for llama.cpp only; engine 'eager' uses torch's threads"),
        (["--engine", "llama.cpp", "--threads", "0"], "--threads: threads must be a whole number of at least 1"),
    ):
        out = tmp_path / extra[-1]
        assert main([*argv, *extra, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not (out / "results.jsonl").exists()


def test_buffer_sizes_are_read_from_llamacpps_log():
    log = [
        "load_tensors:   CPU_Mapped model buffer size =    11.39 MiB",
        "load_tensors:   CPU_REPACK model buffer size =     0.70 MiB",
        "load_tensors:        CUDA0 model buffer size =  2048.00 MiB",
        "llama_context:        CPU  output buffer size =     0.12 MiB",
        "llama_kv_cache:        CPU KV buffer size =     0.50 MiB",
        "sched_reserve:        CPU compute buffer size =    20.28 MiB",
        "print_info: file size   = 11.53 MiB (5.46 BPW)",
    ]
    sizes = llamacpp_binding.buffer_sizes(log)
    assert sizes == {
        "CPU_Mapped model": round(11.39 * 2**20),
        "CPU_REPACK model": round(0.70 * 2**20),
        "CUDA0 model": 2048 * 2**20,
        "CPU output": round(0.12 * 2**20),
        "CPU KV": 2**19,
        "CPU compute": round(20.28 * 2**20),
    }
    assert llamacpp_binding.buffers_of_kind(sizes, "model") == round(11.39 * 2**20) + round(0.70 * 2**20) + 2**31
    assert llamacpp_binding.buffers_of_kind(sizes, "RS") is None


def test_a_build_without_gpu_support_never_runs_a_cuda_case():
    llamacpp_binding.require_gpu_offload("cpu", supported=False)
    with pytest.raises(BadInputError, match=r"built without GPU support.*-DGGML_CUDA=on.*or pass --device cpu"):
        llamacpp_binding.require_gpu_offload("cuda:0", supported=False)
    llamacpp_binding.require_gpu_offload("cuda:0", supported=True)


@needs_binding
def test_a_cpu_only_build_on_cuda_exits_2_on_the_command_line_and_skips_a_suites_case(capsys, tmp_path, monkeypatch):
    from bench.commands import run_cmd
    from bench.config.spec import TimingPolicy
    from bench.measure.case_runner import CaseRunner

    monkeypatch.setattr(llamacpp_binding, "gpu_offload_supported", lambda: False)
    monkeypatch.setattr(run_cmd, "gpu_detection", lambda args: None)  # as on a machine whose GPU torch can use
    monkeypatch.setattr(run_cmd, "_check_device", lambda device, detection=None: None)
    out = tmp_path / "run"
    code = main(["run", "--model", "phi-3-tiny", "--engine", "llama.cpp", "--device", "cuda", "--out", str(out)])
    assert code == 2 and not (out / "results.jsonl").exists()
    assert (
        'built without GPU support, so llama.cpp would run on the CPU; reinstall it with CMAKE_ARGS="-DGGML_CUDA=on"'
        in (capsys.readouterr().err)
    )
    spec = CaseSpec("phi-3-tiny", "q4_0", "generate", 1, 16, 4, device="cuda:0", engine="llama.cpp", suite="claims")
    record = CaseRunner().run(spec, TimingPolicy(telemetry_repetitions=0))
    assert record.status == "skipped" and "-DGGML_CUDA=on" in record.error, (record.status, record.device, record.error)


def test_bench_run_without_the_binding_exits_2_with_the_install_command(capsys, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        llamacpp_binding.importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a)
    )
    out = tmp_path / "run"
    code = main(["run", "--model", "phi-3-tiny", "--engine", "llama.cpp", "--device", "cpu", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "engine llama.cpp needs llama_cpp, which is not installed: run pip install 'llm-bench[llamacpp]'" in err
    assert not (out / "results.jsonl").exists()


def test_a_suites_llamacpp_case_without_the_binding_is_skipped_with_the_install_command(monkeypatch):
    from bench.config.spec import TimingPolicy
    from bench.measure.case_runner import CaseRunner

    real = importlib.util.find_spec
    monkeypatch.setattr(
        llamacpp_binding.importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a)
    )
    spec = CaseSpec("phi-3-tiny", "q4_0", "generate", 1, 16, 4, engine="llama.cpp", suite="smoke")
    record = CaseRunner().run(spec, TimingPolicy(telemetry_repetitions=0))
    assert record.status == "skipped"
    assert record.error == f"engine llama.cpp needs gguf, which is not installed: run {llamacpp_binding.INSTALL}"


def test_engine_timing_metrics_compare_per_repetition():
    # harness: TTFT 0.11 s and 0.22 s, E2E 0.41 s and 0.52 s (decode 0.30 s both); engine: prompt 0.10 / 0.20 s,
    # eval 0.25 / 0.30 s over N - 1 = 3 tokens
    got = engine_timing_metrics([0.11, 0.22], [0.41, 0.52], [0.10, 0.20], [0.25, 0.30], 4)
    assert got["engine_prompt_eval_s"] == pytest.approx(0.15)
    assert got["ttft_over_engine_prompt"] == pytest.approx(1.1)  # 1.1 both times
    assert got["engine_eval_s"] == pytest.approx(0.275)
    assert got["engine_decode_tokens_per_s"] == pytest.approx((12 + 10) / 2)  # 3/0.25 and 3/0.30
    assert got["decode_over_engine_eval"] == pytest.approx((1.2 + 1.0) / 2)
    assert engine_timing_metrics([], [], [], [], 4) == {}


# ------------------------------------------------------------------------------------------ with the binding

# phi-3-tiny (bench.config.models): hidden 256, 2 layers, 4 heads of 64, feed-forward 512, vocab 32064
H, LAYERS, FF, VOCAB = 256, 2, 512, 32064
MATRICES = {  # weights of each 2-D tensor, counted from the architecture (Phi-3 fuses qkv and gate_up)
    "token_embd": VOCAB * H,
    "output": VOCAB * H,
    "attn_qkv": LAYERS * 3 * H * H,
    "attn_output": LAYERS * H * H,
    "ffn_up": LAYERS * 2 * FF * H,
    "ffn_down": LAYERS * FF * H,
}
NORM_BYTES = (2 * LAYERS + 1) * H * 4  # attn_norm, ffn_norm per layer and output_norm, F32


@needs_binding
@pytest.mark.slow
def test_random_gguf_files_have_the_bytes_of_ggmls_block_layouts():
    from bench.config.models import resolve_source
    from bench.measure.gguf_file import random_gguf, read_header
    from bench.measure.loader import random_checkpoint

    ckpt = random_checkpoint(resolve_source("phi-3-tiny", "random"))
    weights = sum(MATRICES.values())
    f16 = read_header(random_gguf(ckpt, "phi-3-tiny", "F16"))
    assert f16.architecture == "phi3" and f16.block_count == LAYERS and f16.vocab_size == VOCAB
    assert f16.tensor_bytes == weights * 2 + NORM_BYTES
    # ggml-common.h: block_q8_0 = fp16 scale + 32 int8 = 34 bytes per 32 weights
    q8 = read_header(random_gguf(ckpt, "phi-3-tiny", "Q8_0"))
    assert q8.file_type == "MOSTLY_Q8_0"
    assert q8.tensor_bytes == weights // 32 * 34 + NORM_BYTES
    # block_q4_0 = fp16 scale + 16 bytes of nibbles = 18 bytes per 32; llama-quantize keeps output.weight at Q6_K,
    # block_q6_K = 128 + 64 + 16 scale bytes + fp16 = 210 bytes per 256 weights
    q4 = read_header(random_gguf(ckpt, "phi-3-tiny", "Q4_0"))
    assert q4.bytes_by_type() == {
        "Q6_K": MATRICES["output"] // 256 * 210,
        "Q4_0": (weights - MATRICES["output"]) // 32 * 18,
        "F32": NORM_BYTES,
    }
    assert f16.tensor_bytes > q8.tensor_bytes > q4.tensor_bytes


@needs_binding
@pytest.mark.slow
def test_a_case_in_process_times_exactly_n_tokens_beside_llamacpps_own_timings():
    from bench.config.spec import TimingPolicy
    from bench.measure.case_runner import CaseRunner

    spec = CaseSpec("phi-3-tiny", "q8_0", "generate", 1, 24, 5, engine="llama.cpp", kv_cache_type="q8_0", threads=1)
    policy = TimingPolicy(warmup_runs=1, min_repetitions=2, max_repetitions=2, telemetry_repetitions=0)
    record = CaseRunner().run(spec, policy)
    assert record.status == "ok", record.error
    assert record.engine_info["n_threads"] == 1 and record.engine_info["n_threads_source"] == "--threads"
    assert len(record.samples.ttft_s) == 2 and all(len(gaps) == 4 for gaps in record.samples.itl_s)
    timings = record.engine_info["llama_timings"]
    assert timings["n_prompt_eval"] == [24, 24] and timings["n_eval"] == [4, 4]  # the whole prompt every call
    # the harness's clock encloses llama.cpp's: its TTFT and decode time cannot be shorter
    assert record.metrics["ttft_over_engine_prompt"] >= 1.0
    assert record.metrics["decode_over_engine_eval"] >= 1.0
    # KV cache: n_ctx 29 padded to 256 cells; per cell and layer K and V of 4 heads x 64 = 256 values,
    # at Q8_0 = 8 blocks of 34 bytes; llama.cpp's log prints MiB to two decimals (0.005 MiB)
    assert record.engine_info["n_ctx"] == 256
    assert record.memory.kv_cache_bytes == pytest.approx(LAYERS * 256 * 2 * (256 // 32 * 34), abs=0.005 * 2**20)
    assert record.memory.weights_bytes == sum(MATRICES.values()) // 32 * 34 + NORM_BYTES
    assert record.memory.host_peak_rss_bytes >= record.engine_info["file_rss_bytes"] > 0
    assert record.quantization["file_type"] == "MOSTLY_Q8_0"
    assert "random_weights" in record.flags
    # the predictor against this measurement: weights exact, KV to the log's resolution, compute within 2%
    from bench.predict.llamacpp import predict_llamacpp

    pred = predict_llamacpp("phi-3-tiny", "q8_0", 24, 5, kv_cache_type="q8_0")
    buffers = record.engine_info["buffers_bytes"]
    assert pred.weights_bytes == record.memory.weights_bytes
    assert pred.kv_cache_bytes == pytest.approx(buffers["CPU KV"], abs=0.005 * 2**20)
    assert pred.compute_bytes == pytest.approx(buffers["CPU compute"], rel=0.02)


@needs_binding
@pytest.mark.slow
def test_bench_run_writes_ordered_gguf_records_and_runs_a_users_file(capsys, tmp_path):
    out = tmp_path / "run"
    argv = ["run", "--model", "phi-3-tiny", "--engine", "llama.cpp", "--device", "cpu", "--context", "16"]
    argv += ["--new-tokens", "4", "--repetitions", "2", "--no-report", "--quiet", "--out", str(out)]
    code = main([*argv, "--precision", "f16", "--precision", "q8_0", "--precision", "q4_0"])
    assert code == 0, capsys.readouterr().err
    records = {r["spec"]["precision"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert all(r["status"] == "ok" for r in records.values())
    weights = [records[p]["memory"]["weights_bytes"] for p in ("f16", "q8_0", "q4_0")]
    assert weights[0] > weights[1] > weights[2]
    for r in records.values():
        assert r["metrics"]["decode_tokens_per_s"] > 0 and r["memory"]["host_peak_rss_bytes"] > 0
    # ggml-cpu's repacked copy against llama.cpp's log (two decimals of MiB): on an AVX2 build the layers' Q4_0
    # matrices (not the token embedding, a GET_ROWS, nor output.weight, kept at Q6_K), 18 bytes per 32 weights;
    # nothing of Q8_0 or F16 on x86-64. The build is native (pip), so the machine's flags are its flags.
    import llama_cpp

    from bench.config.machine import fingerprint
    from bench.predict.llamacpp import predict_llamacpp

    avx2 = "avx2" in fingerprint().isa
    assert ("AVX2 = 1" in llama_cpp.llama_print_system_info().decode()) == avx2  # the build's flags: the CPU's
    layers_q4 = sum(v for k, v in MATRICES.items() if k not in ("token_embd", "output")) // 32 * 18
    for precision, expected in (("q4_0", layers_q4 if avx2 else 0), ("q8_0", 0), ("f16", 0)):
        logged = records[precision]["engine_info"]["buffers_bytes"].get("CPU_REPACK model", 0)
        pred = predict_llamacpp("phi-3-tiny", precision, 16, 4, device="cpu")
        assert logged == pytest.approx(expected, abs=0.005 * 2**20), precision
        assert pred.repack_bytes == expected, precision
    # the q4_0 file the run wrote, passed back as a user's file: its own types, or refused under another precision
    path = records["q4_0"]["engine_info"]["gguf_file"]
    user = ["run", "--model-path", path, "--engine", "llama.cpp", "--device", "cpu", "--context", "16"]
    user += ["--new-tokens", "3", "--repetitions", "1", "--no-report", "--quiet"]
    assert main([*user, "--precision", "q8_0", "--out", str(tmp_path / "bad")]) == 2
    assert "is Q4_0, not Q8_0; pass --precision gguf" in capsys.readouterr().err
    assert main([*user, "--out", str(tmp_path / "own")]) == 0
    (own,) = map(json.loads, (tmp_path / "own" / "results.jsonl").read_text().splitlines())
    assert own["status"] == "ok" and own["spec"]["precision"] == "gguf"
    assert own["memory"]["weights_bytes"] == records["q4_0"]["memory"]["weights_bytes"]
    assert "random_weights" not in own["flags"]


@needs_binding
@pytest.mark.slow
def test_a_gpu_load_that_reports_no_gpu_buffer_fails_instead_of_running_on_the_cpu(monkeypatch):
    from bench.measure import llamacpp

    monkeypatch.setattr(llamacpp_binding, "gpu_offload_supported", lambda: True)
    calls = []

    def fake_llama(path, **params):  # a build that accepted n_gpu_layers but put every buffer on the host
        calls.append(params)
        return object()

    class FakeSampler:  # NVML's process reading after the load, as the runner's sampler gives it
        def start(self):
            pass

        def stop(self):
            return type("Tel", (), {"nvml_process_peak_bytes": 5 * 2**20, "nvml_method": "fake"})()

    spec = CaseSpec("phi-3-tiny", "q4_0", "generate", 1, 16, 4, device="cuda:1", engine="llama.cpp")
    with pytest.raises(RuntimeError, match="reported no GPU buffer after loading with every layer offloaded"):
        llamacpp.LlamaCppCase(spec, "cuda:1", llama_factory=fake_llama, make_sampler=lambda *a, **k: FakeSampler())
    assert calls[0]["n_gpu_layers"] == -1 and calls[0]["main_gpu"] == 1 and calls[0]["flash_attn"] is True


@needs_binding
@pytest.mark.slow
def test_a_cases_record_carries_its_llamacpp_load_measured_and_the_loading_section_shows_it():
    from bench.config.spec import TimingPolicy
    from bench.measure.case_runner import CaseRunner
    from bench.report.document import render_markdown
    from bench.report.load_section import loading_section

    spec = CaseSpec("phi-3-tiny", "q4_0", "generate", 1, 16, 4, engine="llama.cpp")
    policy = TimingPolicy(warmup_runs=0, min_repetitions=1, max_repetitions=1, telemetry_repetitions=0)
    record = CaseRunner().run(spec, policy)
    assert record.status == "ok", record.error
    import os

    # no --threads: the count used is recorded, every core of the CPU set
    assert record.engine_info["n_threads"] == len(os.sched_getaffinity(0)) and record.spec.threads == 0
    load = record.load
    assert load.loaded_for_key == spec.key and 0 < load.load_s < record.wall_s
    # ggml allocates outside torch: no allocator reading, and no NVML one on a CPU
    assert load.load_peak_allocated_bytes is None and load.load_reserved_after_bytes is None
    assert load.load_nvml_process_bytes is None
    # What the load makes resident, from llama.cpp's own log (MiB to two decimals): llama.cpp maps the file with
    # MAP_POPULATE (src/llama-mmap.cpp, Linux, when prefetching), so every page of the CPU_Mapped buffer is in
    # the resident set, file-backed, once Llama() returns: a fresh mapping, so "after - before" counts it whole.
    # The anonymous buffers (CPU_REPACK copy, KV cache) are not asserted: malloc may serve them from heap pages an
    # earlier case in this process freed but kept resident, so they need not grow the RSS.
    buffers = record.engine_info["buffers_bytes"]
    grown = load.load_host_rss_after_bytes - load.load_host_rss_before_bytes
    assert grown >= buffers["CPU_Mapped model"] - 0.005 * 2**20, (grown, buffers)
    assert load.load_host_peak_rss_bytes >= load.load_host_rss_after_bytes
    text = render_markdown(loading_section([record]))
    assert "phi-3-tiny q4_0 b1 L16 n4" in text and "Host RSS after load (MiB)" in text
    assert "GPU:" not in text  # a CPU load has the host table only
    assert "A llama.cpp case loads its own model" in text
