"""GGUF files for the llama.cpp engine: written from the harness's random checkpoint, or read from a user's file.

Random weights: the same cached fp16 checkpoint the other engines load (:func:`bench.measure.loader.random_checkpoint`)
is written as a GGUF F16 file with the ``gguf`` package's writer (tensor names from its ``TensorNameMap``, the
hyper-parameters as llama.cpp's ``convert_hf_to_gguf.py`` writes them for Phi-3), then quantized by llama.cpp's
own quantizer (``llama_model_quantize``, what ``llama-quantize`` runs), so a random ``q4_0`` file has the type mix a
downloaded one has (``output.weight`` at Q6_K, norms at F32). The files are cached next to the random checkpoints,
one folder per checkpoint, the quantized ones named with the llama.cpp version that quantized them.

Read from llama.cpp's ``convert_hf_to_gguf.py`` (``Phi3MiniModel.set_gguf_parameters``, llama.cpp b6000-b7000):
context length, original context length (rope scaling), embedding and feed-forward length, block count, heads,
KV heads, RMS eps, rope dimensions (head dim) and base, file type, sliding window. llama.cpp loads a Phi-3
sliding window but runs Phi-3 with a full cache (``llama-model.cpp``: "Phi SWA is currently disabled").
Random weights carry no tokenizer: the vocabulary written is placeholder pieces (SentencePiece layout: unk, bos,
eos, 256 byte tokens, then numbered pieces) of the config's size; prompts are token ids, never text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BadInputError

GGUF_SUFFIX = ".gguf"
# architectures the writer knows: transformers model_type -> gguf MODEL_ARCH member name
WRITABLE_ARCHS = {"phi3": "PHI3", "llama": "LLAMA"}


@dataclass(frozen=True)
class GgufTensor:
    """One tensor of a GGUF file as its header describes it."""

    name: str
    type_name: str  # GGML type: F32, F16, Q8_0, Q4_0, Q6_K, ...
    elements: int
    bytes: int


@dataclass(frozen=True)
class GgufHeader:
    """What a GGUF file's header says: architecture, file type, hyper-parameters and every tensor's type and size."""

    path: str
    architecture: str
    file_type: str | None  # llama_ftype name (MOSTLY_Q4_0 ...), None when the file does not say
    context_length: int | None
    block_count: int | None
    embedding_length: int | None
    head_count: int | None
    head_count_kv: int | None
    vocab_size: int | None
    tensors: tuple[GgufTensor, ...]

    @property
    def tensor_bytes(self) -> int:
        """Bytes of every tensor's data, as stored (what llama.cpp maps or copies)."""
        return sum(t.bytes for t in self.tensors)

    @property
    def parameters(self) -> int:
        """Number of weights in the file."""
        return sum(t.elements for t in self.tensors)

    def bytes_by_type(self) -> dict[str, int]:
        """Tensor bytes per GGML type, largest first."""
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.type_name] = out.get(t.type_name, 0) + t.bytes
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _field(reader: Any, key: str) -> Any:
    """A scalar or string field of a GGUFReader (gguf 0.17+: ``ReaderField.contents()``), None when absent."""
    field = reader.fields.get(key)
    if field is None:
        return None
    return field.contents()


