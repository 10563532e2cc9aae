"""The quality formulas against hand-worked distributions and torch's own functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.config.spec import CaseSpec
from bench.results.quality import (
    QualityTally,
    cosine_similarity,
    kl_divergence_nats,
    measured_kl_by_precision,
    negative_log_likelihood,
    perplexity,
    top1_matches,
)
from bench.results.record import Record


def test_kl_of_two_known_distributions():
    # p = (1/2, 1/2), q = (1/4, 3/4): KL(p||q) = 1/2 ln 2 + 1/2 ln(2/3), worked by hand
    p_logits = np.log([[0.5, 0.5]])
    q_logits = np.log([[0.25, 0.75]]) + 3.0  # a constant shift changes no probability
    expected = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    assert kl_divergence_nats(p_logits, q_logits)[0] == pytest.approx(expected, rel=1e-12)
    # and it is not symmetric: KL(q||p) = 1/4 ln(1/2) + 3/4 ln(3/2)
    assert kl_divergence_nats(q_logits, p_logits)[0] == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5))


def test_identical_16_bit_logits_give_exactly_zero():
    logits = torch.randn(5, 300, generator=torch.Generator().manual_seed(1)).half()
    kl = kl_divergence_nats(logits.double().numpy(), logits.double().numpy())
    assert (kl == 0).all()
    assert top1_matches(logits.numpy(), logits.numpy()).all()


def test_kl_nll_and_top1_match_torch():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(7, 50, generator=g, dtype=torch.float64)
    other = ref + 0.3 * torch.randn(7, 50, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 50, (7,), generator=g)
    by_torch = torch.nn.functional.kl_div(
        torch.log_softmax(other, -1), torch.log_softmax(ref, -1), log_target=True, reduction="none"
    ).sum(-1)
    np.testing.assert_allclose(kl_divergence_nats(ref.numpy(), other.numpy()), by_torch.numpy(), rtol=1e-10)
    ce = torch.nn.functional.cross_entropy(other, targets, reduction="none")
    np.testing.assert_allclose(negative_log_likelihood(other.numpy(), targets.numpy()), ce.numpy(), rtol=1e-10)
    assert perplexity(ce.numpy()) == pytest.approx(math.exp(float(ce.mean())))
    assert list(top1_matches(ref.numpy(), other.numpy())) == list((ref.argmax(-1) == other.argmax(-1)).numpy())


def test_tally_gathers_chunks_in_order_and_summarises():
    g = torch.Generator().manual_seed(2)
    ref = torch.randn(10, 20, generator=g, dtype=torch.float64)
    other = ref + torch.randn(10, 20, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 20, (10,), generator=g)
    tally = QualityTally()
    tally.add(ref[:4].numpy(), other[:4].numpy(), targets[:4].numpy())
    tally.add(ref[4:].numpy(), other[4:].numpy(), targets[4:].numpy())
    whole = kl_divergence_nats(ref.numpy(), other.numpy())
    np.testing.assert_array_equal(tally.per_position()["kl_nats"], whole)
    s = tally.summary()
    assert s["tokens_scored"] == 10
    assert s["kl_mean_nats"] == pytest.approx(whole.mean())
    assert s["kl_p99_nats"] == pytest.approx(np.percentile(whole, 99))  # numpy's linear percentile
    assert s["kl_max_nats"] == whole.max()
    assert s["perplexity"] > 1 and s["reference_perplexity"] > 1


def test_cosine_of_parallel_and_orthogonal_rows():
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    b = np.array([[0.0, 2.0], [3.0, 3.0]])
    np.testing.assert_allclose(cosine_similarity(a, b), [0.0, 1.0], atol=1e-15)


def _with_kl(precision: str, kl: float, device: str = "cpu", random: bool = False) -> Record:
    quality = {"status": "ok", "kl_mean_nats": kl, "random_weights": random}
    return Record(CaseSpec("m", precision, "generate", 1, 8, 4, device=device), "ok", quality=quality)


def test_measured_kl_takes_the_worst_and_skips_random_weights():
    records = [_with_kl("nf4", 0.05), _with_kl("nf4", 0.07, device="cuda"), _with_kl("int8", 9.0, random=True)]
    assert measured_kl_by_precision(records) == {("m", "nf4"): 0.07}
