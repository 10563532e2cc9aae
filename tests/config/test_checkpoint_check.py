"""Checkpoint headers are checked before a run: each bad safetensors file (or shard index) is named."""

import json

import pytest
import torch
from safetensors.torch import save_file

from bench.config.checkpoint_check import safetensors_keys, validate_checkpoint
from bench.errors import BadInputError


@pytest.fixture
def shards(tmp_path):
    save_file(
        {"a.weight": torch.zeros(16, 8), "b.bias": torch.ones(4)}, str(tmp_path / "model-00001-of-00002.safetensors")
    )
    save_file({"c.weight": torch.zeros(2, 2, dtype=torch.float16)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    index = {
        "metadata": {},
        "weight_map": {
            "a.weight": "model-00001-of-00002.safetensors",
            "b.bias": "model-00001-of-00002.safetensors",
            "c.weight": "model-00002-of-00002.safetensors",
        },
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    return sorted(tmp_path.glob("*.safetensors"))


def test_a_whole_checkpoint_passes(shards):
    assert validate_checkpoint(shards) == shards
    assert safetensors_keys(shards[0]) == {"a.weight", "b.bias"}


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) - 10],  # cut short by a copy
        lambda data: data + b"\0" * 7,  # bytes no tensor covers
        lambda data: b"\xff" * 8 + data[8:],  # header length past the end of the file
        lambda data: data[:8] + b"[" + data[9:],  # the JSON header broken
        lambda data: b"",
    ],
    ids=["truncated", "trailing-bytes", "header-length", "header-json", "empty"],
)
def test_a_damaged_file_is_named(shards, damage):
    bad = shards[1]
    bad.write_bytes(damage(bad.read_bytes()))
    with pytest.raises(BadInputError, match=f"{bad} is not a valid safetensors file") as err:
        validate_checkpoint(shards)
    assert "\n" not in str(err.value)


def test_an_index_naming_a_tensor_its_shard_lacks_is_refused(shards, tmp_path):
    save_file({"other": torch.zeros(2)}, str(shards[1]))
    with pytest.raises(BadInputError, match="lacks tensor 'c.weight'"):
        validate_checkpoint(shards)
    (tmp_path / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(BadInputError, match="is not a valid shard index"):
        validate_checkpoint(shards)


def test_other_weight_formats_pass_through(tmp_path):
    legacy = tmp_path / "pytorch_model.bin"
    legacy.write_bytes(b"not checked")
    assert validate_checkpoint([legacy]) == [legacy]
