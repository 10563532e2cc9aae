"""The model registry: architectures by name, full-size and reduced, with their configs."""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BadInputError

DECODER = "decoder"
ENCODER = "encoder"


@dataclass(frozen=True)
class ModelEntry:
    """A named architecture: its family, what it reproduces, and the config overrides that build it."""

    name: str
    family: str  # DECODER | ENCODER
    architecture: str  # transformers config class name
    reproduces: str
    description: str
    overrides: tuple[tuple[str, Any], ...] = field(default=())

    def config(self):  # -> transformers.PretrainedConfig
        """A fresh transformers config for this entry."""
        import transformers

        return getattr(transformers, self.architecture)(**dict(self.overrides))

    @property
    def max_positions(self) -> int:
        """The longest sequence the model accepts (prompt plus new tokens)."""
        return int(self.config().max_position_embeddings)


_TINY_PHI3 = (
    ("hidden_size", 256),
    ("intermediate_size", 512),
    ("num_hidden_layers", 2),
    ("num_attention_heads", 4),
    ("num_key_value_heads", 4),
    ("vocab_size", 32064),
)
_TINY_BERT = (("hidden_size", 128), ("intermediate_size", 512), ("num_hidden_layers", 2), ("num_attention_heads", 2))

MODELS: dict[str, ModelEntry] = {
    m.name: m
    for m in (
        ModelEntry(
            "phi-3-mini",
            DECODER,
            "Phi3Config",
            "microsoft/Phi-3-mini-4k-instruct",
            "Phi-3-mini, full size: 3.8B parameters, 32 layers, 4K context",
        ),
        ModelEntry(
            "phi-3-mini-2l",
            DECODER,
            "Phi3Config",
            "microsoft/Phi-3-mini-4k-instruct",
            "Phi-3-mini at full width with 2 of its 32 layers (for layer-scaled measurement)",
            (("num_hidden_layers", 2),),
        ),
        ModelEntry(
            "phi-3-tiny",
            DECODER,
            "Phi3Config",
            "microsoft/Phi-3-mini-4k-instruct",
            "Phi-3 architecture shrunk for CPUs and tests: hidden 256, 2 layers",
            _TINY_PHI3,
        ),
        ModelEntry(
            "bert-base",
            ENCODER,
            "BertConfig",
            "bert-base-uncased",
            "BERT-base, full size: 110M parameters, 12 layers, 512 positions",
        ),
        ModelEntry(
            "bert-base-2l",
            ENCODER,
            "BertConfig",
            "bert-base-uncased",
            "BERT-base at full width with 2 of its 12 layers",
            (("num_hidden_layers", 2),),
        ),
        ModelEntry(
            "bert-tiny",
            ENCODER,
            "BertConfig",
            "bert-base-uncased",
            "BERT architecture shrunk for CPUs and tests: hidden 128, 2 layers",
            _TINY_BERT,
        ),
    )
}

_DECODER_SUFFIXES = ("ForCausalLM",)
_ENCODER_TYPES = ("bert", "roberta", "distilbert", "albert", "electra", "xlm-roberta", "deberta", "deberta-v2", "mpnet")


def get_model(name: str) -> ModelEntry:
    """Look up a registered model; unknown names list the valid ones and the closest match."""
    try:
        return MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, MODELS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise BadInputError(f"unknown model {name!r}{hint}; choose one of: {', '.join(MODELS)}") from None


def family_of_config(config: Any) -> str:
    """Decoder or encoder, from a transformers config (its architectures list and model type)."""
    archs = list(getattr(config, "architectures", None) or [])
    if any(a.endswith(_DECODER_SUFFIXES) for a in archs):
        return DECODER
    if getattr(config, "model_type", "") in _ENCODER_TYPES:
        return ENCODER
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if getattr(config, "model_type", "") in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return DECODER
    return ENCODER


def checkpoint_files(path: Path) -> list[Path]:
    """Weight files of a local checkpoint directory; raises if the directory is incomplete."""
    if not path.is_dir():
        raise BadInputError(f"checkpoint directory {path} does not exist; pass a folder with config.json and weights")
    if not (path / "config.json").is_file():
        raise BadInputError(f"checkpoint directory {path} has no config.json; save it with save_pretrained()")
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError) as exc:
                raise BadInputError(f"{index} is not a valid shard index ({exc})") from exc
            missing = [s for s in shards if not (path / s).is_file()]
            if missing:
                raise BadInputError(f"checkpoint {path} is incomplete: missing shard(s) {', '.join(missing)}")
            return [path / s for s in shards]
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise BadInputError(f"checkpoint directory {path} has no *.safetensors or pytorch_model.bin weights")
    return files


def checkpoint_config(path: Path):  # -> transformers.PretrainedConfig
    """The config of a local checkpoint directory (never reaches the network)."""
    from transformers import AutoConfig

    checkpoint_files(path)
    try:
        return AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (ValueError, OSError, KeyError) as exc:
        raise BadInputError(f"cannot read {path / 'config.json'}: {exc}") from exc


@dataclass(frozen=True)
class ModelSource:
    """Where a case's model comes from: a registry entry with random weights, or a checkpoint."""

    name: str
    family: str
    max_positions: int
    config_factory: Callable[[], Any]
    checkpoint: Path | None = None

    @property
    def random_weights(self) -> bool:
        """True when weights are random (built from the config)."""
        return self.checkpoint is None


def resolve_source(model: str, weights: str) -> ModelSource:
    """The model source of a case spec's ``model`` and ``weights`` fields."""
    if weights == "random":
        entry = get_model(model)
        return ModelSource(entry.name, entry.family, entry.max_positions, entry.config)
    if weights.startswith("checkpoint:"):
        path = Path(weights.split(":", 1)[1]).expanduser()
        config = checkpoint_config(path)
        positions = int(getattr(config, "max_position_embeddings", 0) or 1 << 30)
        return ModelSource(model, family_of_config(config), positions, lambda: config, path)
    raise BadInputError(f"weights {weights!r} must be 'random' or 'checkpoint:<dir>'")
