import pytest

from bench.config.models import DECODER, ENCODER, checkpoint_files, get_model, resolve_source
from bench.config.precision import get_precision
from bench.errors import BadInputError
from bench.measure.loader import build_random, load_model
from bench.measure.quantization import inspect_quantization, weights_bytes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def phi_weights():
    src = resolve_source("phi-3-tiny", "random")
    out = {}
    for name in ("fp32", "fp16", "int8", "nf4", "nf4-dq"):
        loaded = load_model(src, get_precision(name), "cpu")
        out[name] = loaded
    return out


def test_weight_bytes_shrink_with_precision(phi_weights):
    b = {k: v.quantization["weights_bytes"] for k, v in phi_weights.items()}
    assert b["fp32"] > b["fp16"] > b["int8"] > b["nf4"] > b["nf4-dq"]
    assert abs(b["fp32"] - 2 * b["fp16"]) <= 1024  # the fp32 rotary buffer stays fp32


def test_quantization_really_applied(phi_weights):
    for name in ("int8", "nf4", "nf4-dq"):
        q = phi_weights[name].quantization
        # 2 layers x (qkv, o, gate_up, down) are quantized; lm_head stays 16-bit
        assert q["quantized_linear_layers"] == 8
        assert q["unquantized_linear_names"] == ["lm_head"]
    assert phi_weights["int8"].quantization["parameter_dtypes"].get("int8") == 8
    assert phi_weights["nf4"].quantization["parameter_dtypes"].get("uint8") == 8
    assert phi_weights["fp16"].quantization["quantized_linear_layers"] == 0


def test_4bit_state_counted_beyond_parameters(phi_weights):
    model = phi_weights["nf4"].model
    plain = sum(p.numel() * p.element_size() for p in model.parameters())
    plain += sum(b.numel() * b.element_size() for b in model.buffers())
    assert weights_bytes(model) > plain  # absmax lives outside parameters and buffers


def test_unquantized_model_is_refused_as_quantized(phi_weights):
    with pytest.raises(RuntimeError, match="no linear layer was quantized"):
        inspect_quantization(phi_weights["fp16"].model, get_precision("int8"))


def test_random_weights_are_finite_and_not_zero():
    model = build_random(resolve_source("bert-tiny", "random"), "float32", "cpu")
    w = model.encoder.layer[0].attention.self.query.weight
    assert not w.requires_grad
    assert w.isfinite().all() and 0.01 < float(w.std()) < 0.03


def test_full_size_configs_match_reference():
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    with torch.device("meta"):
        phi = AutoModelForCausalLM.from_config(get_model("phi-3-mini").config())
        bert = AutoModel.from_config(get_model("bert-base").config())
    assert sum(p.numel() for p in phi.parameters()) == 3_821_079_552
    assert sum(p.numel() for p in bert.parameters()) == 109_482_240
    assert get_model("phi-3-mini").max_positions == 4096 and get_model("bert-base").max_positions == 512


@pytest.mark.parametrize("name, family", [("phi-3-tiny", DECODER), ("bert-tiny", ENCODER)])
def test_checkpoint_directory_loads_by_path(tmp_path, name, family):
    model = build_random(resolve_source(name, "random"), "float32", "cpu")
    model.save_pretrained(str(tmp_path))
    src = resolve_source("mine", f"checkpoint:{tmp_path}")
    assert src.family == family and not src.random_weights
    loaded = load_model(src, get_precision("fp32"), "cpu")
    assert loaded.info["random_weights"] is False
    assert weights_bytes(loaded.model) == weights_bytes(model)


def test_incomplete_checkpoints_are_refused(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        checkpoint_files(tmp_path / "missing")
    with pytest.raises(BadInputError, match="no config.json"):
        checkpoint_files(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BadInputError, match="no \\*.safetensors"):
        checkpoint_files(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text('{"weight_map": {"a": "model-00001-of-00002.safetensors"}}')
    with pytest.raises(BadInputError, match="missing shard"):
        checkpoint_files(tmp_path)
