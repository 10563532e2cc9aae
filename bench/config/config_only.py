"""A model's config without its weights: what ``bench predict`` and ``bench advise`` need of any model.

A prediction needs only config.json: a registered name, a directory holding config.json (weights optional),
or a hub id ``org/name`` whose config.json is read from the local Hugging Face cache. ``allow_download``
fetches config.json alone (``hf_hub_download``), never weights, and never while ``HF_HUB_OFFLINE`` is set.
The config is read with transformers' ``AutoConfig`` (so whatever model type transformers knows), and
refused with the reason where the predictor cannot model the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config.hub import hub_cache_dir, hub_offline, is_hub_id
from bench.config.models import MODELS, family_of_config
from bench.errors import BadInputError

CONFIG_NAME = "config.json"
# config fields that mark a model whose memory the predictor does not model, and why
_UNSUPPORTED_FIELDS = (
    ("is_encoder_decoder", "an encoder-decoder model (two stacks and a cross-attention cache)"),
    ("num_local_experts", "a mixture of experts (expert weights and routing)"),
    ("num_experts", "a mixture of experts (expert weights and routing)"),
    ("n_routed_experts", "a mixture of experts (expert weights and routing)"),
    ("kv_lora_rank", "latent (compressed) attention"),
)


@dataclass(frozen=True)
class ConfigModel:
    """A model to predict: its display name, the transformers config (None: a registered name) and family."""

    name: str
    config: Any  # transformers.PretrainedConfig, or None for a registered model
    family: str
    source: str  # "registered", "directory <path>" or "hub <org/name>"

    @property
    def model(self) -> Any:
        """What :func:`bench.predict.memory.predict_memory` takes: the registered name or the config."""
        return self.name if self.config is None else self.config


def read_config(path: Path, name: str | None = None) -> Any:
    """The transformers config in ``path`` (a directory with config.json, or the file itself); never the network."""
    from transformers import AutoConfig

    folder = path if path.is_dir() else path.parent
    if not (folder / CONFIG_NAME).is_file():
        raise BadInputError(f"{folder} has no {CONFIG_NAME}; pass a directory that holds the model's config.json")
    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        cause = (str(exc).strip().splitlines() or [""])[0]
        raise BadInputError(
            f"transformers cannot read {folder / CONFIG_NAME}: {cause}; the predictor models what transformers "
            "builds from a config (check its model_type, or upgrade transformers)"
        ) from exc
    config.name_or_path = name or folder.name
    check_supported(config)
    return config


def check_supported(config: Any) -> None:
    """Refuse a config the predictor cannot model (encoder-decoder, mixture of experts, ...), saying why."""
    model_type = getattr(config, "model_type", "?")
    for field, what in _UNSUPPORTED_FIELDS:
        value = getattr(config, field, None)
        if value:
            raise BadInputError(
                f"model type {model_type!r} is {what}: the predictor models dense decoders and encoders only "
                f"(its config sets {field}={value!r})"
            )
    for field in ("num_attention_heads", "hidden_size", "num_hidden_layers"):
        if not getattr(config, field, None):
            raise BadInputError(
                f"model type {model_type!r} has no {field} in its config: the predictor cannot size its "
                "attention and KV cache"
            )


def hub_config_file(repo_id: str, allow_download: bool = False) -> Path:
    """``repo_id``'s config.json from the local hub cache, or fetched alone with ``allow_download``."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = hub_cache_dir()
    try:
        return Path(hf_hub_download(repo_id, CONFIG_NAME, cache_dir=cache, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as exc:
        if not allow_download:
            raise BadInputError(
                f"{repo_id}'s {CONFIG_NAME} is not in the local Hugging Face cache {cache}; pass --allow-download "
                f"to fetch that one file, or --model-path DIR with a copy of it"
            ) from exc
    if hub_offline():
        raise BadInputError(
            f"{repo_id}'s {CONFIG_NAME} is not in the local Hugging Face cache {cache} and HF_HUB_OFFLINE is set, "
            "so --allow-download cannot fetch it; unset HF_HUB_OFFLINE or pass --model-path DIR"
        )
    try:
        return Path(hf_hub_download(repo_id, CONFIG_NAME, cache_dir=cache))
    except Exception as exc:  # network, authentication, unknown repository: one line, with the cause
        cause = (str(exc).strip().splitlines() or [""])[0]
        raise BadInputError(f"cannot download {repo_id}'s {CONFIG_NAME}: {type(exc).__name__}: {cause}") from exc


def resolve_model(model: str | None, model_path: Path | None = None, allow_download: bool = False) -> ConfigModel:
    """The model a prediction is for: ``--model-path DIR`` (``--model`` then names it), a registered name, or
    a hub id ``org/name`` (config.json from the local cache, fetched alone with ``allow_download``)."""
    if model_path is not None:
        path = model_path.expanduser()
        config = read_config(path, model or path.resolve().name)
        return ConfigModel(config.name_or_path, config, family_of_config(config), f"directory {path}")
    if not model:
        raise BadInputError("give --model NAME (bench list), --model org/name (a hub id) or --model-path DIR")
    if model in MODELS:
        return ConfigModel(model, None, MODELS[model].family, "registered")
    if is_hub_id(model):
        config = read_config(hub_config_file(model, allow_download).parent, model)
        return ConfigModel(model, config, family_of_config(config), f"hub {model}")
    from bench.config.models import get_model

    get_model(model)  # raises with the registered names and the closest match
    raise AssertionError("unreachable")
