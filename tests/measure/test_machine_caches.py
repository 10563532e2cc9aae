"""The host bandwidth and the random checkpoints are kept per machine fingerprint: a figure or checkpoint
kept under one CPU is not used under another of the same name with another ISA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_cpu import WITH_BF16, WITHOUT_BF16, use_cpu

from bench.config.models import resolve_source
from bench.measure import loader, roofline


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(roofline, "_HOST_MEASURED", {})
    return tmp_path


def test_host_bandwidth_kept_under_one_cpu_is_measured_again_under_the_other(cache, monkeypatch):
    use_cpu(monkeypatch, WITH_BF16)
    first = roofline.cached_host_bandwidth("AMD EPYC", lambda: 31e9)
    monkeypatch.setattr(roofline, "_HOST_MEASURED", {})  # a new process
    assert roofline.cached_host_bandwidth("AMD EPYC", lambda: pytest.fail("measured again"))[0] == first[0]
    with_file = roofline.host_bandwidth_file("AMD EPYC")

    use_cpu(monkeypatch, WITHOUT_BF16)
    monkeypatch.setattr(roofline, "_HOST_MEASURED", {})
    assert roofline.host_bandwidth_file("AMD EPYC") != with_file
    assert roofline.cached_host_bandwidth("AMD EPYC", lambda: 4.8e9)[0] == 4.8e9
    assert len(list((cache / "host-bandwidth").glob("*.json"))) == 2


def test_a_kept_figure_of_another_machine_copied_over_is_not_read(cache, monkeypatch):
    use_cpu(monkeypatch, WITH_BF16)
    roofline.cached_host_bandwidth("AMD EPYC", lambda: 31e9)
    kept = roofline.host_bandwidth_file("AMD EPYC").read_text()
    use_cpu(monkeypatch, WITHOUT_BF16)
    monkeypatch.setattr(roofline, "_HOST_MEASURED", {})
    path = roofline.host_bandwidth_file("AMD EPYC")
    path.write_text(kept)  # the other machine's file under this machine's name (a copied cache folder)
    assert roofline.cached_host_bandwidth("AMD EPYC", lambda: 4.8e9)[0] == 4.8e9
    assert json.loads(path.read_text())["machine"] != json.loads(kept)["machine"]


class _SavedModel:
    """Stands in for a built model: ``save_pretrained`` writes what the cache looks for."""

    def save_pretrained(self, folder: str) -> None:
        Path(folder).mkdir(parents=True)
        (Path(folder) / "config.json").write_text("{}")
        (Path(folder) / "model.safetensors").write_bytes(b"")


def test_a_random_checkpoint_built_under_one_cpu_is_rebuilt_under_the_other(cache, monkeypatch):
    builds = []
    monkeypatch.setattr(loader, "build_random", lambda *a, **k: builds.append(1) or _SavedModel())
    source = resolve_source("bert-tiny", "random")
    use_cpu(monkeypatch, WITH_BF16)
    first = loader.random_checkpoint(source)
    assert loader.random_checkpoint(source) == first and len(builds) == 1
    use_cpu(monkeypatch, WITHOUT_BF16)
    second = loader.random_checkpoint(source)
    assert second != first and len(builds) == 2
    assert sorted(p.name for p in (cache / "random-checkpoints").iterdir()) == sorted([first.name, second.name])


def _host_profile(machine_digest):
    from bench.config.hardware import HardwareProfile, Measured

    measured = Measured(memory_bandwidth_bytes_per_s=4.8e9, source="bench profile", machine=machine_digest)
    name = roofline.host_profile_name("AMD EPYC", "vm")
    return HardwareProfile(name=name, kind="cpu", memory_bytes=2**34, memory_bandwidth_bytes_per_s=4.8e9,
                           measured=measured)


def test_a_host_profile_of_another_machine_of_the_same_name_is_not_used(monkeypatch):
    monkeypatch.setattr(roofline.socket, "gethostname", lambda: "vm")
    without = use_cpu(monkeypatch, WITHOUT_BF16)
    written_there = _host_profile(without.digest)
    assert roofline.device_bandwidth("cpu", "AMD EPYC", host_profiles=[written_there], probe=lambda: 3.1e10).source \
        == roofline.MEASURED_PROFILE
    with_bf16 = use_cpu(monkeypatch, WITH_BF16)
    here = roofline.device_bandwidth("cpu", "AMD EPYC", host_profiles=[written_there], probe=lambda: 3.1e10)
    assert (here.bytes_per_s, here.source) == (3.1e10, roofline.MEASURED_HOST)
    assert without.digest in here.note and with_bf16.digest in here.note and "another machine" in here.note
    old = roofline.device_bandwidth("cpu", "AMD EPYC", host_profiles=[_host_profile(None)], probe=lambda: 3.1e10)
    assert old.bytes_per_s == 4.8e9  # a profile written before fingerprints were recorded still applies
