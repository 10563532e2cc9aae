"""What the predictor needs of a model, read from the model transformers builds on the meta device.

Every prediction starts here. The model is built from its config on the meta device (instant, even
at full size, and no memory), then its tensors are listed one by one: each ``nn.Linear`` with its
shape, its role in a layer (qkv, o, gate_up, down, fc1, ...) and whether bitsandbytes would quantize
it, and every other parameter or buffer with its dtype. Which linear layers bitsandbytes replaces is
decided by transformers' own rule (``get_keys_to_not_convert``: lm_head and tied or last modules stay
unquantized, plus the model's ``_keep_in_fp32_modules``).

The build imports torch and transformers; its result is cached on disk per config and transformers
version (:mod:`bench.predict.arch_cache`), so a registered model is read back without either.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.config.models import DECODER, ENCODER, config_window, family_of_config, get_model
from bench.errors import BadInputError

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int8": 1, "uint8": 1, "bool": 1}


@dataclass(frozen=True)
class LinearLayer:
    """One nn.Linear: its name, shape, bias, whether bitsandbytes quantizes it and its role in a layer."""

    name: str
    in_features: int
    out_features: int
    bias: bool
    quantized: bool
    role: str  # qkv | q | k | v | o | gate_up | gate | up | down | fc1 | fc2 | head | other
    layer: int | None  # decoder/encoder layer index; None outside the stack
    tied: bool = False  # the weight is another tensor's (tied embeddings): its bytes are counted there

    @property
    def numel(self) -> int:
        """Weight elements."""
        return self.in_features * self.out_features


@dataclass(frozen=True)
class OtherTensor:
    """A parameter or buffer that is not a quantizable linear weight."""

    name: str
    numel: int
    dtype: str  # "float16" means "follows the runtime dtype"; anything else stays as is
    buffer: bool


@dataclass(frozen=True)
class Architecture:
    """What the predictor needs of a model, read from the model transformers builds on the meta device."""

    name: str
    family: str
    model_type: str
    num_layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_positions: int
    sliding_window: int | None
    mlp: str  # fused_gated | gated | plain
    parameters: int
    input_embedding_numel: int
    linears: tuple[LinearLayer, ...]
    others: tuple[OtherTensor, ...]

    @property
    def kv_dim(self) -> int:
        """Key (or value) width per token: kv heads x head dim."""
        return self.kv_heads * self.head_dim

    @property
    def q_dim(self) -> int:
        """Query width per token: heads x head dim."""
        return self.heads * self.head_dim

    def layer_linears(self, index: int = 0) -> list[LinearLayer]:
        """The linear layers of one stack layer (all layers are alike)."""
        return [lin for lin in self.linears if lin.layer == index]

    def role(self, role: str) -> list[LinearLayer]:
        """The first stack layer's linears with this role (or the head)."""
        pool = self.layer_linears(0) if role != "head" else self.linears
        return [lin for lin in pool if lin.role == role]


_ROLE_SUFFIXES = (
    ("attn.c_proj", "o"),  # GPT-2 / GPT-BigCode: c_attn (fused qkv), attn.c_proj, mlp.c_fc, mlp.c_proj
    ("mlp.c_proj", "fc2"),
    ("c_fc", "fc1"),
    ("q_lin", "q"),  # DistilBERT
    ("k_lin", "k"),
    ("v_lin", "v"),
    ("out_lin", "o"),
    ("ffn.lin1", "fc1"),
    ("ffn.lin2", "fc2"),
    ("qkv_proj", "qkv"),
    ("query_key_value", "qkv"),
    ("c_attn", "qkv"),
    ("q_proj", "q"),
    ("self.query", "q"),
    ("k_proj", "k"),
    ("self.key", "k"),
    ("v_proj", "v"),
    ("self.value", "v"),
    ("o_proj", "o"),
    ("attention.output.dense", "o"),
    ("out_proj", "o"),
    ("gate_up_proj", "gate_up"),
    ("gate_proj", "gate"),
    ("up_proj", "up"),
    ("down_proj", "down"),
    ("intermediate.dense", "fc1"),
    ("fc1", "fc1"),
    ("output.dense", "fc2"),
    ("fc2", "fc2"),
)


def _role(name: str) -> str:
    for suffix, role in _ROLE_SUFFIXES:
        if name.endswith(suffix):
            return role
    return "other"


def _layer_index(name: str) -> int | None:
    parts = name.split(".")
    for a, b in zip(parts, parts[1:], strict=False):
        if a in ("layers", "layer", "h", "blocks") and b.isdigit():
            return int(b)
    return None


def _config_key(config: Any) -> str:
    return json.dumps(config.to_dict(), sort_keys=True, default=str)


