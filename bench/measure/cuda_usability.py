"""Does this machine have an NVIDIA GPU, and can torch use it? The driver's view beside torch's.

``torch.cuda.is_available()`` alone cannot tell "no GPU" from "a GPU torch cannot use": a torch built
for CUDA 13.0 on a driver that supports CUDA 12.4, or a CPU-only torch build, both say False. The
driver is asked separately, through NVML (``nvmlSystemGetDriverVersion``,
``nvmlSystemGetCudaDriverVersion``) or, without NVML, ``nvidia-smi``. A GPU the driver sees and torch
cannot use is a :data:`MISMATCH`, and :func:`mismatch_message` says what to install instead.

The NVML module, the ``nvidia-smi`` runner and torch's facts are parameters, so tests pass fakes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.measure.telemetry.gpu_state import call, close_nvml, open_nvml, parse_visible_devices, text

USABLE = "usable"  # torch can use a CUDA device
NO_GPU = "no_gpu"  # neither the driver nor torch sees a GPU
HIDDEN = "hidden"  # the driver sees GPUs, CUDA_VISIBLE_DEVICES hides every one of them
MISMATCH = "mismatch"  # the driver sees a GPU, torch cannot use it

# The CUDA builds download.pytorch.org publishes wheels for (https://download.pytorch.org/whl/<tag>).
TORCH_CUDA_TAGS = ("cu118", "cu121", "cu124", "cu126", "cu128", "cu129", "cu130")
TORCH_INDEX = "https://download.pytorch.org/whl/"


@dataclass(frozen=True)
class DriverFacts:
    """What the NVIDIA driver reports: the GPUs it sees, its version and the newest CUDA it supports."""

    source: str  # "nvml", "nvidia-smi" or "none"
    gpus: tuple[str, ...] = ()  # GPU names
    driver: str | None = None  # e.g. "550.54.15"
    cuda_driver: str | None = None  # e.g. "12.4" (NVML's 12040)
    reason: str | None = None  # why nothing could be read, when nothing could


@dataclass(frozen=True)
class TorchFacts:
    """What torch reports: its version, the CUDA it was built for (None: a CPU-only build), whether it sees a GPU."""

    version: str | None  # None: torch is not installed
    built_cuda: str | None
    cuda_available: bool
    device_count: int = 0


@dataclass(frozen=True)
class GpuDetection:
    """The driver's facts, torch's facts and the verdict drawn from both (USABLE, NO_GPU, HIDDEN or MISMATCH)."""

    driver: DriverFacts
    torch: TorchFacts
    verdict: str
    visible: str | None = None  # CUDA_VISIBLE_DEVICES as found

    @property
    def usable(self) -> bool:
        """True when torch can run on a CUDA device."""
        return self.verdict == USABLE


def cuda_version_text(code: Any) -> str | None:
    """NVML's integer CUDA version as text: ``12040`` -> ``"12.4"``, ``13000`` -> ``"13.0"``; None if unknown."""
    try:
        value = int(code)
    except (TypeError, ValueError):
        return None
    if value <= 0:
        return None
    return f"{value // 1000}.{value % 1000 // 10}"


def version_tuple(version: str | None) -> tuple[int, ...] | None:
    """``"12.4"`` -> ``(12, 4)``; None for None or text that is not dotted numbers."""
    if not version or not re.fullmatch(r"\d+(\.\d+)*", version.strip()):
        return None
    return tuple(int(p) for p in version.strip().split("."))


def torch_cuda_tag(cuda_driver: str | None) -> str | None:
    """The newest torch wheel build a driver supporting CUDA ``cuda_driver`` runs (``"12.4"`` -> ``"cu124"``)."""
    supported = version_tuple(cuda_driver)
    if supported is None:
        return None
    fitting = [tag for tag in TORCH_CUDA_TAGS if (int(tag[2:-1]), int(tag[-1])) <= supported[:2]]
    return fitting[-1] if fitting else None


def driver_from_nvml(nvml: Any = None) -> DriverFacts:
    """The driver's facts through NVML (``nvml`` None: import pynvml); ``source="none"`` with a reason if it fails."""
    lib, reason = open_nvml(nvml)
    if lib is None:
        return DriverFacts("none", reason=f"NVML: {reason}")
    try:
        count, reason = call(lib, "nvmlDeviceGetCount")
        names = []
        for i in range(int(count or 0)):
            handle, _ = call(lib, "nvmlDeviceGetHandleByIndex", i)
            name, _ = call(lib, "nvmlDeviceGetName", handle) if handle is not None else (None, None)
            names.append(text(name) if name is not None else f"GPU {i}")
        driver, _ = call(lib, "nvmlSystemGetDriverVersion")
        cuda, _ = call(lib, "nvmlSystemGetCudaDriverVersion")
    finally:
        close_nvml(lib)
    return DriverFacts(
        "nvml",
        tuple(names),
        text(driver) if driver is not None else None,
        cuda_version_text(cuda),
        None if count is not None else f"NVML: {reason}",
    )


def _run_smi(args: Sequence[str]) -> str | None:
    """``nvidia-smi ARGS``'s standard output, or None when it is missing, fails or hangs."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def driver_from_smi(run: Callable[[Sequence[str]], str | None] = _run_smi) -> DriverFacts:
    """The driver's facts from ``nvidia-smi`` (GPU names and driver from a query, CUDA from its banner)."""
    listing = run(["--query-gpu=name,driver_version", "--format=csv,noheader"])
    if listing is None:
        return DriverFacts("none", reason="nvidia-smi is not installed or failed")
    rows = [[part.strip() for part in line.split(",")] for line in listing.splitlines() if line.strip()]
    banner = run([]) or ""
    cuda = re.search(r"CUDA Version:\s*([0-9.]+)", banner)
    return DriverFacts(
        "nvidia-smi",
        tuple(r[0] for r in rows),
        next((r[1] for r in rows if len(r) > 1 and r[1]), None),
        cuda.group(1) if cuda else None,
    )


