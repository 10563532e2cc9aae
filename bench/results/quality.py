"""Quality formulas: how far a precision's next-token distributions are from the reference precision's.

Every quality number is derived here and nowhere else. Logits are rows of next-token scores (one row per
scored position, one column per vocabulary entry); they are turned into log-probabilities in float64 with
scipy's ``log_softmax``, so values stored at 16 bits compare exactly (a precision against itself gives KL 0).

- KL divergence (nats) of a position: ``sum_v p_ref(v) * (log p_ref(v) - log p(v))``, the reference first,
  as ``llama-perplexity --kl-divergence`` reports it; never negative (rounding below 0 is clipped).
- Top-1 agreement: the share of positions whose most likely token is the reference's.
- Perplexity: ``exp(mean negative log-likelihood)`` of the text's next tokens (teacher-forced).
- Encoders: cosine similarity of a precision's pooled embedding to the reference's, one per sequence.

:class:`QualityTally` gathers per-position values chunk by chunk (a chunk's logits never need to sit beside
another chunk's); :meth:`QualityTally.summary` gives the record's ``quality`` numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.results.metrics import percentile


def log_probabilities(logits: Any) -> np.ndarray:
    """Log-softmax of each row of ``logits`` in float64 (scipy.special.log_softmax)."""
    from scipy.special import log_softmax

    return log_softmax(np.asarray(logits, dtype=np.float64), axis=-1)


def kl_divergence_nats(reference_logits: Any, logits: Any) -> np.ndarray:
    """KL(reference || precision) of every row, in nats (float64, clipped at 0)."""
    ref = log_probabilities(reference_logits)
    other = log_probabilities(logits)
    if ref.shape != other.shape:
        raise ValueError(f"logits of shape {other.shape} do not match the reference's {ref.shape}")
    kl = np.sum(np.exp(ref) * (ref - other), axis=-1)
    return np.maximum(kl, 0.0)


def top1_matches(reference_logits: Any, logits: Any) -> np.ndarray:
    """True for every row whose arg-max token is the reference's (the first maximum where tied)."""
    return np.argmax(np.asarray(reference_logits), axis=-1) == np.argmax(np.asarray(logits), axis=-1)


def negative_log_likelihood(logits: Any, targets: Any) -> np.ndarray:
    """``-log p(target)`` of every row, in nats: the loss of the token that really came next."""
    logp = log_probabilities(logits)
    idx = np.asarray(targets, dtype=np.int64)
    if idx.shape != logp.shape[:-1]:
        raise ValueError(f"{idx.shape[0] if idx.ndim else 0} targets for {logp.shape[0]} rows of logits")
    return -np.take_along_axis(logp, idx[:, None], axis=-1)[:, 0]


def perplexity(nll_nats: Any) -> float:
    """``exp(mean negative log-likelihood)``; NaN for no tokens."""
    values = np.asarray(nll_nats, dtype=np.float64)
    return float(math.exp(values.mean())) if values.size else math.nan


def cosine_similarity(reference: Any, other: Any) -> np.ndarray:
    """Cosine similarity of each row of ``other`` to the same row of ``reference`` (float64)."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"embeddings of shape {b.shape} do not match the reference's {a.shape}")
    denom = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.sum(a * b, axis=-1) / np.where(denom > 0, denom, np.nan)


@dataclass
class QualityTally:
    """Per-position KL, top-1 matches and losses of a decoder, added chunk by chunk (see :meth:`add`)."""

    kl_nats: list[np.ndarray] = field(default_factory=list)
    matches: list[np.ndarray] = field(default_factory=list)
    nll_nats: list[np.ndarray] = field(default_factory=list)
    reference_nll_nats: list[np.ndarray] = field(default_factory=list)

    def add(self, reference_logits: Any, logits: Any, targets: Any) -> None:
        """Score one chunk: rows of the reference's and this precision's logits, and the tokens that came next."""
        self.kl_nats.append(kl_divergence_nats(reference_logits, logits))
        self.matches.append(top1_matches(reference_logits, logits))
        self.nll_nats.append(negative_log_likelihood(logits, targets))
        self.reference_nll_nats.append(negative_log_likelihood(reference_logits, targets))

    def per_position(self) -> dict[str, np.ndarray]:
        """Every scored position's values in text order: ``kl_nats``, ``top1``, ``nll_nats``, ``reference_nll_nats``."""

        def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

        return {
            "kl_nats": cat(self.kl_nats, np.float64),
            "top1": cat(self.matches, bool),
            "nll_nats": cat(self.nll_nats, np.float64),
            "reference_nll_nats": cat(self.reference_nll_nats, np.float64),
        }

    def summary(self) -> dict[str, Any]:
        """The record's numbers: mean, p99 and max KL (nats), top-1 agreement, both perplexities, positions scored."""
        pos = self.per_position()
        kl = pos["kl_nats"]
        n = int(kl.size)
        if n == 0:
            raise ValueError("no position was scored: the evaluation text gave fewer than two tokens")
        return {
            "kl_mean_nats": float(kl.mean()),
            "kl_p99_nats": float(percentile(kl.tolist(), 99)),
            "kl_max_nats": float(kl.max()),
            "top1_agreement": float(pos["top1"].mean()),
            "perplexity": perplexity(pos["nll_nats"]),
            "reference_perplexity": perplexity(pos["reference_nll_nats"]),
            "tokens_scored": n,
        }


def embedding_summary(reference: Any, other: Any) -> dict[str, Any]:
    """An encoder's numbers: mean and minimum cosine similarity of pooled embeddings, sequences compared."""
    cos = cosine_similarity(reference, other)
    return {
        "embedding_cosine_mean": float(np.mean(cos)),
        "embedding_cosine_min": float(np.min(cos)),
        "sequences_scored": int(cos.size),
    }


def measured_kl_by_precision(records: Any) -> dict[tuple[str, str], float]:
    """Mean KL (nats) per (model, precision) from records with a measured quality block; where several records
    (devices, runs) disagree, the largest: a quality limit is judged on the worst measurement."""
    out: dict[tuple[str, str], float] = {}
    for r in records:
        q = getattr(r, "quality", None) or {}
        value = q.get("kl_mean_nats")
        if q.get("status") != "ok" or value is None or q.get("random_weights"):
            continue
        key = (r.spec.model, r.spec.precision)
        out[key] = max(out.get(key, value), value)
    return out
