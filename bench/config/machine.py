"""Which machine and software stack this is: one fingerprint, a short hash with its readable parts.

Two hosts can share a name ("AMD EPYC" on a VM called ``vm``) and still run different code: bitsandbytes 0.50
repacks 4-bit weights and runs a fused kernel on CPUs with AVX512_BF16 (``bitsandbytes.functional.
has_avx512bf16``), torch dispatches its CPU kernels by ISA (``torch.backends.cpu.get_cpu_capability()``: DEFAULT,
AVX2, AVX512; ``ATEN_CPU_CAPABILITY`` overrides it), and a library upgrade moves memory and speed. The fingerprint
is what tells them apart: the CPU model, vendor and architecture, the logical CPU count, the ISA extensions those
libraries select on, a CPU-capability override, and the versions of the libraries that choose code paths.

It is recorded in every run's environment envelope and in every record, and every cache under
``$BENCH_CACHE_DIR`` that depends on the host or the libraries keys on :attr:`Fingerprint.digest` (the measured
host bandwidth, the predictor's architecture summaries, the random checkpoints' library part), so two hosts
with the same name but another ISA never share an entry.

It sits in ``config`` (like :mod:`bench.config.locations`) so that every layer may key on it. Reading it costs
no heavy import: the CPU comes from ``/proc/cpuinfo`` (about a millisecond) where there is one, else from
py-cpuinfo (its CPUID probe runs in a subprocess, about 0.2 s on a 2-core host); the library versions come from
package metadata, never an import. It is read once per process (:func:`fingerprint`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROC_CPUINFO = Path("/proc/cpuinfo")
# The ISA extensions torch, bitsandbytes, oneDNN or ggml-cpu choose a code path on, spelled as Linux's /proc/cpuinfo
# spells them (py-cpuinfo's CPUID reading spells some without the underscore: matched ignoring "_").
ISA_FLAGS = (
    # x86-64
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
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "amx_fp16",
    # arm64
    "asimd",
    "asimdhp",
    "asimddp",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
    "sme",
)
# Libraries whose version selects code paths or moves the numbers: the three the harness measures through,
# accelerate (device maps, offload), kernels (hub kernels bitsandbytes and transformers may fetch), triton
# (the compiled engine's kernels).
LIBRARIES = ("torch", "transformers", "bitsandbytes", "accelerate", "kernels", "triton")
# Environment variables that override which CPU kernels torch dispatches to.
CAPABILITY_ENV = ("ATEN_CPU_CAPABILITY",)
DIGEST_CHARS = 12


def _norm(flag: str) -> str:
    return flag.strip().lower().replace("_", "").replace("-", "")


_CANONICAL = {_norm(f): f for f in ISA_FLAGS}


def isa_flags(flags: Iterable[str]) -> tuple[str, ...]:
    """The ISA extensions of :data:`ISA_FLAGS` present in a CPU's flag list, in that fixed order.

    Spellings differ by reader ("avx512_bf16" in /proc/cpuinfo, "avx512bf16" from CPUID in py-cpuinfo), so a
    flag is matched ignoring case, underscores and dashes, and reported in the /proc/cpuinfo spelling.
    """
    present = {_CANONICAL[n] for n in (_norm(f) for f in flags) if n in _CANONICAL}
    return tuple(f for f in ISA_FLAGS if f in present)


@dataclass(frozen=True)
class CpuReading:
    """What was read of the CPU: model name, vendor, every flag the reader listed, and which reader it was."""

    model: str
    vendor: str
    flags: tuple[str, ...]
    source: str  # "/proc/cpuinfo" | "py-cpuinfo" | "platform"


def parse_proc_cpuinfo(text: str) -> CpuReading | None:
    """The first processor of a Linux ``/proc/cpuinfo`` (x86 "model name"/"flags", arm64 "Features"); None
    when the text names neither a model nor any flag."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields.get("flags") or fields.get("features"):
                break  # the end of the first processor's block
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    model = fields.get("model name") or fields.get("cpu model") or fields.get("hardware") or ""
    flags = (fields.get("flags") or fields.get("features") or "").split()
    if not model and not flags:
        return None
    vendor = fields.get("vendor_id") or fields.get("cpu implementer") or ""
    return CpuReading(model=model, vendor=vendor, flags=tuple(flags), source=str(PROC_CPUINFO))


