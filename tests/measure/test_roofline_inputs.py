"""The roofline's inputs the worker gathers: weight bytes a step reads, KV bytes per token, and the bandwidth
with its source (a GPU profile's measured or datasheet figure, a host profile, or a copy measured here)."""

from __future__ import annotations

import types

import pytest
import torch

from bench.config.hardware import HardwareProfile, Measured
from bench.measure import roofline
from bench.measure.roofline import (
    DATASHEET,
    MEASURED_HOST,
    MEASURED_PROFILE,
    cached_host_bandwidth,
    device_bandwidth,
    host_profile_name,
    kv_bytes_per_token,
    weights_read_bytes,
)


class TinyLM(torch.nn.Module):
    def __init__(self, tied: bool):
        super().__init__()
        self.embed = torch.nn.Embedding(100, 8)  # 100 x 8 fp32: 3200 bytes, one row 32 bytes
        self.head = torch.nn.Linear(8, 100, bias=False)
        if tied:
            self.head.weight = self.embed.weight

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):
        return self.head


def test_an_untied_embedding_is_read_only_for_the_rows_a_step_looks_up():
    assert weights_read_bytes(TinyLM(tied=False), 10_000, batch_size=2) == 10_000 - 3200 + 2 * 32
    assert weights_read_bytes(TinyLM(tied=True), 10_000, batch_size=2) == 10_000  # the head reads it whole


def test_kv_bytes_per_token_from_the_cache_tensors():
    # two layers of [batch 3, 4 heads, 50 slots, head dim 8] fp16 keys and values: 2 x 2 x 4 x 8 x 2 = 256 bytes
    layer = types.SimpleNamespace(keys=torch.zeros(3, 4, 50, 8, dtype=torch.float16))
    layer.values = layer.keys.clone()
    cache = types.SimpleNamespace(layers=[layer, layer])
    assert kv_bytes_per_token(cache) == 256
    legacy = ((layer.keys, layer.values),)
    assert kv_bytes_per_token(legacy) == 128
    assert kv_bytes_per_token(None) is None


def _gpu(measured: float | None) -> HardwareProfile:
    return HardwareProfile(
        name="H200",
        aliases=("NVIDIA H200",),
        memory_bytes=141 * 2**30,
        memory_bandwidth_bytes_per_s=4.8e12,
        sources={"memory_bandwidth_bytes_per_s": "datasheet: 4.8 TB/s"},
        measured=Measured(memory_bandwidth_bytes_per_s=measured, source="bench profile: copy") if measured else None,
    )


def test_a_gpu_uses_the_bandwidth_bench_profile_measured_else_the_datasheet():
    measured = device_bandwidth("cuda:0", "NVIDIA H200", profiles=[_gpu(4.3e12)])
    assert (measured.bytes_per_s, measured.source) == (4.3e12, MEASURED_PROFILE)
    datasheet = device_bandwidth("cuda:0", "NVIDIA H200", profiles=[_gpu(None)])
    assert (datasheet.bytes_per_s, datasheet.source) == (4.8e12, DATASHEET) and "4.8 TB/s" in datasheet.note
    unknown = device_bandwidth("cuda:0", "Mystery GPU", profiles=[_gpu(None)])
    assert unknown.bytes_per_s is None and unknown.source is None and "bench profile" in unknown.note


def test_a_cpu_uses_its_host_profile_else_a_copy_measured_here():
    host = HardwareProfile(
        name=host_profile_name("Test CPU"),
        kind="cpu",
        memory_bytes=2**34,
        memory_bandwidth_bytes_per_s=2e10,
        measured=Measured(memory_bandwidth_bytes_per_s=2e10, source="bench profile: 512 MiB host tensor copy"),
    )
    found = device_bandwidth("cpu", "Test CPU", host_profiles=[host], probe=lambda: 1.0)
    assert (found.bytes_per_s, found.source) == (2e10, MEASURED_PROFILE)
    other = device_bandwidth("cpu", "Other CPU", host_profiles=[host], probe=lambda: 7e9)
    assert (other.bytes_per_s, other.source) == (7e9, MEASURED_HOST) and "no host profile" in other.note


def test_the_host_copy_is_measured_once_and_kept_for_every_worker(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(roofline, "_HOST_MEASURED", {})
    calls = []

    def measure():
        calls.append(1)
        return 5e9

    first = cached_host_bandwidth("Test CPU", measure)
    monkeypatch.setattr(roofline, "_HOST_MEASURED", {})  # a new worker process: only the kept file remains
    second = cached_host_bandwidth("Test CPU", measure)
    assert first[0] == second[0] == 5e9 and len(calls) == 1
    assert "kept in" in second[1]


@pytest.mark.parametrize("garbage", ["", "{", '{"memory_bandwidth_bytes_per_s": "fast"}'])
def test_an_unreadable_kept_figure_is_measured_again(tmp_path, monkeypatch, garbage):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(roofline, "_HOST_MEASURED", {})
    path = roofline.host_bandwidth_file("Test CPU")
    path.parent.mkdir(parents=True)
    path.write_text(garbage)
    assert cached_host_bandwidth("Test CPU", lambda: 3e9)[0] == 3e9
