"""``bench profile``: measure a device with :mod:`bench.measure.device_probes` and make it a hardware profile.

On a GPU: a large device-to-device copy timed with CUDA events (bandwidth = bytes read plus written per
second), fp16 and bf16 matrix products (FLOP/s), the CUDA context's device memory read from NVML before and
after CUDA initialisation, and the driver and CUDA versions. On a CPU: the host equivalents.
"""

from __future__ import annotations

from bench.config.hardware import HardwareProfile, find_profile, load_profiles
from bench.measure.device_probes import host_memory_bytes, measure_cpu, measure_cuda
from bench.units import slugify


def profile_device(
    device: str | None = None, *, quick: bool = False, profiles: list[HardwareProfile] | None = None
) -> HardwareProfile:
    """Measure ``device`` (default: the first CUDA GPU, else the CPU) and return its profile.

    A GPU that matches a known profile keeps that profile's datasheet figures and sources and gains the
    measured section; an unknown GPU gets a profile whose figures are the measured ones.
    """
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        measured = measure_cpu(quick=quick)
        name = f"{measured.device_name} ({measured.host})"
        return HardwareProfile(
            name=name,
            kind="cpu",
            memory_bytes=host_memory_bytes(),
            memory_bandwidth_bytes_per_s=float(measured.memory_bandwidth_bytes_per_s or 0),
            sources={
                "memory_bytes": "measured: host RAM (psutil)",
                "memory_bandwidth_bytes_per_s": "measured: host tensor copy (bench profile)",
            },
            measured=measured,
        )
    measured = measure_cuda(device, quick=quick)
    pool = profiles if profiles is not None else load_profiles()
    known = find_profile(measured.device_name or "", pool)
    if known is not None:
        return known.with_measured(measured)
    return HardwareProfile(
        name=measured.device_name or device,
        kind="cuda",
        memory_bytes=int(measured.device_total_bytes or 0),
        memory_bandwidth_bytes_per_s=float(measured.memory_bandwidth_bytes_per_s or 0),
        aliases=(),
        measured=measured,
        sources={
            "memory_bytes": "measured: total memory the driver reports (no datasheet profile yet)",
            "memory_bandwidth_bytes_per_s": "measured: device-to-device copy (no datasheet profile yet)",
        },
    )


def default_profile_path(profile: HardwareProfile) -> str:
    """Where ``bench profile`` writes by default: the card's file in the user's profiles/gpus, or profiles/hosts
    for a CPU; a shipped profile (package data) is never written over: its measured copy goes to the user's
    folder, where it takes precedence."""
    from bench.config.hardware import shipped_profiles_dir, user_profiles_dir

    shipped = profile.path is not None and profile.path.resolve().parent == shipped_profiles_dir().resolve()
    if profile.path is not None and not shipped:
        return str(profile.path)
    folder = user_profiles_dir() if profile.kind == "cuda" else user_profiles_dir().parent / "hosts"
    return str(folder / f"{slugify(profile.name)}.toml")