def resolve_config(model: Any) -> tuple[str, Any, str]:
    """``(name, transformers config, family)`` of a registered model name or a config object."""
    if isinstance(model, str):
        entry = get_model(model)
        return entry.name, entry.config(), entry.family
    if hasattr(model, "to_dict") and hasattr(model, "model_type"):
        return str(getattr(model, "name_or_path", "") or model.model_type), model, family_of_config(model)
    raise BadInputError(f"model {model!r} must be a registered model name or a transformers config")


_ARCHITECTURES: dict[tuple[str, str, str], Architecture] = {}


def architecture(model: Any) -> Architecture:
    """The architecture of a registered model name or a transformers config (cached per config).

    A registered name needs neither torch nor transformers once its summary is in the cache
    (:mod:`bench.predict.arch_cache`): the key is the entry's shipped config.json with its overrides.
    """
    from bench.predict.arch_cache import cached_architecture  # it builds on this module's dataclasses

    if isinstance(model, str):
        entry = get_model(model)
        name, family, config_class, data = entry.name, entry.family, entry.architecture, entry.config_dict()

        def build() -> Architecture:
            return _build_architecture(name, family, entry.config())

    else:
        name, config, family = resolve_config(model)
        config_class, data = type(config).__name__, json.loads(_config_key(config))

        def build() -> Architecture:
            return _build_architecture(name, family, config)

    key = (name, family, config_class + json.dumps(data, sort_keys=True, default=str))
    if key not in _ARCHITECTURES:
        _ARCHITECTURES[key] = cached_architecture(name, family, config_class, data, build)
    return _ARCHITECTURES[key]


def check_shape(arch: Architecture, context_tokens: int, batch_size: int, new_tokens: int) -> None:
    """Raise :class:`BadInputError` for a shape the model cannot take (bad batch, too many positions, ...)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise BadInputError(f"batch size {batch_size!r} is impossible: it must be a whole number of at least 1")
    if context_tokens < 1:
        raise BadInputError(f"context {context_tokens} must be at least 1 token")
    if new_tokens < 0:
        raise BadInputError(f"new tokens {new_tokens} must not be negative")
    if arch.family == ENCODER and new_tokens:
        raise BadInputError(f"{arch.name} is an encoder: it does not generate; use --new-tokens 0")
    total = context_tokens + new_tokens
    if total > arch.max_positions:
        raise BadInputError(
            f"context {context_tokens} + {new_tokens} new tokens = {total} exceeds {arch.name}'s maximum of "
            f"{arch.max_positions} positions; use a context of at most {arch.max_positions - new_tokens}"
        )


# --------------------------------------------------------------------------- reading the meta model


def _build_architecture(name: str, family: str, config: Any) -> Architecture:
    model = _meta_model(family, config)
    linears, linear_weights = _linear_layers(model, _quantization_rule(model))
    return _describe(name, family, model, linears, _other_tensors(model, linear_weights))


def _meta_model(family: str, config: Any) -> Any:
    """The model transformers builds from ``config`` on the meta device, in float16."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    cls = AutoModelForCausalLM if family == DECODER else AutoModel
    with torch.device("meta"):
        return cls.from_config(config, dtype=torch.float16)


def _transformers_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformers")
    except PackageNotFoundError:
        return "(not installed)"


def _quantization_rule(model: Any) -> Callable[[str], bool]:
    """Whether bitsandbytes would replace the linear module of this name, by transformers' own rule."""
    try:
        from transformers.quantizers.base import get_keys_to_not_convert

        skip = list(get_keys_to_not_convert(model))
    except ImportError:  # older transformers: the same rule (output embeddings and the last module), guessed
        warnings.warn(
            f"transformers {_transformers_version()} has no quantizers.base.get_keys_to_not_convert (read from "
            "transformers 5.25): the predictor guesses that only 'lm_head' stays unquantized",
            RuntimeWarning,
            stacklevel=2,
        )
        skip = ["lm_head"]
    skip += list(getattr(model, "_keep_in_fp32_modules", None) or [])
    from bench.config.precision import bitsandbytes_available

    if bitsandbytes_available():  # transformers' integration imports bitsandbytes: quietly first
        from bench.config.bnb_import import import_bitsandbytes

        import_bitsandbytes()
    try:
        from transformers.integrations.bitsandbytes import should_convert_module
    except ImportError:
        warnings.warn(
            f"transformers {_transformers_version()} has no integrations.bitsandbytes.should_convert_module (read "
            "from transformers 5.25): the predictor matches module names itself",
            RuntimeWarning,
            stacklevel=2,
        )

        def should_convert_module(full_name: str, patterns: list[str] | None = None) -> bool:
            return not any(
                full_name == p or full_name.endswith("." + p) or full_name.startswith(p + ".") for p in patterns or []
            )

    return lambda mod_name: bool(should_convert_module(mod_name, skip))