def driver_facts(nvml: Any = None, smi: Callable[[Sequence[str]], str | None] = _run_smi) -> DriverFacts:
    """The driver's facts from NVML, else from ``nvidia-smi``; ``source="none"`` when neither answers."""
    facts = driver_from_nvml(nvml)
    if facts.source != "none":
        return facts
    fallback = driver_from_smi(smi)
    if fallback.source != "none":
        return fallback
    return DriverFacts("none", reason=f"{facts.reason}; {fallback.reason}")


def torch_facts() -> TorchFacts:
    """What the installed torch says about CUDA (imports torch; creates no CUDA context)."""
    try:
        import torch
    except ImportError:
        return TorchFacts(None, None, False)
    available = bool(torch.cuda.is_available())
    return TorchFacts(
        str(torch.__version__),
        torch.version.cuda,
        available,
        int(torch.cuda.device_count()) if available else 0,
    )


def judge(driver: DriverFacts, torch: TorchFacts, visible: str | None) -> str:
    """The verdict of a driver's and torch's facts under ``CUDA_VISIBLE_DEVICES`` = ``visible``."""
    if torch.cuda_available:
        return USABLE
    if not driver.gpus:
        return NO_GPU
    if parse_visible_devices(visible) == []:
        return HIDDEN
    return MISMATCH


def detect_gpu(
    nvml: Any = None,
    *,
    torch: TorchFacts | None = None,
    smi: Callable[[Sequence[str]], str | None] = _run_smi,
    visible: str | None = None,
) -> GpuDetection:
    """The driver's and torch's view of the GPUs and the verdict; ``visible`` defaults to CUDA_VISIBLE_DEVICES."""
    if visible is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    facts = torch if torch is not None else torch_facts()
    driver = driver_facts(nvml, smi)
    return GpuDetection(driver, facts, judge(driver, facts, visible), visible)


def _seen(driver: DriverFacts) -> str:
    names = sorted(set(driver.gpus))
    gpus = f"{len(driver.gpus)} GPU{'s' if len(driver.gpus) != 1 else ''} ({', '.join(names)})"
    version = f"driver {driver.driver}" if driver.driver else "an unknown driver version"
    cuda = f"supports CUDA up to {driver.cuda_driver}" if driver.cuda_driver else "CUDA version not reported"
    via = "NVML" if driver.source == "nvml" else driver.source
    return f"{via} sees {gpus}, {version}, {cuda}"


def _why(driver: DriverFacts, torch: TorchFacts) -> str:
    if torch.version is None:
        return "torch is not installed"
    if torch.built_cuda is None:
        return f"torch {torch.version} is a CPU-only build (torch.version.cuda is None)"
    built, supported = version_tuple(torch.built_cuda), version_tuple(driver.cuda_driver)
    if built is not None and supported is not None and built[:2] > supported[:2]:
        return f"torch {torch.version} is built for CUDA {torch.built_cuda}, which this driver is too old for"
    return (
        f"torch {torch.version} (built for CUDA {torch.built_cuda}) cannot initialise CUDA although the driver "
        "should run it: check the /dev/nvidia* device files (containers), CUDA_VISIBLE_DEVICES, and "
        "python -c 'import torch; torch.cuda.init()'"
    )


def _way_out(driver: DriverFacts, torch: TorchFacts) -> str:
    tag = torch_cuda_tag(driver.cuda_driver)
    built, supported = version_tuple(torch.built_cuda), version_tuple(driver.cuda_driver)
    needs_other_torch = torch.built_cuda is None or (
        built is not None and supported is not None and built[:2] > supported[:2]
    )
    cpu = "or run on the CPU on purpose with --device cpu"
    if not needs_other_torch:
        return cpu[0].upper() + cpu[1:]
    if driver.cuda_driver is None:
        return (
            "Install a torch built for the CUDA your driver supports ('CUDA Version' in nvidia-smi), e.g. "
            f"pip install torch --index-url {TORCH_INDEX}cu124, {cpu}"
        )
    if tag is None:
        return f"Update the NVIDIA driver (no current torch build supports CUDA {driver.cuda_driver}), {cpu}"
    return (
        f"Install a torch built for CUDA {driver.cuda_driver} or older: pip install torch --index-url "
        f"{TORCH_INDEX}{tag} (then 'nox -s bench_system' uses it), {cpu}"
    )


def mismatch_message(detection: GpuDetection) -> str:
    """One line for a GPU torch cannot use: what the driver sees and supports, torch's build, the way out."""
    return f"{_seen(detection.driver)}, but {_why(detection.driver, detection.torch)}. " + _way_out(
        detection.driver, detection.torch
    )


def describe(detection: GpuDetection) -> str:
    """Why a run uses the CPU or a GPU, in a few words (for the line that names the chosen suite)."""
    if detection.verdict == USABLE:
        return "a CUDA GPU is available"
    if detection.verdict == HIDDEN:
        return f"CUDA_VISIBLE_DEVICES={detection.visible!r} hides every GPU"
    if detection.verdict == NO_GPU:
        return "no NVIDIA GPU was found" + (f" ({detection.driver.reason})" if detection.driver.reason else "")
    return mismatch_message(detection)
