"""Shared fixtures: a private model cache, quiet libraries, and the gpu marker's skip."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Shared fakes (fake NVML, synthetic and report records) import by module name from every test folder.
sys.path.insert(0, str(Path(__file__).resolve().parent / "fakes"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["BENCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("bench-cache"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def trained_tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Phi-3 trained for seconds on the evaluation text, saved as a local checkpoint (fakes/trained_tiny)."""
    from trained_tiny import train_tiny_phi3

    path = tmp_path_factory.mktemp("trained-tiny-phi3")
    train_tiny_phi3(path)
    return path