def read_header(path: Path) -> GgufHeader:
    """The header of a GGUF file (gguf's ``GGUFReader``, which maps the file and reads no tensor data)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path), "r")
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path} is not a readable GGUF file: {exc}; pass a .gguf file llama.cpp can load") from exc
    arch = str(_field(reader, "general.architecture") or "")
    ftype = _field(reader, "general.file_type")
    ftype_name = None
    if ftype is not None:
        try:
            ftype_name = gguf.LlamaFileType(int(ftype)).name
        except ValueError:
            ftype_name = str(ftype)

    def arch_int(key: str) -> int | None:
        value = _field(reader, f"{arch}.{key}")
        return int(value) if value is not None else None

    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = arch_int("vocab_size") or (len(tokens.data) if tokens is not None else None)
    tensors = tuple(GgufTensor(t.name, t.tensor_type.name, int(t.n_elements), int(t.n_bytes)) for t in reader.tensors)
    return GgufHeader(
        str(path),
        arch,
        ftype_name,
        arch_int("context_length"),
        arch_int("block_count"),
        arch_int("embedding_length"),
        arch_int("attention.head_count"),
        arch_int("attention.head_count_kv"),
        vocab,
        tensors,
    )


def _vocab(size: int, eos: int) -> tuple[list[str], list[float], list[int]]:
    """Placeholder SentencePiece pieces: <unk>, <s>, </s>, the 256 byte tokens, then numbered pieces up to ``size``."""
    import gguf

    tokens = [f"\u2581t{i}" for i in range(size)]
    types = [int(gguf.TokenType.NORMAL)] * size
    tokens[0], types[0] = "<unk>", int(gguf.TokenType.UNKNOWN)
    # an eos past the first three is Phi-3's "<|endoftext|>" (id 32000): llama.cpp's vocabulary load looks that piece
    # up by name for a model whose general.name contains "phi-3" and fails without it (llama-vocab.cpp, token attrs)
    if 2 < eos < size:
        tokens[eos], types[eos] = "<|endoftext|>", int(gguf.TokenType.CONTROL)
    if 1 < size:
        tokens[1], types[1] = "<s>", int(gguf.TokenType.CONTROL)
    if 2 < size:
        tokens[2], types[2] = "</s>", int(gguf.TokenType.CONTROL)
    for b in range(256):
        if 3 + b < size and types[3 + b] == int(gguf.TokenType.NORMAL):
            tokens[3 + b], types[3 + b] = f"<0x{b:02X}>", int(gguf.TokenType.BYTE)
    return tokens, [0.0] * size, types


def write_f16_gguf(checkpoint: Path, out: Path, name: str) -> Path:
    """Write the safetensors checkpoint at ``checkpoint`` (a Phi-3 or Llama config) as a GGUF F16 file at ``out``.

    2-D weights are stored F16, 1-D ones (norms) F32, as ``convert_hf_to_gguf.py --outtype f16`` does. Tensors
    are streamed one at a time (a full-size model is never held twice in memory). The file appears atomically.
    """
    import json

    import gguf
    import numpy as np
    from safetensors import safe_open

    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    model_type = config.get("model_type")
    if model_type not in WRITABLE_ARCHS:
        raise BadInputError(
            f"cannot write a GGUF for model type {model_type!r} (known: {', '.join(WRITABLE_ARCHS)}); "
            "pass a converted file with --model-path file.gguf"
        )
    arch = getattr(gguf.MODEL_ARCH, WRITABLE_ARCHS[model_type])
    n_layers = int(config["num_hidden_layers"])
    names = gguf.get_tensor_name_map(arch, n_layers)
    files = sorted(checkpoint.glob("*.safetensors"))
    entries: list[tuple[str, Path, str]] = []
    for file in files:
        with safe_open(str(file), framework="np") as fh:
            for key in fh.keys():
                gguf_name = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if gguf_name is None:
                    raise BadInputError(f"{file}: tensor {key!r} has no GGUF name for {model_type}")
                entries.append((gguf_name, file, key))
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[arch])
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    rotary = float(config.get("partial_rotary_factor") or 1.0)
    positions = int(config["max_position_embeddings"])
    writer.add_name(name)
    writer.add_context_length(positions)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(n_layers)
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps") or 1e-5))
    writer.add_rope_dimension_count(int(head_dim * rotary))
    writer.add_rope_freq_base(float(config.get("rope_theta") or 10000.0))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    if model_type == "phi3":
        writer.add_rope_scaling_orig_ctx_len(int(config.get("original_max_position_embeddings") or positions))
        writer.add_sliding_window(int(config.get("sliding_window") or 0))
    vocab = int(config["vocab_size"])
    bos, eos = int(config.get("bos_token_id") or 1), _first(config.get("eos_token_id"), 2)
    tokens, scores, types = _vocab(vocab, eos)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(bos)
    writer.add_eos_token_id(eos)
    pad = config.get("pad_token_id")
    if pad is not None and 0 <= int(pad) < vocab:
        writer.add_pad_token_id(int(pad))

    def stored(array: Any) -> Any:
        return array.astype(np.float16 if array.ndim >= 2 else np.float32)

    opened = {file: safe_open(str(file), framework="np") for file in files}
    for gguf_name, file, key in entries:
        sl = opened[file].get_slice(key)
        shape = tuple(int(d) for d in sl.get_shape())
        dtype = np.float16 if len(shape) >= 2 else np.float32
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        writer.add_tensor_info(gguf_name, shape, np.dtype(dtype), nbytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _gguf_name, file, key in entries:
        writer.write_tensor_data(stored(opened[file].get_tensor(key)))
    writer.close()
    tmp.replace(out)
    return out


def _first(value: Any, default: int) -> int:
    if isinstance(value, list):
        value = value[0] if value else None
    return int(value) if value is not None else default


def quantize_gguf(source: Path, out: Path, file_type: str, threads: int | None = None) -> Path:
    """Quantize a GGUF F16 file to llama.cpp file type ``file_type`` (``Q4_0``, ``Q4_K_M`` ...) with llama.cpp's own
    quantizer (``llama_model_quantize``, the library call behind ``llama-quantize``); the file appears atomically."""
    import llama_cpp

    from bench.measure.llamacpp_binding import captured_log

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{file_type}", None)
    if ftype is None:
        raise BadInputError(f"llama.cpp {llama_cpp.__version__} has no file type {file_type!r} to quantize to")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or len(os.sched_getaffinity(0))
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    with captured_log() as log:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), params)
    if status != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        tail = " | ".join(log.lines()[-3:])
        raise RuntimeError(f"llama_model_quantize({source.name} -> {file_type}) returned {status}: {tail}")
    tmp.replace(out)
    return out


def random_gguf(checkpoint: Path, name: str, file_type: str) -> Path:
    """The cached GGUF file of type ``file_type`` (``F16``, ``Q8_0``, ``Q4_0`` ...) for a random checkpoint folder.

    Cached in ``<checkpoint>-gguf/`` beside it: ``F16.gguf`` (gguf's writer), the others
    ``<TYPE>-llama.cpp<version>.gguf`` (a new quantizer version quantizes again).
    """
    folder = checkpoint.with_name(checkpoint.name + "-gguf")
    folder.mkdir(parents=True, exist_ok=True)
    f16 = folder / "F16.gguf"
    if not f16.is_file():
        write_f16_gguf(checkpoint, f16, name)
    if file_type == "F16":
        return f16
    import llama_cpp

    out = folder / f"{file_type}-llama.cpp{llama_cpp.__version__}.gguf"
    if not out.is_file():
        quantize_gguf(f16, out, file_type)
    return out
