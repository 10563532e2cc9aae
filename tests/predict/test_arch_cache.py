"""The architecture summary cache: the fast path equals the meta-device build; the key tracks the build's inputs."""

from __future__ import annotations

import json

import pytest

from bench.config.models import MODELS
from bench.predict import arch_cache
from bench.predict import architecture as arch_module
from bench.predict.architecture import Architecture, LinearLayer, OtherTensor
from bench.predict.weights import DTYPE_BYTES


def tiny_arch(**changes) -> Architecture:
    """A hand-made two-linear decoder: no torch needed."""
    fields = dict(
        name="toy",
        family="decoder",
        model_type="toy",
        num_layers=1,
        hidden=8,
        intermediate=16,
        heads=2,
        kv_heads=2,
        head_dim=4,
        vocab=32,
        max_positions=64,
        sliding_window=None,
        mlp="plain",
        parameters=8 * 32 + 8 * 16 + 16 * 8 + 16,
        input_embedding_numel=8 * 32,
        linears=(
            LinearLayer("layers.0.fc1", 8, 16, True, True, "fc1", 0),
            LinearLayer("layers.0.fc2", 16, 8, False, True, "fc2", 0),
        ),
        others=(OtherTensor("embed.weight", 256, "float16", False), OtherTensor("rotary.inv_freq", 2, "float32", True)),
    )
    fields.update(changes)
    return Architecture(**fields)


def _buffer_bytes(arch: Architecture) -> int:
    return sum(t.numel * DTYPE_BYTES[t.dtype] for t in arch.others if t.buffer)


def test_json_round_trip_is_exact():
    arch = tiny_arch(sliding_window=16)
    text = json.dumps(arch_cache.to_json(arch))
    assert arch_cache.from_json(json.loads(text)) == arch


def test_hit_does_not_build_and_miss_builds_once(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    built = []

    def build():
        built.append(1)
        return tiny_arch()

    config = {"hidden_size": 8}
    first = arch_cache.cached_architecture("toy", "decoder", "ToyConfig", config, build)
    second = arch_cache.cached_architecture("toy", "decoder", "ToyConfig", config, lambda: pytest.fail("rebuilt"))
    assert first == second == tiny_arch() and built == [1]
    assert [p.name.split("-")[0] for p in (tmp_path / "architectures").iterdir()] == ["toy"]


@pytest.mark.parametrize(
    "family, config_class, config",
    [
        ("decoder", "ToyConfig", {"hidden_size": 16}),  # another config
        ("encoder", "ToyConfig", {"hidden_size": 8}),  # another family
        ("decoder", "OtherConfig", {"hidden_size": 8}),  # another config class
    ],
)
def test_key_changes_with_what_the_build_reads(family, config_class, config):
    key = arch_cache.summary_key("toy", "decoder", "ToyConfig", {"hidden_size": 8})
    assert arch_cache.summary_key("toy", family, config_class, config) != key
    assert arch_cache.summary_key("toy", "decoder", "ToyConfig", {"hidden_size": 8}) == key


def test_key_changes_with_the_transformers_version(monkeypatch):
    key = arch_cache.summary_key("toy", "decoder", "ToyConfig", {"hidden_size": 8})
    monkeypatch.setattr(arch_cache, "transformers_version", lambda: "0.0.1")
    assert arch_cache.summary_key("toy", "decoder", "ToyConfig", {"hidden_size": 8}) != key


def test_corrupt_or_foreign_file_is_rebuilt_and_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    config = {"hidden_size": 8}
    key = arch_cache.summary_key("toy", "decoder", "ToyConfig", config)
    path = arch_cache.summary_path("toy", key)
    path.parent.mkdir(parents=True)
    for bad in ('{"key": "', json.dumps({"key": "another", "architecture": arch_cache.to_json(tiny_arch())})):
        path.write_text(bad)
        arch = arch_cache.cached_architecture("toy", "decoder", "ToyConfig", config, tiny_arch)
        assert arch == tiny_arch()
        assert arch_cache.load(path, key) == tiny_arch()  # the file now holds this key's summary


def test_summary_missing_a_field_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    key = arch_cache.summary_key("toy", "decoder", "ToyConfig", {})
    path = arch_cache.summary_path("toy", key)
    data = arch_cache.to_json(tiny_arch())
    del data["sliding_window"]  # written before the field existed
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"key": key, "architecture": data}))
    assert arch_cache.load(path, key) is None


