"""The registered models are the checkpoints' own config.json files, field for field, plus named overrides."""

import hashlib
import json
import subprocess
import sys
from importlib import resources

import pytest

from bench.config.models import MODELS, ModelEntry, checkpoint_json, get_model

# SHA-256 of the published files (copied byte for byte from the hub repositories' main branch).
SHIPPED = {
    "microsoft--Phi-3-mini-4k-instruct.json": "93b8ac65a3a142a33d492fdfc14461d86aa6e8c7701f188a0f42d8daa74346af",
    "google-bert--bert-base-uncased.json": "7160e1553ad2ca51d8c1cb066be533db31826e12d173824c1bb0cb1a4f187d20",
}

# Keys of config.json that transformers 5 does not give back verbatim from to_dict(), and why:
#  - torch_dtype: renamed to "dtype" (the value is kept);
#  - transformers_version: rewritten to the running version on every to_dict();
#  - rope_theta / rope_scaling: folded into "rope_parameters" (rope_scaling null = the "default" rope type).
RENAMED = {"torch_dtype", "transformers_version", "rope_theta", "rope_scaling"}


@pytest.mark.parametrize("name, digest", sorted(SHIPPED.items()))
def test_shipped_files_are_the_published_bytes(name, digest):
    data = resources.files("bench.config").joinpath("checkpoints", name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest


def test_checkpoint_facts_the_claims_depend_on():
    phi = checkpoint_json("microsoft/Phi-3-mini-4k-instruct")
    assert phi["sliding_window"] == 2047 and phi["max_position_embeddings"] == 4096
    assert (phi["hidden_size"], phi["num_hidden_layers"], phi["num_key_value_heads"]) == (3072, 32, 32)
    bert = checkpoint_json("google-bert/bert-base-uncased")
    assert (bert["hidden_size"], bert["num_hidden_layers"], bert["max_position_embeddings"]) == (768, 12, 512)


def _expected(entry: ModelEntry) -> dict:
    data = checkpoint_json(entry.reproduces)
    data.update(dict(entry.overrides))
    return data


@pytest.mark.parametrize("name", sorted(MODELS))
def test_built_config_is_the_file_plus_named_overrides(name):
    import transformers

    entry = get_model(name)
    expected = _expected(entry)
    built = entry.config().to_dict()
    for key, value in expected.items():
        if key not in RENAMED:
            assert built[key] == value, f"{name}: {key} is {built[key]!r}, the file plus overrides say {value!r}"
    if "torch_dtype" in expected:
        assert built["dtype"] == expected["torch_dtype"]
    assert built["transformers_version"] == transformers.__version__
    if "rope_theta" in expected:
        assert built["rope_parameters"]["rope_theta"] == expected["rope_theta"]
        assert expected["rope_scaling"] is None and built["rope_parameters"]["rope_type"] == "default"
    assert type(entry.config()).__name__ == entry.architecture
    assert built["model_type"] == checkpoint_json(entry.reproduces)["model_type"]


def test_overrides_change_only_sizes_and_keep_the_window():
    for name in ("phi-3-mini-2l", "phi-3-tiny", "bert-base-2l", "bert-tiny"):
        keys = {k for k, _ in get_model(name).overrides}
        assert keys <= {
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
        }, name
    assert get_model("phi-3-mini").overrides == () and get_model("bert-base").overrides == ()
    for name in ("phi-3-mini", "phi-3-mini-2l", "phi-3-tiny"):
        assert get_model(name).config().sliding_window == 2047
        assert get_model(name).sliding_window == 2047 and get_model(name).max_positions == 4096
    assert get_model("bert-tiny").sliding_window is None and get_model("bert-tiny").max_positions == 512


def test_an_override_of_a_field_the_file_lacks_is_refused():
    entry = ModelEntry("x", "decoder", "Phi3Config", "microsoft/Phi-3-mini-4k-instruct", "", (("hidden_sise", 8),))
    with pytest.raises(ValueError, match="'hidden_sise' is not a field"):
        entry.config_dict()


def test_registry_reads_json_without_torch_or_transformers():
    code = (
        "import json, sys; from bench.config.models import MODELS; "
        "print(json.dumps({m.name: [m.max_positions, m.sliding_window] for m in MODELS.values()})); "
        "print(json.dumps(sorted(k for k in ('torch', 'transformers') if k in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert json.loads(out[0])["phi-3-mini"] == [4096, 2047] and json.loads(out[0])["bert-base"] == [512, None]
    assert json.loads(out[1]) == []
