"""``bench run --model org/name`` (local Hugging Face cache), ``--allow-download`` and ``--cache``. No network."""

import huggingface_hub
import pytest
from fake_hub_cache import REVISION, FakeDownloader, add_snapshot, config_only_checkpoint, save_tiny_checkpoint

from bench.cli import main
from bench.results.run_folder import RunFolder

REPO = "acme/tiny-phi"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fake = FakeDownloader(huggingface_hub.snapshot_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    return root, fake


def _run(capsys, *argv):
    code = main(["run", *argv])
    return code, capsys.readouterr().err.strip()


def test_a_hub_id_missing_from_the_cache_is_exit_2_saying_how_to_fetch(capsys, tmp_path, hub_cache):
    code, err = _run(capsys, "--model", "acme/nope", "--device", "cpu", "--out", str(tmp_path / "o"))
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("bench: error: acme/nope is not in")
    assert "`hf download acme/nope`" in err and "--allow-download" in err
    assert hub_cache[1].downloads == [] and not (tmp_path / "o").exists()


def test_allow_download_stays_offline_while_hf_hub_offline_is_set(capsys, tmp_path, hub_cache):
    code, err = _run(
        capsys, "--model", "acme/nope", "--allow-download", "--device", "cpu", "--out", str(tmp_path / "o")
    )
    lines = err.splitlines()
    assert code == 2 and "HF_HUB_OFFLINE is set: --allow-download downloads nothing" in lines[0]
    assert lines[-1].startswith("bench: error: acme/nope is not complete") and "unset HF_HUB_OFFLINE" in lines[-1]
    assert hub_cache[1].downloads == [] and not any("downloading" in line for line in lines)


def test_allow_download_fetches_a_missing_model_once(hub_cache, tmp_path, monkeypatch):
    from bench.commands.run_cmd import _fetch_hub_models

    monkeypatch.delenv("HF_HUB_OFFLINE")
    root, fake = hub_cache
    fake.source = config_only_checkpoint(tmp_path / "src")
    _fetch_hub_models([REPO, "phi-3-tiny"], allow_download=True)
    _fetch_hub_models([REPO], allow_download=True)  # now cached: no second download
    assert [d["repo_id"] for d in fake.downloads] == [REPO]
    assert (root / "models--acme--tiny-phi" / "snapshots" / REVISION / "config.json").is_file()


def test_an_incomplete_snapshot_is_refused_without_allow_download(capsys, tmp_path, hub_cache):
    snapshot = add_snapshot(hub_cache[0], REPO, config_only_checkpoint(tmp_path / "src"))
    (snapshot / "model.safetensors").unlink()
    code, err = _run(capsys, "--model", REPO, "--device", "cpu", "--out", str(tmp_path / "o"))
    assert code == 2 and "has no *.safetensors" in err


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), sliding_window=16)


@pytest.mark.slow
def test_run_measures_the_cached_snapshot_and_records_the_hub_id(capsys, tmp_path, hub_cache, tiny_checkpoint):
    add_snapshot(hub_cache[0], REPO, tiny_checkpoint)
    out = tmp_path / "run"
    argv = ["--model", REPO, "--device", "cpu", "--precision", "fp32", "--context", "20", "--new-tokens", "3"]
    code, err = _run(capsys, *argv, "--repetitions", "1", "--out", str(out), "--quiet", "--no-report")
    assert code == 0, err
    (record,) = RunFolder(out).load_records()
    assert record.status == "ok", record.error
    assert record.spec.model == REPO and record.spec.weights == f"hub:{REPO}@{REVISION}"
    assert record.model_info["random_weights"] is False and "random_weights" not in record.flags
    m = record.memory
    assert (m.cache_policy, m.cache_window_tokens, m.kv_cache_tokens) == ("window", 16, 15)
    assert hub_cache[1].downloads == []


@pytest.mark.slow
def test_full_cache_on_a_checkpoint_removes_its_window(hub_cache, tiny_checkpoint):
    from bench.config.spec import CaseSpec, TimingPolicy
    from bench.measure.case_runner import CaseRunner

    add_snapshot(hub_cache[0], REPO, tiny_checkpoint)
    runner = CaseRunner()
    policy = TimingPolicy(warmup_runs=0, min_repetitions=1, max_repetitions=1)
    weights = f"hub:{REPO}@{REVISION}"
    try:
        full = runner.run(CaseSpec(REPO, "fp32", "generate", 1, 20, 3, weights=weights, cache="full"), policy)
        window = runner.run(CaseSpec(REPO, "fp32", "generate", 1, 20, 3, weights=weights), policy)
    finally:
        runner.release("cpu")
    assert full.status == window.status == "ok", (full.error, window.error)
    assert (full.memory.cache_policy, full.memory.kv_cache_tokens, full.memory.cache_window_tokens) == (
        "full",
        22,
        None,
    )
    assert "full_cache" in full.flags
    assert (window.memory.cache_policy, window.memory.kv_cache_tokens) == ("window", 15)
    assert full.memory.kv_cache_bytes == 22 * 2 * 2 * 256 * 4 and window.memory.kv_cache_bytes == 15 * 2 * 2 * 256 * 4
