"""The machine fingerprint tells apart two CPUs of one name that differ in ISA, and reads this host's truly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fake_cpu import WITH_BF16, WITHOUT_BF16, proc_cpuinfo, use_cpu

from bench.config import machine


def _fingerprint(text: str, **versions) -> machine.Fingerprint:
    reading = machine.parse_proc_cpuinfo(text)
    libs = {"torch": "2.14.1", "transformers": "5.25.0", "bitsandbytes": "0.50.2", **versions}
    return machine.build_fingerprint(reading, libs, arch="x86_64", logical_cpus=2, environ={})


def test_two_cpus_of_one_name_with_and_without_avx512_bf16_differ():
    a, b = _fingerprint(WITH_BF16), _fingerprint(WITHOUT_BF16)
    assert a.cpu == b.cpu == "AMD EPYC" and a.vendor == b.vendor == "AuthenticAMD"
    assert "avx512_bf16" in a.isa and "avx512_bf16" not in b.isa
    assert a.digest != b.digest
    assert "avx512_bf16" in a.brief() and "avx512_bf16" not in b.brief()


def test_the_first_processor_block_is_read_and_the_isa_named_in_proc_spelling():
    fp = _fingerprint(WITH_BF16)
    # every extension of the list that the block names, and none of the second block's
    assert fp.isa == (
        "sse4_2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512dq",
        "avx512_vnni",
        "avx512_bf16",
    )


def test_an_amx_cpu_lists_amx():
    text = proc_cpuinfo("sse4_2 avx avx2 avx512f amx_bf16 amx_tile amx_int8 avx512_bf16", model="Intel Xeon")
    assert {"amx_tile", "amx_int8", "amx_bf16"} <= set(_fingerprint(text).isa)


def test_py_cpuinfo_spelling_gives_the_same_fingerprint_as_proc_cpuinfo():
    proc = machine.parse_proc_cpuinfo(WITH_BF16)
    cpuid_style = {  # py-cpuinfo's CPUID reader spells some flags without the underscore
        "brand_raw": "AMD EPYC",
        "vendor_id_raw": "AuthenticAMD",
        "flags": [f.replace("avx512_", "avx512") for f in proc.flags],
    }
    via_py_cpuinfo = machine.reading_from_py_cpuinfo(cpuid_style)
    libs = {"torch": "2.14.1"}
    one = machine.build_fingerprint(proc, libs, arch="x86_64", logical_cpus=2, environ={})
    two = machine.build_fingerprint(via_py_cpuinfo, libs, arch="x86_64", logical_cpus=2, environ={})
    assert one.digest == two.digest and one.cpu_source != two.cpu_source


@pytest.mark.parametrize("library", ["torch", "transformers", "bitsandbytes"])
def test_a_library_version_changes_the_digest(library):
    assert _fingerprint(WITH_BF16).digest != _fingerprint(WITH_BF16, **{library: "0.0.1"}).digest


def test_a_cpu_capability_override_changes_the_digest():
    reading = machine.parse_proc_cpuinfo(WITH_BF16)
    plain = machine.build_fingerprint(reading, {}, arch="x86_64", logical_cpus=2, environ={})
    forced = machine.build_fingerprint(
        reading, {}, arch="x86_64", logical_cpus=2, environ={"ATEN_CPU_CAPABILITY": "avx2"}
    )
    assert plain.digest != forced.digest and "ATEN_CPU_CAPABILITY=avx2" in forced.brief()


def test_the_digest_is_stable_across_processes():
    script = "from bench.config import machine; print(machine.fingerprint().digest)"
    root = Path(__file__).resolve().parents[2]
    runs = {
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=root, timeout=60
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(runs) == 1 and len(runs.pop()) == machine.DIGEST_CHARS


@pytest.mark.skipif(not machine.PROC_CPUINFO.is_file(), reason="no /proc/cpuinfo on this platform")
def test_proc_cpuinfo_agrees_with_py_cpuinfo_on_this_host():
    cpuinfo = pytest.importorskip("cpuinfo")
    ours = machine.read_cpu()
    theirs = machine.reading_from_py_cpuinfo(cpuinfo.get_cpu_info())  # CPUID in a subprocess, about 0.2 s
    assert ours.source == "/proc/cpuinfo"
    assert machine.isa_flags(ours.flags) == machine.isa_flags(theirs.flags)
    assert ours.model == theirs.model


def test_the_fake_cpu_reaches_every_reader(monkeypatch):
    fake = use_cpu(monkeypatch, WITHOUT_BF16)
    assert machine.fingerprint() is fake and "avx512_bf16" not in fake.isa


def test_the_envelope_records_the_fingerprint(monkeypatch):
    from fake_nvml import FakeNVML, FakeNVMLError

    from bench.measure.environment import collect_environment

    monkeypatch.setitem(sys.modules, "pynvml", FakeNVML(init_error=FakeNVMLError(12)))
    monkeypatch.setenv("PATH", "")
    fake = use_cpu(monkeypatch, WITHOUT_BF16)
    env = json.loads(json.dumps(collect_environment("smoke", [])))  # what environment.json holds
    assert env["machine"]["digest"] == fake.digest
    assert env["machine"]["isa"] == list(fake.isa) and "avx512_bf16" not in env["machine"]["isa"]
    assert env["machine"]["libraries"]["torch"] == env["torch"]
