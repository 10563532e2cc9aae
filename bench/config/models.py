"""The model registry: architectures by name, full-size and reduced, built from the checkpoints' own config.json.

Every registered model is the shipped config.json of the checkpoint it reproduces (``bench/config/checkpoints``,
copied byte for byte from the hub) with only the named overrides of its entry changed. The files are read with
the standard library; transformers is imported only when a config object is built (:meth:`ModelEntry.config`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bench.errors import BadInputError

DECODER = "decoder"
ENCODER = "encoder"

# What a decoder's KV cache keeps: "config" (what the checkpoint's config says), "window" (the config's sliding
# window, refused where it has none) or "full" (the same model with the window removed: every token is kept).
CACHE_POLICIES = ("config", "window", "full")
DEFAULT_CACHE = "config"


def checkpoint_file_name(hub_id: str) -> str:
    """The shipped config file of a hub repository: ``org/name`` -> ``org--name.json``."""
    return hub_id.replace("/", "--") + ".json"


@functools.cache
def _checkpoint_text(hub_id: str) -> str:
    ref = resources.files("bench.config").joinpath("checkpoints", checkpoint_file_name(hub_id))
    try:
        return ref.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInputError(f"no shipped config.json for {hub_id!r} under bench/config/checkpoints") from None


def checkpoint_json(hub_id: str) -> dict[str, Any]:
    """The shipped config.json of ``hub_id`` as published (a fresh dict on every call)."""
    return json.loads(_checkpoint_text(hub_id))


@dataclass(frozen=True)
class ModelEntry:
    """A named architecture: its family, the checkpoint it reproduces, and the config fields it changes."""

    name: str
    family: str  # DECODER | ENCODER
    architecture: str  # transformers config class name
    reproduces: str  # hub id; its config.json ships as bench/config/checkpoints/<org>--<name>.json
    description: str
    overrides: tuple[tuple[str, Any], ...] = field(default=())

    def config_dict(self) -> dict[str, Any]:
        """The checkpoint's config.json with this entry's overrides applied (plain JSON values, a new dict)."""
        data = checkpoint_json(self.reproduces)
        for key, value in self.overrides:
            if key not in data:
                raise ValueError(f"model {self.name}: override {key!r} is not a field of {self.reproduces}'s config")
            data[key] = value
        return data

    def config(self):  # -> transformers.PretrainedConfig
        """A fresh transformers config for this entry, built from :meth:`config_dict`."""
        import transformers

        return getattr(transformers, self.architecture).from_dict(self.config_dict())

    @property
    def max_positions(self) -> int:
        """The longest sequence the model accepts (prompt plus new tokens), from the config file."""
        return int(self.config_dict()["max_position_embeddings"])

    @property
    def sliding_window(self) -> int | None:
        """The attention window of the config (tokens), or None where it attends to every earlier token."""
        value = self.config_dict().get("sliding_window")
        return int(value) if value else None


# The reduced variants change only sizes; everything else, the sliding window included, is the checkpoint's.
# phi-3-tiny keeps Phi-3-mini-4k's sliding_window of 2047 (below its 4096 positions), so a tiny model at more
# than 2047 tokens exercises the same cache policy as the real one.
_TINY_PHI3 = (
    ("hidden_size", 256),
    ("intermediate_size", 512),
    ("num_hidden_layers", 2),
    ("num_attention_heads", 4),
    ("num_key_value_heads", 4),
)
_TINY_BERT = (("hidden_size", 128), ("intermediate_size", 512), ("num_hidden_layers", 2), ("num_attention_heads", 2))
_PHI3 = "microsoft/Phi-3-mini-4k-instruct"
_BERT = "google-bert/bert-base-uncased"

MODELS: dict[str, ModelEntry] = {
    m.name: m
    for m in (
        ModelEntry(
            "phi-3-mini",
            DECODER,
            "Phi3Config",
            _PHI3,
            "Phi-3-mini, full size: 3.8B parameters, 32 layers, 4K context, 2047-token sliding window",
        ),
        ModelEntry(
            "phi-3-mini-2l",
            DECODER,
            "Phi3Config",
            _PHI3,
            "Phi-3-mini at full width with 2 of its 32 layers (for layer-scaled measurement)",
            (("num_hidden_layers", 2),),
        ),
        ModelEntry(
            "phi-3-tiny",
            DECODER,
            "Phi3Config",
            _PHI3,
            "Phi-3 architecture shrunk for CPUs and tests: hidden 256, 2 layers, the real 2047-token window",
            _TINY_PHI3,
        ),
        ModelEntry(
            "bert-base",
            ENCODER,
            "BertConfig",
            _BERT,
            "BERT-base, full size: 110M parameters, 12 layers, 512 positions",
        ),
        ModelEntry(
            "bert-base-2l",
            ENCODER,
            "BertConfig",
            _BERT,
            "BERT-base at full width with 2 of its 12 layers",
            (("num_hidden_layers", 2),),
        ),
        ModelEntry(
            "bert-tiny",
            ENCODER,
            "BertConfig",
            _BERT,
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


def is_gguf_file(path: Path) -> bool:
    """True for a path naming a GGUF file (``.gguf``): weights the llama.cpp engine runs, not a transformers folder."""
    return path.suffix.lower() == ".gguf"


def gguf_fields(path: Path) -> tuple[int | None, str | None]:
    """A GGUF file's trained context length (``<arch>.context_length``) and file type name (``MOSTLY_Q4_0``; None
    when the header does not say), read with ``gguf`` (which maps the file and reads no tensor data)."""
    try:
        import gguf
    except ImportError:
        raise BadInputError(f"{path} is a GGUF file: reading it needs the gguf package; run pip install gguf") from None
    if not path.is_file():
        raise BadInputError(f"GGUF file {path} does not exist")
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path} is not a readable GGUF file: {exc}") from exc
    arch = reader.fields.get("general.architecture")
    field = reader.fields.get(f"{arch.contents()}.context_length") if arch is not None else None
    ftype = reader.fields.get("general.file_type")
    ftype_name = None
    if ftype is not None:
        try:
            ftype_name = gguf.LlamaFileType(int(ftype.contents())).name
        except ValueError:
            ftype_name = str(ftype.contents())
    return (int(field.contents()) if field is not None else None), ftype_name


def _no_config(path: Path) -> Any:
    raise BadInputError(f"{path} is a GGUF file: only --engine llama.cpp runs it (it has no transformers config)")


def checkpoint_config(path: Path):  # -> transformers.PretrainedConfig
    """The config of a local checkpoint directory (never reaches the network)."""
    from transformers import AutoConfig

    checkpoint_files(path)
    try:
        return AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (ValueError, OSError, KeyError) as exc:
        raise BadInputError(f"cannot read {path / 'config.json'}: {exc}") from exc


def config_window(config: Any) -> int | None:
    """The sliding attention window a transformers config applies, in tokens; None where it has none."""
    if getattr(config, "use_sliding_window", True) is False:  # e.g. Qwen2: a window field, switched off
        return None
    value = getattr(config, "sliding_window", None)
    return int(value) if value else None


def apply_cache_policy(config: Any, cache: str) -> Any:
    """``config`` for a cache policy (changed in place and returned): ``full`` removes the sliding window.

    ``full`` sets ``sliding_window`` to None (and any ``sliding_attention`` layer type to ``full_attention``),
    so attention and the KV cache cover every token, as in runtimes that ignore the window.
    """
    if cache == "full":
        if hasattr(config, "sliding_window"):
            config.sliding_window = None
        layer_types = getattr(config, "layer_types", None)
        if layer_types:
            config.layer_types = ["full_attention" if t == "sliding_attention" else t for t in layer_types]
    return config


@dataclass(frozen=True)
class ModelSource:
    """Where a case's model comes from: a registry entry with random weights, or a checkpoint, and its cache policy.

    ``config_factory`` gives the checkpoint's own config (what random checkpoints are built from);
    :meth:`config` gives the config the case runs, with the cache policy applied.
    """

    name: str
    family: str
    max_positions: int
    config_factory: Callable[[], Any]
    checkpoint: Path | None = None
    cache: str = DEFAULT_CACHE
    sliding_window: int | None = None  # the checkpoint config's window, before the cache policy

    @property
    def random_weights(self) -> bool:
        """True when weights are random (built from the config)."""
        return self.checkpoint is None

    @property
    def window_removed(self) -> bool:
        """True when the cache policy removed a window the checkpoint's config has."""
        return self.cache == "full" and self.sliding_window is not None

    def config(self):  # -> transformers.PretrainedConfig
        """A fresh config for the case: the checkpoint's, with the cache policy applied."""
        return apply_cache_policy(self.config_factory(), self.cache)

    def with_cache(self, cache: str) -> ModelSource:
        """This source under cache policy ``cache``; refused for encoders and, for ``window``, window-less configs."""
        _check_cache(self.name, self.family, self.sliding_window, cache)
        return dataclasses.replace(self, cache=cache)