def test_unwritable_cache_still_answers(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("BENCH_CACHE_DIR", str(blocker))
    arch = arch_cache.cached_architecture("toy", "decoder", "ToyConfig", {}, tiny_arch)
    assert arch == tiny_arch()


def _phi3_parameters(layers: int, hidden: int, inter: int, vocab: int = 32064) -> int:
    """Counted by hand: untied embedding and lm_head; per layer qkv, o, gate_up, down and two RMSNorms; final norm."""
    per_layer = 3 * hidden * hidden + hidden * hidden + 2 * inter * hidden + hidden * inter + 2 * hidden
    return 2 * vocab * hidden + layers * per_layer + hidden


def _bert_parameters(layers: int, hidden: int, inter: int, vocab: int = 30522, positions: int = 512) -> int:
    """Counted by hand: word, position and 2 token-type embeddings with a LayerNorm; per layer q, k, v, output
    dense and LayerNorm, intermediate, output and LayerNorm (all with biases); the pooler."""
    embeddings = (vocab + positions + 2) * hidden + 2 * hidden
    per_layer = 4 * (hidden * hidden + hidden) + 2 * hidden + 2 * hidden * inter + inter + hidden + 2 * hidden
    return embeddings + layers * per_layer + hidden * hidden + hidden


# Independent of the build: counted by hand from the configs (reference/models.md: 3.8B and 110M), and for the
# tiny models the same as the parameters the frozen CPU run counted on its loaded models (17,728,768 and 4,385,920
# in tests/data/runs/cpu-smoke). Buffers: Phi-3's inv_freq and original_inv_freq (head_dim / 2 float32 each),
# BERT's position_ids and token_type_ids (512 int64 each).
EXPECTED = {
    "phi-3-mini": (_phi3_parameters(32, 3072, 8192), 2 * 48 * 4),
    "phi-3-mini-2l": (_phi3_parameters(2, 3072, 8192), 2 * 48 * 4),
    "phi-3-tiny": (17_728_768, 2 * 32 * 4),
    "bert-base": (_bert_parameters(12, 768, 3072), 2 * 512 * 8),
    "bert-base-2l": (_bert_parameters(2, 768, 3072), 2 * 512 * 8),
    "bert-tiny": (4_385_920, 2 * 512 * 8),
}


def test_hand_counts_match_the_published_sizes():
    assert EXPECTED["phi-3-mini"][0] == 3_821_079_552 and EXPECTED["bert-base"][0] == 109_482_240
    assert _phi3_parameters(2, 256, 512) == 17_728_768 and _bert_parameters(2, 128, 512) == 4_385_920


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_fast_path_equals_meta_build_for_every_model_and_precision(name, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(arch_module, "_ARCHITECTURES", {})
    entry = MODELS[name]
    built = arch_module._build_architecture(entry.name, entry.family, entry.config())  # the meta-device build
    arch_module.architecture(name)  # writes the summary
    assert [p.name.split("-")[0] for p in (tmp_path / "architectures").iterdir()] == [name.split("-")[0]]
    monkeypatch.setattr(arch_module, "_ARCHITECTURES", {})
    monkeypatch.setattr(arch_module, "_build_architecture", lambda *a: pytest.fail("built instead of read"))
    fast = arch_module.architecture(name)
    assert fast == built
    assert (fast.parameters, _buffer_bytes(fast)) == EXPECTED[name]
