"""Shipped GPU profiles are package data: found from an installed package with no checkout around it; a
user's copy in ``profiles/gpus`` takes precedence; ``bench profile`` never writes into the package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bench.config import hardware
from bench.config.hardware import HardwareProfile, get_profile, load_profiles, save_profile
from bench.units import GiB

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_FILES = sorted(p.name for p in hardware.shipped_profiles_dir().glob("*.toml"))


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The package as if installed in site-packages (no checkout above it), run from an unrelated folder."""
    site = tmp_path / "site-packages"
    monkeypatch.setattr(hardware, "__file__", str(site / "bench" / "config" / "hardware.py"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv(hardware.PROFILES_ENV, raising=False)
    return elsewhere


def test_the_shipped_profiles_sit_inside_the_package():
    """Inside the imported package, wherever it is installed (a checkout, or site-packages under nox)."""
    import bench

    assert hardware.shipped_profiles_dir().is_relative_to(Path(bench.__file__).resolve().parent)
    assert len(SHIPPED_FILES) >= 20 and "tesla-t4.toml" in SHIPPED_FILES


def test_without_a_checkout_the_shipped_profiles_are_found(installed):
    assert hardware.user_profiles_dir() == installed / "profiles" / "gpus"
    names = {p.path.name for p in load_profiles()}
    assert names == set(SHIPPED_FILES)
    assert get_profile("T4").memory_bytes == 16 * GiB


def test_a_user_copy_takes_precedence_over_the_shipped_one(installed):
    t4 = get_profile("Tesla T4")
    save_profile(HardwareProfile(name=t4.name, memory_bytes=15 * GiB, memory_bandwidth_bytes_per_s=3e11),
                 installed / "profiles" / "gpus" / "my-t4.toml")
    pool = load_profiles()
    assert get_profile("Tesla T4", pool).memory_bytes == 15 * GiB
    assert len(pool) == len(SHIPPED_FILES)  # replaced, not added


def test_bench_profile_writes_a_shipped_cards_figures_to_the_user_folder(installed):
    from bench.measure.device_profile import default_profile_path

    shipped = get_profile("H200")
    assert shipped.path is not None and shipped.path.parent == hardware.shipped_profiles_dir()
    assert Path(default_profile_path(shipped)) == installed / "profiles" / "gpus" / "h200.toml"
    cpu = HardwareProfile(name="AMD EPYC (vm)", kind="cpu", memory_bytes=GiB, memory_bandwidth_bytes_per_s=1e10)
    assert Path(default_profile_path(cpu)).parent == installed / "profiles" / "hosts"


@pytest.mark.slow
def test_a_built_wheel_carries_every_shipped_profile_and_finds_them_outside_a_checkout(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "bench", src / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(src)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # about 6 s on a loaded 2-core host
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(tmp_path.glob("llm_bench-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        packed = sorted(Path(n).name for n in zf.namelist() if n.startswith("bench/config/profiles/gpus/"))
        assert packed == SHIPPED_FILES
        site = tmp_path / "site"
        zf.extractall(site)  # what pip puts in site-packages for a pure-Python wheel
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import json; from bench.config.hardware import load_profiles, shipped_profiles_dir; "
        "print(json.dumps([str(shipped_profiles_dir()), sorted(p.path.name for p in load_profiles())]))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", hardware.PROFILES_ENV)}
    env["PYTHONPATH"] = str(site)
    done = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    where, found = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(where).is_relative_to(site) and found == SHIPPED_FILES
