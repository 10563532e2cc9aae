"""Teacher-forced outputs of a loaded model over the evaluation text, and their scoring against the reference.

The text is tokenized once by the model's own tokenizer. Decoders read it in consecutive windows of
``window_tokens`` tokens (512 by default, llama-perplexity's default context); the special tokens the
tokenizer puts before a text (a BOS token, where it adds one) start every window, and every text token is
scored once: by the window's previous position, or by that prefix for a window's first token (without a
prefix a window's first token is not scored). Encoders read the same windows with their own special tokens
around each and give one pooled embedding per window (mean of the last hidden state over the window's tokens).

The formulas (KL, top-1, perplexity, cosine) live in :mod:`bench.results.quality`; this module only runs
the model and streams its outputs, a window at a time, beside the stored reference
(:mod:`bench.measure.quality_reference`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config.models import DECODER
from bench.errors import BadInputError
from bench.measure.quality_reference import ReferenceStore
from bench.results.quality import QualityTally, embedding_summary

DEFAULT_WINDOW_TOKENS = 512
COMPARE_ROWS = 128  # logits rows turned into float64 probabilities at a time (bounds host memory)
FORWARD = "transformers forward pass over the text, teacher-forced (no generation)"


def load_tokenizer(path: Path) -> Any:
    """The checkpoint's own tokenizer (``AutoTokenizer``, local files only); refused where it has none."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(
            f"cannot load the tokenizer of {path} ({reason}); quality is scored on the model's own tokenizer: "
            "save it beside the weights (tokenizer.save_pretrained)"
        ) from None


@dataclass(frozen=True)
class EvalTokens:
    """The evaluation text as token ids: the body, the special tokens around a text, and the window size."""

    body: tuple[int, ...]
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    window_tokens: int
    family: str

    @property
    def digest(self) -> str:
        """SHA-256 of the ids and the window layout (names the text and the tokenizer as applied)."""
        blob = repr((self.body, self.prefix, self.suffix, self.window_tokens, self.family)).encode()
        return hashlib.sha256(blob).hexdigest()[:20]

    def pieces(self) -> list[tuple[int, ...]]:
        """The body cut into consecutive pieces that fit a window beside the special tokens."""
        room = self.window_tokens - len(self.prefix) - (len(self.suffix) if self.family != DECODER else 0)
        if room < 1:
            raise BadInputError(f"a window of {self.window_tokens} tokens leaves no room beside the special tokens")
        out = [self.body[i : i + room] for i in range(0, len(self.body), room)]
        if self.family == DECODER and not self.prefix:
            out = [p for p in out if len(p) >= 2]  # a lone token without a prefix predicts nothing
        return out

    @property
    def tokens_scored(self) -> int:
        """Next-token predictions scored (decoders) or tokens embedded (encoders)."""
        if self.family != DECODER:
            return sum(len(p) for p in self.pieces())
        return sum(len(p) - (0 if self.prefix else 1) for p in self.pieces())


def tokenize(tokenizer: Any, text: str, window_tokens: int, family: str, max_tokens: int | None = None) -> EvalTokens:
    """Token ids of ``text`` by the model's tokenizer, split into the body and the special tokens around it."""
    with_special = list(tokenizer(text)["input_ids"])
    special = set(getattr(tokenizer, "all_special_ids", ()) or ())
    lead = 0
    while lead < len(with_special) and with_special[lead] in special:
        lead += 1
    trail = len(with_special)
    while trail > lead and with_special[trail - 1] in special:
        trail -= 1
    body = tuple(with_special[lead:trail])
    if max_tokens is not None:
        body = body[:max_tokens]
    if len(body) < 2:
        raise BadInputError(f"the evaluation text gave {len(body)} token(s); it needs at least 2")
    return EvalTokens(body, tuple(with_special[:lead]), tuple(with_special[trail:]), window_tokens, family)


def window_outputs(model: Any, tokens: EvalTokens, device: str) -> Iterator[tuple[Any, Any]]:
    """Per window: the model's outputs to keep (decoder logits rows of the scored positions, or an encoder's
    pooled embedding, on the CPU in the dtype the model produced) and the targets (next tokens; None for encoders)."""
    import torch

    for piece in tokens.pieces():
        if tokens.family == DECODER:
            ids = list(tokens.prefix) + list(piece)
            first = len(tokens.prefix) - 1 if tokens.prefix else 0
            targets = list(piece) if tokens.prefix else list(piece[1:])
        else:
            ids = list(tokens.prefix) + list(piece) + list(tokens.suffix)
        input_ids = torch.tensor([ids], dtype=torch.long, device=device)
        with torch.inference_mode():
            if tokens.family == DECODER:
                logits = model(input_ids=input_ids, use_cache=False).logits[0]
                yield logits[first : first + len(targets)].to("cpu"), torch.tensor(targets)
            else:
                out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
                yield out.last_hidden_state[0].float().mean(dim=0, keepdim=True).to("cpu"), None


def write_reference(model: Any, tokens: EvalTokens, store: ReferenceStore, device: str, meta: dict[str, Any]) -> None:
    """Run the reference model over the text and store every window's outputs under ``store``'s key."""
    writer = store.writer()
    try:
        for values, _ in window_outputs(model, tokens, device):
            writer.add(values)
        writer.finish(meta)
    except BaseException:
        writer.abandon()
        raise


@dataclass(frozen=True)
class Scored:
    """A precision scored against the reference: the record's numbers and, for decoders, every position's values."""

    summary: dict[str, Any]
    per_position: dict[str, Any]


def score_against_reference(model: Any, tokens: EvalTokens, store: ReferenceStore, device: str) -> Scored:
    """Run ``model`` over the text and compare each window with the stored reference, a window at a time."""
    if tokens.family != DECODER:
        import torch

        ours = [v for v, _ in window_outputs(model, tokens, device)]
        ref = [store.chunk(i) for i in range(len(ours))]
        summary = embedding_summary(torch.cat(ref).double().numpy(), torch.cat(ours).double().numpy())
        summary["tokens_scored"] = tokens.tokens_scored
        return Scored(summary, {})
    tally = QualityTally()
    for index, (values, targets) in enumerate(window_outputs(model, tokens, device)):
        ref = store.chunk(index)
        if ref.shape != values.shape:
            raise RuntimeError(
                f"window {index}: logits {tuple(values.shape)} but the reference stored {tuple(ref.shape)}"
            )
        for lo in range(0, values.shape[0], COMPARE_ROWS):
            hi = lo + COMPARE_ROWS
            tally.add(ref[lo:hi].double().numpy(), values[lo:hi].double().numpy(), targets[lo:hi].numpy())
    return Scored(tally.summary(), tally.per_position())
