"""Check a local checkpoint's safetensors files before any case runs, so a corrupt file is named up front
(one line, exit status 2) instead of failing every case of the run.

Only the headers are read (the 8-byte header length, the JSON header, and that the tensors it lists
cover the file exactly), with safetensors' own parser: seconds for any size, no tensor loaded. A file
whose header is whole but whose tensor bytes were damaged is not detected (safetensors keeps no
checksum). A shard index that names a tensor its shard lacks is refused too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from bench.errors import BadInputError

SAFETENSORS_INDEX = "model.safetensors.index.json"


def safetensors_keys(path: Path) -> set[str]:
    """The tensor names in a safetensors file's header; a file safetensors cannot parse is a BadInputError."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return set(fh.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(
            f"{path} is not a valid safetensors file ({reason}); the file may be truncated or damaged: "
            "copy or save the checkpoint again (save_pretrained) and rerun"
        ) from None


def validate_checkpoint(files: Iterable[Path]) -> list[Path]:
    """Check every safetensors file among a checkpoint's weight files (and its shard index); returns the files.

    Raises BadInputError naming the first bad file. Other weight formats (pytorch_model.bin) are passed through.
    """
    files = list(files)
    keys = {f: safetensors_keys(f) for f in files if f.suffix == ".safetensors"}
    folders = {f.parent for f in keys}
    for folder in sorted(folders):
        _check_index(folder / SAFETENSORS_INDEX, keys)
    return files


def _check_index(index: Path, keys: dict[Path, set[str]]) -> None:
    """Every tensor the shard index names must be in the shard it names."""
    if not index.is_file():
        return
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{index} is not a valid shard index ({exc}); save the checkpoint again") from None
    for tensor, shard in sorted(weight_map.items()):
        path = index.parent / shard
        if path in keys and tensor not in keys[path]:
            raise BadInputError(
                f"{path} lacks tensor {tensor!r} that {index.name} places there; the shards and the index "
                "are from different saves: copy or save the checkpoint again"
            )