def reading_from_py_cpuinfo(info: Mapping[str, Any]) -> CpuReading:
    """A :class:`CpuReading` from py-cpuinfo's ``get_cpu_info()`` dict (``brand_raw``, ``vendor_id_raw``,
    ``flags``)."""
    return CpuReading(
        model=str(info.get("brand_raw") or ""),
        vendor=str(info.get("vendor_id_raw") or ""),
        flags=tuple(str(f) for f in info.get("flags") or ()),
        source="py-cpuinfo",
    )


def read_cpu(proc_cpuinfo: Path = PROC_CPUINFO) -> CpuReading:
    """This host's CPU: ``/proc/cpuinfo`` where it exists (cheap: no subprocess), else py-cpuinfo (CPUID in a
    subprocess, about 0.2 s), else the platform's processor string without flags."""
    try:
        reading = parse_proc_cpuinfo(proc_cpuinfo.read_text(encoding="utf-8", errors="replace"))
        if reading is not None:
            return reading
    except OSError:
        pass
    try:
        import cpuinfo  # py-cpuinfo (the py-cpuinfo2 distribution, as pytest-benchmark uses)

        return reading_from_py_cpuinfo(cpuinfo.get_cpu_info())
    except Exception:
        return CpuReading(model=platform.processor() or platform.machine(), vendor="", flags=(), source="platform")


def library_versions(names: Iterable[str] = LIBRARIES) -> dict[str, str | None]:
    """``{distribution: version}`` from package metadata (nothing is imported); None when not installed."""
    import importlib.metadata  # about 0.1 s to import on a loaded 2-core host: only when versions are asked for

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


@dataclass(frozen=True)
class Fingerprint:
    """This machine and software stack: the parts in the hash, readable, and the hash (:attr:`digest`)."""

    cpu: str
    vendor: str
    arch: str
    logical_cpus: int | None
    isa: tuple[str, ...]
    libraries: tuple[tuple[str, str | None], ...]
    overrides: tuple[tuple[str, str], ...] = ()
    cpu_source: str = ""  # which reader gave the CPU (not hashed: two readers of one CPU agree)

    def parts(self) -> dict[str, Any]:
        """The hashed parts as plain JSON values."""
        return {
            "cpu": self.cpu,
            "vendor": self.vendor,
            "arch": self.arch,
            "logical_cpus": self.logical_cpus,
            "isa": list(self.isa),
            "libraries": dict(self.libraries),
            "overrides": dict(self.overrides),
        }

    @property
    def digest(self) -> str:
        """A short stable hash of :meth:`parts` (the first 12 hex digits of their SHA-256)."""
        text = json.dumps(self.parts(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_CHARS]

    def to_dict(self) -> dict[str, Any]:
        """The envelope's ``machine`` entry: the digest, the parts and the CPU reader."""
        return {"digest": self.digest, **self.parts(), "cpu_source": self.cpu_source}

    def brief(self) -> str:
        """One line for a table: digest, the ISA extensions present, architecture and CPU count."""
        return str(fingerprint_brief(self.to_dict()))


def build_fingerprint(
    cpu: CpuReading,
    versions: Mapping[str, str | None],
    *,
    arch: str | None = None,
    logical_cpus: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Fingerprint:
    """The fingerprint of a CPU reading and library versions (``arch``, CPU count and environment default to
    this process's)."""
    env = os.environ if environ is None else environ
    return Fingerprint(
        cpu=cpu.model,
        vendor=cpu.vendor,
        arch=arch if arch is not None else platform.machine(),
        logical_cpus=logical_cpus if logical_cpus is not None else os.cpu_count(),
        isa=isa_flags(cpu.flags),
        libraries=tuple(sorted(versions.items())),
        overrides=tuple((k, env[k]) for k in CAPABILITY_ENV if env.get(k)),
        cpu_source=cpu.source,
    )


@functools.lru_cache(maxsize=1)
def fingerprint() -> Fingerprint:
    """This process's fingerprint, read once (the CPU and the installed libraries do not change under it)."""
    return build_fingerprint(read_cpu(), library_versions())


def fingerprint_brief(entry: Mapping[str, Any] | None) -> str | None:
    """:meth:`Fingerprint.brief` of an envelope's ``machine`` entry (a dict from :meth:`Fingerprint.to_dict`);
    None when there is none."""
    if not isinstance(entry, Mapping) or not entry.get("digest"):
        return None
    isa = " ".join(entry.get("isa") or ()) or "no listed ISA extension"
    cpus = f", {entry['logical_cpus']} logical CPUs" if entry.get("logical_cpus") else ""
    over = "".join(f"; {k}={v}" for k, v in (entry.get("overrides") or {}).items())
    return f"{entry['digest']}: {isa} ({entry.get('arch', '?')}{cpus}{over})"
