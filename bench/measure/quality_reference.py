"""The reference precision's outputs on the evaluation text, computed once per model and kept on disk.

One folder per key under ``$BENCH_CACHE_DIR/quality-reference/``: ``meta.json`` (what the key was built
from, the windows, how long the reference pass took) and one safetensors file per window holding that
window's scored logits in the dtype the model produced them (16-bit logits stay 16-bit, so reading them back
is exact). A 32k vocabulary times thousands of tokens is written and read a window at a time; it never has
to fit in memory at once. The folder is written under a temporary name and renamed when complete, so a
crashed pass leaves nothing that looks finished.

The key covers the model's weights (:func:`weights_identity`), the reference dtype, the device type, the
token ids scored (so the text and the tokenizer that produced them) and the window layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.config.locations import cache_dir

FORMAT_VERSION = 1
_FULL_HASH_LIMIT_BYTES = 64 * 2**20  # weight files up to this size are hashed whole; larger ones by stat


def weights_identity(files: list[Path], config_file: Path | None = None) -> str:
    """A digest naming a checkpoint's weights: small files by content; large ones by name, size and mtime.

    Hashing a multi-gigabyte checkpoint takes longer than the reference pass on a GPU, so files over 64 MiB
    are named by (name, size, modification time): copying such a checkpoint anew computes its reference again.
    """
    h = hashlib.sha256()
    for f in sorted(files):
        st = f.stat()
        h.update(f"{f.name}\0{st.st_size}\0".encode())
        if st.st_size <= _FULL_HASH_LIMIT_BYTES:
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        else:
            h.update(str(st.st_mtime_ns).encode())
    if config_file is not None and config_file.is_file():
        h.update(config_file.read_bytes())
    return h.hexdigest()[:20]


def reference_key(parts: dict[str, Any]) -> str:
    """The folder name of a reference: a digest of ``parts`` (JSON, keys sorted) and the store's format."""
    blob = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


class ReferenceStore:
    """The on-disk reference of one key: write it once (:meth:`writer`), then read it window by window."""

    def __init__(self, key: str, root: Path | None = None):
        self.key = key
        self.folder = (root or cache_dir() / "quality-reference") / key

    @property
    def complete(self) -> bool:
        """True when a finished reference is on disk (its meta.json is written last)."""
        return (self.folder / "meta.json").is_file()

    def meta(self) -> dict[str, Any]:
        """What the reference was built from and how (meta.json)."""
        return json.loads((self.folder / "meta.json").read_text(encoding="utf-8"))

    def chunk(self, index: int) -> Any:  # -> torch.Tensor
        """The stored outputs of window ``index`` (logits rows, or one pooled embedding), as written."""
        from safetensors.torch import load_file

        return load_file(str(self.folder / f"chunk-{index:05d}.safetensors"))["values"]

    def chunks(self) -> Iterator[Any]:
        """Every window's stored outputs, in order, one at a time."""
        for i in range(int(self.meta()["chunks"])):
            yield self.chunk(i)

    def writer(self) -> ReferenceWriter:
        """A writer into a temporary folder beside this one; :meth:`ReferenceWriter.finish` publishes it."""
        return ReferenceWriter(self)


class ReferenceWriter:
    """Writes a reference window by window; nothing is visible under the key until :meth:`finish`."""

    def __init__(self, store: ReferenceStore):
        self.store = store
        self.tmp = store.folder.with_name(f"{store.folder.name}.tmp{os.getpid()}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.count = 0

    def add(self, values: Any) -> None:
        """Store the next window's outputs (a CPU tensor, kept in its dtype)."""
        from safetensors.torch import save_file

        save_file(
            {"values": values.detach().to("cpu").contiguous()}, str(self.tmp / f"chunk-{self.count:05d}.safetensors")
        )
        self.count += 1

    def finish(self, meta: dict[str, Any]) -> None:
        """Write meta.json and publish the folder under its key (another process's finished copy wins)."""
        (self.tmp / "meta.json").write_text(json.dumps({**meta, "chunks": self.count}, indent=1), encoding="utf-8")
        try:
            self.tmp.rename(self.store.folder)
        except OSError:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if not self.store.complete:
                raise

    def abandon(self) -> None:
        """Remove the unfinished folder."""
        shutil.rmtree(self.tmp, ignore_errors=True)
