"""Hub ids resolve through the local Hugging Face cache, offline; downloads only when allowed. No network."""

import huggingface_hub
import pytest
from fake_hub_cache import REVISION, FakeDownloader, add_snapshot, config_only_checkpoint

from bench.config import hub
from bench.config.models import DECODER, default_weights, resolve_source
from bench.errors import BadInputError

REPO = "acme/tiny-phi"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return config_only_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture
def cache(tmp_path, monkeypatch, checkpoint):
    root = tmp_path / "hub"
    add_snapshot(root, REPO, checkpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fake = FakeDownloader(huggingface_hub.snapshot_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    return root, fake


@pytest.mark.parametrize(
    "name, expected",
    [
        ("microsoft/Phi-3-mini-4k-instruct", True),
        ("google-bert/bert-base-uncased", True),
        ("phi-3-mini", False),
        ("/abs/path", False),
        ("a/b/c", False),
        ("../x", False),
        ("org/..", False),
    ],
)
def test_hub_ids(name, expected):
    assert hub.is_hub_id(name) is expected


def test_cache_folder_follows_huggingface_hub_precedence(monkeypatch, tmp_path):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub.hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert hub.hub_cache_dir() == tmp_path / "c"


def test_a_cached_hub_id_resolves_offline_to_its_pinned_snapshot(cache):
    root, fake = cache
    path, revision = hub.local_snapshot(REPO)
    assert revision == REVISION and path == root / "models--acme--tiny-phi" / "snapshots" / REVISION
    weights = default_weights(REPO, "random")
    assert weights == f"hub:{REPO}@{REVISION}"
    source = resolve_source(REPO, weights)
    assert source.checkpoint == path and not source.random_weights
    assert source.family == DECODER and source.sliding_window == 2047 and source.name == REPO
    assert fake.downloads == []


def test_registered_names_and_explicit_weights_are_left_alone(cache):
    assert default_weights("phi-3-tiny", "random") == "random"
    assert default_weights(REPO, "checkpoint:/x") == "checkpoint:/x"


@pytest.mark.parametrize(
    "call, text",
    [
        (lambda: hub.local_snapshot("acme/nope"), "acme/nope is not in the local Hugging Face cache"),
        (lambda: default_weights("acme/nope", "random"), "fetch it with `hf download acme/nope`"),
        (lambda: resolve_source(REPO, f"hub:{REPO}@{'f' * 40}"), f"at revision {'f' * 40}"),
        (lambda: resolve_source(REPO, "hub:acme"), "must look like 'hub:org/name@<commit>'"),
    ],
)
def test_missing_models_are_one_line_errors_saying_how_to_fetch(cache, call, text):
    with pytest.raises(BadInputError) as info:
        call()
    message = str(info.value)
    assert text in message and len(message.splitlines()) == 1
    assert cache[1].downloads == []


def test_download_is_refused_while_hf_hub_offline_is_set(cache):
    with pytest.raises(BadInputError, match="HF_HUB_OFFLINE is set, so --allow-download cannot fetch it"):
        hub.fetch_snapshot("acme/other")
    assert cache[1].downloads == []


def test_download_fetches_weights_and_configs_only(cache, monkeypatch, checkpoint):
    root, fake = cache
    monkeypatch.delenv("HF_HUB_OFFLINE")
    fake.source = checkpoint
    path, revision = hub.fetch_snapshot("acme/other")
    assert revision == REVISION and (path / "config.json").is_file()
    (call,) = fake.downloads
    assert call["repo_id"] == "acme/other" and call["cache_dir"] == root
    assert "*.safetensors" in call["allow_patterns"] and not call.get("local_files_only")
    assert hub.local_snapshot("acme/other")[0] == path


def test_a_failed_download_is_one_line(cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(BadInputError, match=r"cannot download acme/other from the Hugging Face hub: OSError: no net"):
        hub.fetch_snapshot("acme/other")
