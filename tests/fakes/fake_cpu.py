"""Two fake CPUs of one name, one with AVX512_BF16 and one without, as /proc/cpuinfo shows them.

``use_cpu(monkeypatch, text)`` makes :func:`bench.config.machine.fingerprint` that of ``text``'s CPU.
"""

from __future__ import annotations

import pytest

from bench.config import machine

# The first processor block of a 2-core "AMD EPYC" VM (Zen 4), trimmed; the second block must be ignored.
_FLAGS_ZEN4 = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht "
    "syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm rep_good nopl cpuid extd_apicid tsc_known_freq pni "
    "pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor "
    "lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext perfctr_core ssbd ibrs "
    "ibpb stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap "
    "avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx512_bf16 "
    "clzero xsaveerptr wbnoinvd arat avx512vbmi umip pku ospke avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni "
    "avx512_bitalg avx512_vpopcntdq rdpid fsrm"
)


def proc_cpuinfo(flags: str, model: str = "AMD EPYC") -> str:
    """A two-processor /proc/cpuinfo text whose first block has ``flags`` (the second has none of them)."""
    block = (
        "processor\t: {n}\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
        "model name\t: {model}\nstepping\t: 1\ncpu MHz\t\t: 2396.398\ncache size\t: 512 KB\n"
        "flags\t\t: {flags}\nbogomips\t: 4792.79\n\n"
    )
    return block.format(n=0, model=model, flags=flags) + block.format(n=1, model=model, flags="fpu sse sse2")


WITH_BF16 = proc_cpuinfo(_FLAGS_ZEN4)
# The same CPU name, one extension less (bitsandbytes then keeps its unfused 4-bit path).
WITHOUT_BF16 = proc_cpuinfo(_FLAGS_ZEN4.replace(" avx512_bf16", ""))


def use_cpu(monkeypatch: pytest.MonkeyPatch, text: str) -> machine.Fingerprint:
    """Make :func:`bench.config.machine.fingerprint` that of the CPU in ``text`` (this host's libraries, arch
    and CPU count) until the test ends; every cache keyed on the fingerprint then sees the fake machine."""
    reading = machine.parse_proc_cpuinfo(text)
    assert reading is not None
    fake = machine.build_fingerprint(reading, machine.library_versions())
    monkeypatch.setattr(machine, "fingerprint", lambda: fake)
    return fake