def _linear_shape(module: Any) -> tuple[int, int] | None:
    """``(in_features, out_features)`` of a module bitsandbytes replaces: ``nn.Linear``, or transformers'
    ``Conv1D`` (GPT-2), whose weight is stored transposed (``in x out``); None for anything else.

    transformers 5.25 ``integrations/bitsandbytes.replace_with_bnb_linear``: ``isinstance(module, Conv1D) or
    type(module) is nn.Linear``, ``in_features, out_features = module.weight.shape`` for Conv1D.
    """
    import torch

    if type(module) is torch.nn.Linear:
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        in_features, out_features = module.weight.shape
        return int(in_features), int(out_features)
    return None


def _linear_layers(model: Any, converts: Callable[[str], bool]) -> tuple[list[LinearLayer], set[str]]:
    """Every ``nn.Linear`` (and ``Conv1D``) of the model, and the names of the parameters they own."""
    first_name: dict[int, str] = {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        first_name.setdefault(id(p), pname)
    head = model.get_output_embeddings()
    linears: list[LinearLayer] = []
    linear_weights: set[str] = set()
    for mod_name, module in model.named_modules():
        shape = _linear_shape(module)
        if shape is None:
            continue
        tied = first_name.get(id(module.weight)) != f"{mod_name}.weight"
        linears.append(
            LinearLayer(
                mod_name,
                shape[0],
                shape[1],
                module.bias is not None,
                converts(mod_name) and not tied,
                "head" if module is head else _role(mod_name),
                _layer_index(mod_name),
                tied,
            )
        )
        if not tied:
            linear_weights.add(f"{mod_name}.weight")
        if module.bias is not None:
            linear_weights.add(f"{mod_name}.bias")
    return linears, linear_weights


def _other_tensors(model: Any, linear_weights: set[str]) -> list[OtherTensor]:
    """Every parameter that no linear layer owns (counted once when shared), then every buffer."""
    others: list[OtherTensor] = []
    seen: set[int] = set()
    for pname, p in model.named_parameters(remove_duplicate=True):
        if id(p) in seen:
            continue
        seen.add(id(p))
        if pname in linear_weights:
            continue
        others.append(OtherTensor(pname, p.numel(), str(p.dtype).replace("torch.", ""), False))
    for bname, b in model.named_buffers(remove_duplicate=True):
        others.append(OtherTensor(bname, b.numel(), str(b.dtype).replace("torch.", ""), True))
    return others


def _mlp_width(linears: list[LinearLayer]) -> int | None:
    """The MLP's inner width, read from the first layer's MLP linears (gate/up, fused gate_up or fc1)."""
    for lin in linears:
        if lin.layer == 0 and lin.role in ("gate", "up", "fc1"):
            return lin.out_features
        if lin.layer == 0 and lin.role == "gate_up":
            return lin.out_features // 2
    return None


def _describe(
    name: str, family: str, model: Any, linears: list[LinearLayer], others: list[OtherTensor]
) -> Architecture:
    """The :class:`Architecture` of a meta model: its config's dimensions and the tensors listed."""
    embeddings = model.get_input_embeddings()
    cfg = model.config
    heads = int(cfg.num_attention_heads)
    hidden = int(cfg.hidden_size)
    head_dim = int(getattr(cfg, "head_dim", None) or hidden // heads)
    roles = {lin.role for lin in linears if lin.layer == 0}
    mlp = "fused_gated" if "gate_up" in roles else "gated" if "gate" in roles else "plain"
    window = config_window(cfg)
    # GPT-BigCode's multi-query attention keeps one key/value head (``multi_query``, no num_key_value_heads)
    kv_heads = 1 if getattr(cfg, "multi_query", False) else int(getattr(cfg, "num_key_value_heads", None) or heads)
    intermediate = _mlp_width(linears) or getattr(cfg, "intermediate_size", None) or 4 * hidden
    return Architecture(
        name=name,
        family=family,
        model_type=str(cfg.model_type),
        num_layers=int(cfg.num_hidden_layers),
        hidden=hidden,
        intermediate=int(intermediate),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab=int(cfg.vocab_size),
        max_positions=int(getattr(cfg, "max_position_embeddings", 0) or 1 << 30),
        sliding_window=int(window) if window else None,
        mlp=mlp,
        parameters=sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
        input_embedding_numel=int(embeddings.weight.numel()) if embeddings is not None else 0,
        linears=tuple(linears),
        others=tuple(others),
    )