def _check_cache(model: str, family: str, window: int | None, cache: str) -> None:
    if cache not in CACHE_POLICIES:
        raise BadInputError(f"cache policy {cache!r} is not one of {', '.join(CACHE_POLICIES)}")
    if cache == DEFAULT_CACHE:
        return
    if family != DECODER:
        raise BadInputError(
            f"model {model} is an encoder and keeps no KV cache, so cache policy {cache!r} does not apply; "
            "drop --cache for encoder runs"
        )
    if cache == "window" and window is None:
        raise BadInputError(
            f"model {model} has no sliding window in its config, so cache policy 'window' cannot apply; "
            "use --cache full or leave --cache out"
        )


def resolve_source(model: str, weights: str, cache: str = DEFAULT_CACHE) -> ModelSource:
    """The model source of a case spec's ``model``, ``weights`` and ``cache`` fields.

    ``weights`` is ``random`` (a registered model), ``checkpoint:<dir>`` (a local checkpoint) or
    ``hub:org/name@commit`` (a snapshot in the local Hugging Face cache; never downloaded here).
    """
    if weights == "random":
        entry = get_model(model)
        source = ModelSource(
            entry.name, entry.family, entry.max_positions, entry.config, None, sliding_window=entry.sliding_window
        )
        return source.with_cache(cache)
    if weights.startswith("checkpoint:"):
        path = Path(weights.split(":", 1)[1]).expanduser()
    elif weights.startswith("hub:"):
        from bench.config.hub import local_snapshot, parse_hub_weights

        path = local_snapshot(*parse_hub_weights(weights))[0]
    else:
        raise BadInputError(f"weights {weights!r} must be 'random', 'checkpoint:<dir>' or 'hub:org/name@<commit>'")
    if is_gguf_file(path):  # llama.cpp keeps a full cache for every architecture it runs (no window policy here)
        positions = gguf_fields(path)[0] or 1 << 30
        return ModelSource(model, DECODER, positions, functools.partial(_no_config, path), path).with_cache(cache)
    config = checkpoint_config(path)
    positions = int(getattr(config, "max_position_embeddings", 0) or 1 << 30)
    source = ModelSource(
        model,
        family_of_config(config),
        positions,
        lambda: copy.deepcopy(config),
        path,
        sliding_window=config_window(config),
    )
    return source.with_cache(cache)


def default_weights(model: str, weights: str) -> str:
    """The weights a case of ``model`` runs: a hub id (``org/name``) with the default ``random`` runs its snapshot.

    The snapshot is the one the local Hugging Face cache holds for ``refs/main``, pinned by its commit
    (``hub:org/name@commit``); a hub id missing from the cache is a :class:`BadInputError` saying how to fetch it.
    """
    from bench.config.hub import hub_weights, is_hub_id, local_snapshot

    if weights != "random" or model in MODELS or not is_hub_id(model):
        return weights
    return hub_weights(model, local_snapshot(model)[1])
