"""The quality pass on a trained tiny Phi-3 (a real local checkpoint): the reference against itself, int8 and 4-bit
against it, checked against an independent computation with transformers and torch; random weights refused."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from bench.config.eval_text import load_eval_text
from bench.errors import BadInputError
from bench.measure.quality_reference import ReferenceStore
from bench.measure.quality_stage import QualityJob, measure_job

pytestmark = pytest.mark.slow

TOKENS = 300  # text tokens scored: windows of 128 = BOS + 127 text tokens, so 3 windows (127, 127, 46)
WINDOW = 128


@pytest.fixture(scope="module")
def scored(trained_tiny_checkpoint):
    base = QualityJob(
        "tiny", f"checkpoint:{trained_tiny_checkpoint}", "fp16", "cpu", window_tokens=WINDOW, max_tokens=TOKENS
    )
    return {p: measure_job(dataclasses.replace(base, precision=p)) for p in ("fp16", "int8", "nf4")}


def test_reference_against_itself_is_exact(scored):
    q = scored["fp16"].summary
    assert q["reference_precision"] == "fp16" and q["reference_dtype"] == "float16"
    assert q["kl_mean_nats"] == 0.0 and q["kl_p99_nats"] == 0.0 and q["top1_agreement"] == 1.0
    assert q["perplexity"] == q["reference_perplexity"]
    assert q["reference_cached"] is False and q["reference_wall_s"] > 0  # the first job wrote the reference


def test_quantized_precisions_move_the_predictions(scored):
    int8, nf4 = scored["int8"].summary, scored["nf4"].summary
    for q in (int8, nf4):
        assert q["quantized_linear_layers"] == 8  # every decoder linear layer; lm_head stays 16-bit
        assert q["reference_cached"] is True  # the fp16 job's reference was read back, not recomputed
        assert q["kl_mean_nats"] > 0 and q["kl_p99_nats"] >= q["kl_mean_nats"]
        assert 0.5 < q["top1_agreement"] <= 1.0
    assert nf4["kl_mean_nats"] > int8["kl_mean_nats"]  # 4 bits lose more than 8
    # the trained model predicts the text far better than chance (vocabulary of 320)
    assert scored["fp16"].summary["perplexity"] < 100


def test_record_fields_name_text_and_tokens(scored):
    q = scored["nf4"].summary
    text = load_eval_text()
    assert q["eval_text_chars"] == text.chars == len(text.text) and q["eval_text_sha256"] == text.sha256
    assert "National Archives" in q["eval_text_source"]
    assert q["tokens_scored"] == TOKENS and q["text_tokens"] == TOKENS  # a BOS opens each window: all scored
    assert q["windows"] == 3 and q["window_prefix_tokens"] == 1 and q["window_tokens"] == WINDOW
    assert q["random_weights"] is False and "label" not in q


def test_reference_is_kept_on_disk_window_by_window(scored):
    store = ReferenceStore(scored["fp16"].summary["reference_key"])
    meta = store.meta()
    assert meta["chunks"] == 3 and meta["reference_precision"] == "fp16"
    shapes = [tuple(store.chunk(i).shape) for i in range(3)]
    assert shapes == [(127, 320), (127, 320), (46, 320)]
    assert store.chunk(0).dtype == torch.float16  # kept as the model produced it


def _independent_logits(path, quantization_config=None):
    """Logits of every window with transformers and torch only (no bench code), as float64."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    ids = tok(load_eval_text().text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    body = ids[1 : 1 + TOKENS]
    model = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=torch.float16, quantization_config=quantization_config, device_map={"": "cpu"}
    ).eval()
    rows, targets = [], []
    with torch.inference_mode():
        for i in range(0, len(body), WINDOW - 1):
            piece = body[i : i + WINDOW - 1]
            logits = model(input_ids=torch.tensor([[tok.bos_token_id, *piece]])).logits[0, : len(piece)]
            rows.append(logits.double())
            targets += piece
    return torch.cat(rows), torch.tensor(targets)


def test_numbers_match_an_independent_computation(scored, trained_tiny_checkpoint):
    from transformers import BitsAndBytesConfig

    ref, targets = _independent_logits(trained_tiny_checkpoint)
    nf4_cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float16)
    nf4, _ = _independent_logits(trained_tiny_checkpoint, nf4_cfg)
    kl = torch.nn.functional.kl_div(
        torch.log_softmax(nf4, -1), torch.log_softmax(ref, -1), log_target=True, reduction="none"
    ).sum(-1)
    per = scored["nf4"].per_position
    positions = [0, 1, 40, 126, 127, 200, TOKENS - 1]  # both sides of each window boundary
    for p in positions:
        assert per["kl_nats"][p] == pytest.approx(float(kl[p]), rel=1e-6, abs=1e-9), p
        assert bool(per["top1"][p]) == bool(ref[p].argmax() == nf4[p].argmax()), p
    ce_ref = torch.nn.functional.cross_entropy(ref, targets)
    ce_nf4 = torch.nn.functional.cross_entropy(nf4, targets)
    assert scored["nf4"].summary["reference_perplexity"] == pytest.approx(float(torch.exp(ce_ref)), rel=1e-9)
    assert scored["nf4"].summary["perplexity"] == pytest.approx(float(torch.exp(ce_nf4)), rel=1e-9)
    assert scored["nf4"].summary["kl_mean_nats"] == pytest.approx(float(kl.mean()), rel=1e-9)


def test_random_weights_are_refused_unless_asked_and_then_labelled(trained_tiny_checkpoint):
    job = QualityJob("phi-3-tiny", "random", "fp16", "cpu", window_tokens=64, max_tokens=64)
    with pytest.raises(BadInputError, match="random weights"):
        measure_job(job)
    asked = dataclasses.replace(job, allow_random_weights=True, tokenizer_path=str(trained_tiny_checkpoint))
    q = measure_job(asked).summary
    assert q["random_weights"] is True and "mean nothing" in q["label"]
    assert json.dumps(q)  # the block is JSON as it goes into a record


def test_encoder_embeddings_compared_by_cosine(trained_tiny_checkpoint):
    # random weights, asked for explicitly and labelled: this checks the encoder path, not BERT's quality
    job = QualityJob(
        "bert-tiny", "random", "fp32", "cpu", window_tokens=64, max_tokens=200, allow_random_weights=True,
        tokenizer_path=str(trained_tiny_checkpoint),
    )
    same = measure_job(job).summary
    assert same["reference_precision"] == "fp32"  # bert-base's config.json states float32
    assert same["embedding_cosine_min"] == pytest.approx(1.0, abs=1e-12)
    assert same["sequences_scored"] == 4 and same["tokens_scored"] == 200  # BOS + up to 63 text tokens a window
    int8 = measure_job(dataclasses.replace(job, precision="int8")).summary
    assert int8["quantized_linear_layers"] > 0 and int8["embedding_cosine_mean"] < 1.0
    assert int8["random_weights"] is True and "label" in int8
