"""The evaluation text that quality is scored on: shipped with the package, public domain, its source cited.

Each file under ``bench/config/eval_texts`` starts with a header naming its source and edition, ended by a
line of dashes; only what follows that line is scored. The text is read as UTF-8 with newlines kept; its
SHA-256 names it in records and in the reference-logits cache.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from bench.errors import BadInputError

DEFAULT_EVAL_TEXT = "declaration-of-independence"
_SEPARATOR_PREFIX = "-----"


@dataclass(frozen=True)
class EvalText:
    """A shipped evaluation text: its name, the header citing its source, and the text scored."""

    name: str
    source: str  # the file's header, one paragraph
    text: str

    @property
    def chars(self) -> int:
        """Length of the scored text in characters (Unicode code points)."""
        return len(self.text)

    @property
    def sha256(self) -> str:
        """SHA-256 of the scored text's UTF-8 bytes (hex)."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def eval_text_names() -> list[str]:
    """The names of the shipped evaluation texts (file stems)."""
    folder = resources.files("bench.config").joinpath("eval_texts")
    return sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".txt"))


def load_eval_text(name: str = DEFAULT_EVAL_TEXT) -> EvalText:
    """A shipped evaluation text by name; an unknown name lists the shipped ones."""
    ref = resources.files("bench.config").joinpath("eval_texts", f"{name}.txt")
    try:
        raw = ref.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInputError(f"no evaluation text {name!r}; shipped texts: {', '.join(eval_text_names())}") from None
    lines = raw.split("\n")
    try:
        cut = next(i for i, line in enumerate(lines) if line.startswith(_SEPARATOR_PREFIX) and not line.strip("-"))
    except StopIteration:
        raise ValueError(f"evaluation text {name!r} has no header ending in a line of dashes") from None
    header = " ".join(line.strip() for line in lines[:cut] if line.strip())
    return EvalText(name, header, "\n".join(lines[cut + 1 :]).strip("\n") + "\n")
