"""The environment envelope of a run: hardware, drivers, library versions, harness commit, time.

It is written into the run folder by :meth:`bench.results.run_folder.RunFolder.record_environment`.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from bench.config import machine
from bench.measure.case_runner import cpu_name
from bench.units import utc_now


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The harness's git commit (with '+dirty' when the tree has changes), or None outside a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _ram_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        return None


def cuda_available() -> bool:
    """True when torch sees a CUDA device (imports torch, does not create a context)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def _gpus() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from bench.measure.telemetry.gpu_state import inspect_gpus

    state: dict[str, Any] = inspect_gpus()
    gpus = [{k: g.get(k) for k in ("index", "name", "uuid", "memory_bytes")} for g in state.get("gpus", [])]
    if not gpus and cuda_available():
        import torch

        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append(
                {
                    "index": i,
                    "name": props.name,
                    "uuid": str(getattr(props, "uuid", "")),
                    "memory_bytes": int(props.total_memory),
                }
            )
    return gpus, state


def collect_environment(suite: str = "", argv: list[str] | None = None, *, detection: Any = None) -> dict[str, Any]:
    """Everything a reader needs to trust or reproduce a run.

    ``cuda`` is the CUDA torch was built for, ``cuda_driver`` the newest CUDA the driver supports (from
    ``detection``, a :class:`~bench.measure.cuda_usability.GpuDetection`, or asked of the driver here).
    """
    from bench.measure.cuda_usability import driver_facts

    torch_version = _version("torch")
    cuda = None
    try:
        import torch

        cuda = torch.version.cuda
    except ImportError:
        pass
    driver_view = detection.driver if detection is not None else driver_facts()
    gpus, state = _gpus()
    drivers = {g.get("driver") for g in state.get("gpus", []) if g.get("driver")}
    driver = ", ".join(sorted(drivers)) or None
    return {
        "run_id": uuid.uuid4().hex[:12],
        "created_utc": utc_now(),
        "suite": suite,
        "host": socket.gethostname(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "ram_bytes": _ram_bytes(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch_version,
        "transformers": _version("transformers"),
        "bitsandbytes": _version("bitsandbytes"),
        "accelerate": _version("accelerate"),
        "llama_cpp_python": _version("llama_cpp_python"),  # the llama.cpp engine's binding (None: not installed)
        "gguf": _version("gguf"),
        "harness": _version("llm-bench"),
        "cuda": cuda,
        "cuda_driver": driver_view.cuda_driver,
        "driver": driver or driver_view.driver,
        "gpus": gpus,
        "gpu_state": state,
        "git_commit": git_commit(),
        "argv": list(argv if argv is not None else sys.argv),
        "machine": machine.fingerprint().to_dict(),  # CPU, ISA extensions, library versions and their hash
    }
