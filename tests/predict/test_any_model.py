"""Any model from its config.json alone: predicted weights against transformers' own parameter count and the
published counts, KV bytes against hand counts, hub ids from the local cache, and refusals that exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_hub_cache import repo_folder

from bench.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"

# Published parameter counts of the checkpoints whose shapes the config directories hold (model cards and
# papers), and KV-cache bytes per token, counted by hand: 2 (K, V) x layers x KV heads x head dim x 2 bytes.
PUBLISHED = {
    "llama-2-7b": (6_738_415_616, 2 * 32 * 32 * 128 * 2),
    "mistral-7b-v0.1": (7_241_732_096, 2 * 32 * 8 * 128 * 2),  # grouped-query attention: 8 KV heads
    "qwen2-0.5b": (494_032_768, 2 * 24 * 2 * 64 * 2),  # 2 KV heads of 64; tied embeddings
    "gemma-2b": (2_506_172_416, 2 * 18 * 1 * 256 * 2),  # one KV head of 256
    "gpt2": (124_439_808, 2 * 12 * 12 * 64 * 2),
    "gpt-bigcode-santacoder": (None, 2 * 24 * 1 * 128 * 2),  # multi-query: a single KV head
    "phi-3-mini-4k": (3_821_079_552, 2 * 32 * 32 * 96 * 2),
    "bert-base-uncased": (109_482_240, 0),
    "distilbert-base-uncased": (66_362_880, 0),
    "roberta-base": (124_645_632, 0),
}


def _santacoder_parameters() -> int:
    """GPT-BigCode (santacoder shape) counted by hand: hidden 2048, 24 layers, MLP 8192, vocab 49280,
    2048 positions; multi-query c_attn projects to hidden + 2 x head dim (one K and one V head of 128)."""
    h, inner, vocab, positions, layers = 2048, 8192, 49280, 2048, 24
    c_attn = h * (h + 256) + (h + 256)
    per_layer = 2 * 2 * h + c_attn + (h * h + h) + (h * inner + inner) + (inner * h + h)
    return vocab * h + positions * h + layers * per_layer + 2 * h  # lm_head tied to wte


def _predict_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["predict", *args, "--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out[out.index("{") :])["memory"]


def _meta_counts(path: Path) -> tuple[int, int]:
    """transformers' own count on the meta device: unique parameters, and buffer bytes (float16 runtime)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from bench.config.models import DECODER, family_of_config

    config = AutoConfig.from_pretrained(str(path))
    cls = AutoModelForCausalLM if family_of_config(config) == DECODER else AutoModel
    with torch.device("meta"):
        model = cls.from_config(config, dtype=torch.float16)
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return params, buffers


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_weights_and_kv_of_a_config_only_directory(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = CONFIGS / name
    assert sorted(p.name for p in path.iterdir()) == ["config.json"]
    published, kv_per_token = PUBLISHED[name]
    params, buffers = _meta_counts(path)
    assert params == (published or _santacoder_parameters())
    decoder = kv_per_token > 0
    new = ["--new-tokens", "8"] if decoder else ["--new-tokens", "0"]
    mem = _predict_json(capsys, "--model-path", str(path), "--precision", "fp16", "--context", "100", *new)
    assert mem["weights_bytes"] == 2 * params + buffers
    # the cache holds prompt + new - 1 tokens at the end of generation (no window at this length)
    assert mem["kv_cache_final_bytes"] == kv_per_token * (107 if decoder else 0)
    assert mem["model"] == name
    assert mem["load_peak_bytes"] and mem["fit_bytes"] >= mem["total_bytes"] and mem["nvidia_smi_bytes"]


def test_gpt2_conv1d_layers_are_quantized(capsys: pytest.CaptureFixture[str]) -> None:
    """bitsandbytes replaces GPT-2's Conv1D layers too: 4 per layer, (768x2304, 768x768, 768x3072, 3072x768)."""
    mem = _predict_json(capsys, "--model-path", str(CONFIGS / "gpt2"), "--precision", "nf4", "--context", "64")
    numel = 12 * (768 * 2304 + 768 * 768 + 768 * 3072 + 3072 * 768)
    assert mem["weights_quantized_bytes"] == numel // 2


@pytest.mark.slow
def test_gpt_bigcode_cache_holds_one_kv_head() -> None:
    """The KV cache transformers fills for a multi-query model holds a single head: measured from the cache."""
    import torch
    from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM

    from bench.config.precision import get_precision
    from bench.predict.architecture import architecture
    from bench.predict.kv_cache import kv_bytes_per_token

    config = GPTBigCodeConfig(
        n_embd=64, n_layer=2, n_head=4, n_inner=128, n_positions=64, vocab_size=100, multi_query=True
    )
    model = GPTBigCodeForCausalLM(config).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 10, dtype=torch.long), use_cache=True)
    cache = out.past_key_values
    stored = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    per_token_fp32 = stored // 10
    assert per_token_fp32 == 2 * 2 * 1 * 16 * 4  # K and V, 2 layers, one head of 16, float32
    assert kv_bytes_per_token(architecture(config), get_precision("fp32"), "cpu") == per_token_fp32


def test_an_encoder_decoder_exits_2_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    path = CONFIGS / "t5-small-unsupported"
    assert main(["predict", "--model-path", str(path), "--precision", "fp16", "--context", "64"]) == 2
    err = capsys.readouterr().err
    assert "encoder-decoder" in err and "t5" in err and len(err.strip().splitlines()) == 1


def test_a_directory_without_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--model-path", str(tmp_path), "--precision", "fp16", "--context", "64"]) == 2
    assert "config.json" in capsys.readouterr().err


def test_an_unknown_model_type_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-architecture", "hidden_size": 8}))
    assert main(["predict", "--model-path", str(tmp_path), "--precision", "fp16", "--context", "64"]) == 2
    assert "no-such-architecture" in capsys.readouterr().err


def _hub_cache_with_config(cache: Path, repo_id: str, config: Path) -> None:
    """A hub cache holding only ``repo_id``'s config.json, as hf_hub_download leaves it."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    folder = repo_folder(cache, repo_id)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(config.read_text())
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(revision)


def test_hub_id_reads_config_from_the_local_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _hub_cache_with_config(tmp_path, "openai-community/gpt2", CONFIGS / "gpt2" / "config.json")
    mem = _predict_json(capsys, "--model", "openai-community/gpt2", "--precision", "fp16", "--context", "64")
    assert mem["model"] == "openai-community/gpt2"
    assert mem["kv_cache_final_bytes"] == 36864 * (64 + 63)


def test_hub_id_missing_from_the_cache_exits_2_with_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["predict", "--model", "org/missing", "--precision", "fp16", "--context", "64"]
    assert main(args) == 2
    assert "--allow-download" in capsys.readouterr().err
    assert main([*args, "--allow-download"]) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err


def test_advise_takes_a_model_path(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["advise", "--model-path", str(CONFIGS / "qwen2-0.5b"), "--precision", "fp16", "--context", "1024"]
    assert main([*args, "--gpu", "GeForce RTX 4060"]) == 0
    out = capsys.readouterr().out
    assert "qwen2-0.5b" in out and "GeForce RTX 4060" in out
