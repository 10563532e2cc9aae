"""Build or load a model for a case: random weights from a config (fast) or a local checkpoint."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config.locations import cache_dir
from bench.config.models import DECODER, ModelSource
from bench.config.precision import Precision, bnb_config, require_bitsandbytes, runtime_dtype, torch_dtype
from bench.errors import BadInputError
from bench.measure.quantization import inspect_quantization


@dataclass
class LoadedModel:
    """A model ready to run, with what is known about it."""

    model: Any
    source: ModelSource
    precision: Precision
    device: str
    info: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)


def random_checkpoints_dir() -> Path:
    """Where random checkpoints for quantized loads are cached: under the harness's cache (``$BENCH_CACHE_DIR``)."""
    return cache_dir() / "random-checkpoints"


@contextlib.contextmanager
def _skip_init():
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers 5 releases
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        yield


def _model_class(family: str):
    from transformers import AutoModel, AutoModelForCausalLM

    return AutoModelForCausalLM if family == DECODER else AutoModel


def fill_random_(model: Any, seed: int, std: float = 0.02) -> None:
    """Give every floating parameter finite random values in place: norms 1, biases 0, the rest N(0, std).

    Runs on the model's own device, so a full-size model fills in seconds on a GPU.
    """
    import torch

    gen_device = next(model.parameters()).device
    generator = torch.Generator(device=gen_device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.is_floating_point():
                continue
            lname = name.lower()
            if name.endswith("bias"):
                p.zero_()
            elif "norm" in lname:
                p.fill_(1.0)
            else:
                p.normal_(0.0, std, generator=generator)


def build_random(source: ModelSource, dtype_name: str, device: str, seed: int = 0, attn: str = "sdpa") -> Any:
    """Build a model from its config with random weights directly on ``device`` in ``dtype``.

    Initialisers are skipped (they take minutes for billions of parameters on a CPU); the weights are
    then filled in place with finite values of the real model's scale. The config is the source's with its
    cache policy applied (``full`` removes the sliding window).
    """
    import torch

    config = source.config()
    config._attn_implementation = attn
    with _skip_init(), torch.device(device):
        model = _model_class(source.family).from_config(config, dtype=torch_dtype(dtype_name), attn_implementation=attn)
    fill_random_(model, seed)
    return model.eval().requires_grad_(False)


def random_checkpoint(source: ModelSource, seed: int = 0) -> Path:
    """A cached fp16 checkpoint with random weights for this architecture, built once (for quantized loads).

    Built from the checkpoint's own config: the cache policies of one model share its weights. The folder's
    name also carries the machine fingerprint's digest (:mod:`bench.config.machine`): torch fills the weights
    (with CPU kernels it picks by ISA) and transformers writes them, so another host's or
    another library version's checkpoint is never reused.
    """
    from bench.config import machine

    config = source.config_factory()
    digest = hashlib.sha1(json.dumps(config.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:10]
    path = random_checkpoints_dir() / f"{source.name}-{digest}-{machine.fingerprint().digest}-seed{seed}"
    if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return path
    # built on the host: never under a simulated card's cap, never on another process's GPU
    model = build_random(dataclasses.replace(source, cache="config"), "float16", "cpu", seed)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    model.save_pretrained(str(tmp))
    del model
    try:
        tmp.rename(path)
    except OSError:  # another process finished the same checkpoint first
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_model(
    source: ModelSource, precision: Precision, device: str, seed: int = 0, attn: str = "sdpa"
) -> LoadedModel:
    """Load the model a case needs, on ``device``, and verify that the precision really applied."""
    require_bitsandbytes(precision)
    if precision.quantized:
        from bench.measure.bnb_runtime import import_bitsandbytes

        import_bitsandbytes()  # before transformers imports it: quietly, its hub messages kept for the record
    dtype_name = runtime_dtype(precision, device)
    if precision.quantized or source.checkpoint is not None:
        path = source.checkpoint or random_checkpoint(source, seed)
        kwargs: dict[str, Any] = {
            "dtype": torch_dtype(dtype_name),
            "device_map": {"": device},
            "attn_implementation": attn,
            "local_files_only": True,
            "config": source.config(),  # the cache policy applied (the saved config is the checkpoint's)
        }
        if precision.quantized:
            kwargs["quantization_config"] = bnb_config(precision, device)
        try:
            model = _model_class(source.family).from_pretrained(str(path), **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            if source.checkpoint is not None:
                raise BadInputError(f"cannot load checkpoint {path}: {exc}") from exc
            raise
        model.eval().requires_grad_(False)
    else:
        model = build_random(source, dtype_name, device, seed, attn)
    quant = inspect_quantization(model, precision)
    n_params = sum(p.numel() for p in model.parameters())
    config = model.config
    info = {
        "architecture": type(model).__name__,
        "family": source.family,
        "parameters": n_params,
        "num_layers": getattr(config, "num_hidden_layers", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "max_positions": source.max_positions,
        "random_weights": source.random_weights,
        "runtime_dtype": dtype_name,
    }
    return LoadedModel(model, source, precision, device, info, quant)
