"""The llama.cpp predictor: GGUF weights from ggml's block layouts, the KV cache of the padded context, and the
``bench predict --engine llama.cpp`` table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import BadInputError
from bench.predict.llamacpp import BLOCK_BYTES, predict_llamacpp, repack_rows

# Phi-3-mini (the shipped config.json): hidden 3072, 32 layers, 32 heads (no GQA), feed-forward 8192, vocab 32064
H, LAYERS, FF, VOCAB = 3072, 32, 8192, 32064
PER_LAYER = 3 * H * H + H * H + 2 * FF * H + FF * H  # qkv, o, gate_up, down
EMBED = VOCAB * H
NORMS = (2 * LAYERS + 1) * H * 4


def test_block_layouts_match_the_gguf_package():
    gguf = pytest.importorskip("gguf", reason="gguf is not installed: pip install 'llm-bench[llamacpp]'")
    for name, (per, size) in BLOCK_BYTES.items():
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]] == (per, size), name


def test_phi3_mini_weights_by_type_are_hand_counted():
    q4 = predict_llamacpp("phi-3-mini", "q4_0", 1024, 16)
    # Q4_0: 18 bytes per 32 weights for every matrix but output.weight, which llama-quantize keeps at Q6_K (210/256)
    assert q4.weights_by_type == {
        "Q4_0": (LAYERS * PER_LAYER + EMBED) // 32 * 18,
        "Q6_K": EMBED // 256 * 210,
        "F32": NORMS,
    }
    q8 = predict_llamacpp("phi-3-mini", "q8_0", 1024, 16)
    assert q8.weights_by_type == {"Q8_0": (LAYERS * PER_LAYER + 2 * EMBED) // 32 * 34, "F32": NORMS}
    f16 = predict_llamacpp("phi-3-mini", "f16", 1024, 16)
    assert f16.weights_bytes == (LAYERS * PER_LAYER + 2 * EMBED) * 2 + NORMS
    assert f16.weights_bytes > q8.weights_bytes > q4.weights_bytes


def test_the_kv_cache_fills_the_padded_context_at_its_type():
    f16 = predict_llamacpp("phi-3-mini", "q4_0", 1024, 16)
    assert f16.n_ctx == 1280  # 1040 tokens padded to a multiple of 256
    assert f16.kv_cache_bytes == LAYERS * 1280 * 2 * H * 2
    q8 = predict_llamacpp("phi-3-mini", "q4_0", 1024, 16, kv_cache_type="q8_0")
    assert q8.kv_cache_bytes == LAYERS * 1280 * 2 * (H // 32 * 34)
    assert predict_llamacpp("phi-3-mini", "q4_0", 200, 56).n_ctx == 256


def test_k_quant_mixes_and_bitsandbytes_precisions_are_refused():
    with pytest.raises(BadInputError, match="k-quant mixes"):
        predict_llamacpp("phi-3-mini", "q4_k_m", 128, 16)
    with pytest.raises(BadInputError, match="not a GGUF type"):
        predict_llamacpp("phi-3-mini", "nf4", 128, 16)


def test_bench_predict_engine_llamacpp_prints_a_labelled_prediction(capsys):
    argv = ["predict", "--model", "phi-3-mini", "--engine", "llama.cpp", "--precision", "q4_0"]
    assert main([*argv, "--context", "1024", "--new-tokens", "16"]) == 0
    out = capsys.readouterr().out
    assert "predicted, not measured" in out
    q4 = ((LAYERS * PER_LAYER + EMBED) // 32 * 18 + EMBED // 256 * 210 + NORMS) / 2**30
    assert f"{q4:.2f} GiB  Q4_0" in out
    assert "1,280 cells" in out
    assert main([*argv[:-1], "nf4", "--context", "8"]) == 2


def test_bench_predict_engine_llamacpp_refuses_a_config_only_model_in_one_line(capsys, tmp_path):
    """The llama.cpp predictor knows registered models' tensor layouts only: a config-only folder exits 2."""
    shipped = Path(__file__).parents[2] / "tests" / "data" / "configs" / "phi-3-mini-4k" / "config.json"
    (tmp_path / "config.json").write_text(shipped.read_text(encoding="utf-8"), encoding="utf-8")
    argv = ["predict", "--model-path", str(tmp_path), "--engine", "llama.cpp", "--precision", "q4_0"]
    assert main([*argv, "--context", "512"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "takes registered models" in err


# ------------------------------------------------------------------------------- ggml-cpu's CPU_REPACK copy
REFERENCE = Path(__file__).parents[2] / "reports" / "reference" / "cpu-phi3-mini-llamacpp" / "run1"
X86_AVX512 = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl")
X86_NO_AVX2 = ("sse4_2", "avx", "fma", "f16c")
ARM_I8MM = ("asimd", "asimdhp", "asimddp", "i8mm")


def test_the_predicted_repack_buffer_is_the_one_llamacpp_logged_for_full_size_phi3_mini():
    # the measured run on an AVX-512 CPU: predicted for the CPU features its environment recorded
    env = json.loads((REFERENCE / "environment.json").read_text())
    records = [json.loads(line) for line in (REFERENCE / "results.jsonl").read_text().splitlines()]
    checked = 0
    for r in records:
        s = r["spec"]
        pred = predict_llamacpp(
            "phi-3-mini", s["precision"], s["context_tokens"], s["new_tokens"], device="cpu",
            cpu_isa=env["machine"]["isa"],
        )  # fmt: skip
        logged = r["engine_info"]["buffers_bytes"].get("CPU_REPACK model", 0)
        assert pred.repack_bytes == pytest.approx(logged, abs=0.005 * 2**20), s["precision"]
        checked += 1
    assert checked == 6
    # hand-counted: the 32 layers' matrices at 18 bytes per 32 weights (1,944 MiB); not the embedding nor output
    q4 = predict_llamacpp("phi-3-mini", "q4_0", 128, 16, device="cpu", cpu_isa=X86_AVX512)
    assert q4.repack_by_type == {"Q4_0": LAYERS * PER_LAYER // 32 * 18}


def test_no_repack_without_the_cpu_feature_or_on_a_gpu():
    on_gpu = predict_llamacpp("phi-3-mini", "q4_0", 128, 16)
    no_avx2 = predict_llamacpp("phi-3-mini", "q4_0", 128, 16, device="cpu", cpu_isa=X86_NO_AVX2)
    avx2 = predict_llamacpp("phi-3-mini", "q4_0", 128, 16, device="cpu", cpu_isa=X86_AVX512)
    assert on_gpu.repack_bytes == no_avx2.repack_bytes == 0 and not no_avx2.repack_by_type
    assert avx2.total_bytes - no_avx2.total_bytes == LAYERS * PER_LAYER // 32 * 18  # the copy, nothing else


def test_q8_0_is_repacked_on_arm64_only():
    x86 = predict_llamacpp("phi-3-mini", "q8_0", 128, 16, device="cpu", cpu_isa=X86_AVX512)
    arm = predict_llamacpp("phi-3-mini", "q8_0", 128, 16, device="cpu", cpu_isa=ARM_I8MM)
    assert x86.repack_bytes == 0
    # every MUL_MAT weight at Q8_0 (34 bytes per 32), output.weight included; the token embedding is a GET_ROWS
    assert arm.repack_by_type == {"Q8_0": (LAYERS * PER_LAYER + EMBED) // 32 * 34}
    # on arm64 Q4_0's output.weight (Q6_K) is repacked too
    q4 = predict_llamacpp("phi-3-mini", "q4_0", 128, 16, device="cpu", cpu_isa=ARM_I8MM)
    assert q4.repack_by_type == {"Q4_0": LAYERS * PER_LAYER // 32 * 18, "Q6_K": EMBED // 256 * 210}


def test_a_layout_needs_rows_that_divide_its_interleave():
    assert repack_rows("Q4_0", 3072, X86_AVX512) == 8
    assert repack_rows("Q4_0", 12, X86_AVX512) is None  # 12 rows: no 8-row layout, and x86 has no 4-row one
    assert repack_rows("Q4_0", 12, ARM_I8MM) == 4
    assert repack_rows("Q2_K", 3072, ("avx2",)) is None and repack_rows("Q2_K", 3072, X86_AVX512) == 8
    assert repack_rows("F16", 3072, X86_AVX512 + ARM_I8MM) is None


def test_bench_predict_with_a_cpu_profile_adds_the_repacked_copy_for_this_cpu(capsys, tmp_path, monkeypatch):
    import dataclasses

    from bench.config import machine

    cpu = tmp_path / "host.toml"
    cpu.write_text('name = "host"\nkind = "cpu"\nmemory_bytes = 25769803776\nmemory_bandwidth_bytes_per_s = 2e10\n')
    argv = ["predict", "--model", "phi-3-mini", "--engine", "llama.cpp", "--precision", "q4_0", "--context", "128"]
    real = machine.fingerprint()
    totals = {}
    for isa in (X86_AVX512, X86_NO_AVX2):
        monkeypatch.setattr(machine, "fingerprint", lambda isa=isa: dataclasses.replace(real, isa=isa))
        assert main([*argv, "--profile", str(cpu), "--json", "-"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["device"] == "cpu" and out["cpu_isa"] == list(isa)
        totals[isa] = out["total_bytes"]
    assert totals[X86_AVX512] - totals[X86_NO_AVX2] == LAYERS * PER_LAYER // 32 * 18
    assert main([*argv, "--profile", str(cpu)]) == 0
    assert "CPU_REPACK" in capsys.readouterr().out
    assert main(argv) == 0  # no profile: every layer on a GPU, nothing repacked
    assert "CPU_REPACK" not in capsys.readouterr().out
