"""Architecture summaries are keyed on the machine fingerprint: another ISA of one CPU name never reads them."""

from __future__ import annotations

import pytest
from fake_cpu import WITH_BF16, WITHOUT_BF16, use_cpu

from bench.predict import arch_cache
from bench.predict.architecture import Architecture, LinearLayer, OtherTensor

CONFIG = {"hidden_size": 8}


def tiny_arch() -> Architecture:
    """A hand-made one-linear decoder: no torch needed."""
    return Architecture(
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
        parameters=8 * 32 + 8 * 16,
        input_embedding_numel=8 * 32,
        linears=(LinearLayer("layers.0.fc1", 8, 16, False, True, "fc1", 0),),
        others=(OtherTensor("embed.weight", 256, "float16", False),),
    )


def test_the_key_differs_between_two_cpus_of_one_name(monkeypatch):
    use_cpu(monkeypatch, WITH_BF16)
    with_bf16 = arch_cache.summary_key("toy", "decoder", "ToyConfig", CONFIG)
    use_cpu(monkeypatch, WITHOUT_BF16)
    without = arch_cache.summary_key("toy", "decoder", "ToyConfig", CONFIG)
    assert with_bf16 != without
    assert arch_cache.summary_path("toy", with_bf16) != arch_cache.summary_path("toy", without)


def test_a_summary_written_under_one_cpu_is_not_read_under_the_other(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    built: list[str] = []

    def build(tag):
        def run():
            built.append(tag)
            return tiny_arch()

        return run

    use_cpu(monkeypatch, WITH_BF16)
    arch_cache.cached_architecture("toy", "decoder", "ToyConfig", CONFIG, build("bf16"))
    arch_cache.cached_architecture("toy", "decoder", "ToyConfig", CONFIG, lambda: pytest.fail("rebuilt"))
    use_cpu(monkeypatch, WITHOUT_BF16)
    arch_cache.cached_architecture("toy", "decoder", "ToyConfig", CONFIG, build("no-bf16"))
    assert built == ["bf16", "no-bf16"]
    assert len(list((tmp_path / "architectures").iterdir())) == 2  # one entry per machine, side by side
