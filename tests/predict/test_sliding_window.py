"""The predictor models the checkpoint's sliding window: W - 1 tokens kept per layer after each step, the whole
prompt's K/V during the prefill, and the "full" policy (no window) as an input. Hand-computed figures, and the
prefill peak against torch's allocation record."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bench.cli import main
from bench.errors import BadInputError
from bench.predict.architecture import architecture
from bench.predict.kv_cache import (
    cache_window,
    final_cache_tokens,
    final_storage_tokens,
    mean_cache_tokens,
    storage_tokens,
    windowed_step_tokens,
)
from bench.predict.memory import predict_memory

KV_TOKEN_FP16 = 393_216  # Phi-3-mini: 2 x 32 layers x 32 heads x 96 x 2 bytes


def test_cache_tokens_with_and_without_a_window() -> None:
    # 3000 + 4 tokens (the issue's case): 3003 tokens seen, a 2047-token window keeps 2046
    assert final_cache_tokens(3000, 4) == 3003
    assert final_cache_tokens(3000, 4, 2047) == 2046
    assert final_cache_tokens(100, 8, 2047) == 107  # below the window nothing is dropped
    assert final_cache_tokens(44, 1, 16) == 15  # a prefill-only generate keeps W - 1 visible tokens


def test_storage_behind_a_window_layer_is_the_last_concatenation() -> None:
    # measured on a tiny Phi-3 with window 16 (see test_window_measured.py): prompt 44 -> storage 44 after the
    # prefill, 16 after a decode step; prompt 14 + 5 new -> 16; prompt 10 + 3 new -> 12
    assert storage_tokens(44, 0, 16) == 44
    assert storage_tokens(44, 1, 16) == 16
    assert final_storage_tokens(44, 1, 16) == 44
    assert final_storage_tokens(14, 5, 16) == 16
    assert final_storage_tokens(10, 3, 16) == 12
    assert final_storage_tokens(10, 3) == 12  # no window: the cache itself


def test_worst_decode_step_under_a_window() -> None:
    # prompt above the window: the first step holds every layer's prompt (44) and layer 0's new 16 tokens
    assert windowed_step_tokens(2, 44, 5, 16) == (2 * 44, 16)
    # prompt below the window, growing to it: the last step (t = 4: S = 14, then min(10 + 4, 16) = 14)
    assert windowed_step_tokens(2, 10, 5, 16) == (2 * 14, 13)
    assert windowed_step_tokens(2, 10, 1, 16) == (0, 0)  # no decode step


def test_mean_cache_tokens_is_capped_at_the_window() -> None:
    assert mean_cache_tokens(100, 9) == 104
    assert mean_cache_tokens(4032, 64, 2047) == 2046


def test_cache_policy_window_of_the_registered_models() -> None:
    phi = architecture("phi-3-mini")
    assert phi.sliding_window == 2047
    assert cache_window(phi) == 2047 and cache_window(phi, "window") == 2047
    assert cache_window(phi, "full") is None
    assert cache_window(architecture("bert-base")) is None
    with pytest.raises(BadInputError, match="'sometimes' is not one of config, window, full"):
        cache_window(phi, "sometimes")


def test_full_size_phi3_above_the_window_keeps_2046_tokens_but_peaks_in_the_prefill() -> None:
    window = predict_memory("phi-3-mini", "fp16", 4032, 1, 64)
    full = predict_memory("phi-3-mini", "fp16", 4032, 1, 64, cache="full")
    assert window.kv_cache_tokens == 2046 and window.kv_cache_final_bytes == KV_TOKEN_FP16 * 2046
    assert full.kv_cache_tokens == 4095 and full.kv_cache_final_bytes == KV_TOKEN_FP16 * 4095
    assert (window.cache_policy, window.cache_window_tokens) == ("window", 2047)
    assert (full.cache_policy, full.cache_window_tokens) == ("full", None)
    # the prefill computes (and the window layer keeps a view of) every layer's K/V for the whole prompt
    assert window.peak_phase == full.peak_phase == "prefill"
    assert window.kv_cache_bytes == full.kv_cache_bytes == KV_TOKEN_FP16 * 4032
    # what the window's masks cost at the peak is measured in test_the_window_prefill_peak_against_torch_allocations


def test_the_issue_case_3000_plus_4_on_the_two_layer_model() -> None:
    # reproduced by the issue on the CPU: 147,603,456 bytes of fp32 KV cache without the window, 100,564,992 with it
    assert predict_memory("phi-3-mini-2l", "fp32", 3000, 1, 4, cache="full").kv_cache_final_bytes == 147_603_456
    assert predict_memory("phi-3-mini-2l", "fp32", 3000, 1, 4).kv_cache_final_bytes == 100_564_992


def test_a_long_generation_from_a_short_prompt_is_capped_by_the_window() -> None:
    # prompt 16, 3000 new tokens: the full cache grows to 3015 tokens, the window stops at 2047 of storage
    window = predict_memory("phi-3-mini", "fp16", 16, 1, 3000)
    full = predict_memory("phi-3-mini", "fp16", 16, 1, 3000, cache="full")
    assert full.peak_phase == window.peak_phase == "decode"
    per_layer = KV_TOKEN_FP16 // 32
    assert window.kv_cache_bytes == per_layer * 32 * 2047  # every layer's 2047-token storage at the last step
    assert full.kv_cache_bytes == KV_TOKEN_FP16 * 3015
    assert full.total_bytes - window.total_bytes > KV_TOKEN_FP16 * 900


def test_cache_policies_that_cannot_apply_are_refused() -> None:
    with pytest.raises(BadInputError, match="encoder and keeps no KV cache"):
        predict_memory("bert-base", "fp16", 128, 1, 0, cache="window")
    no_window = dataclasses.replace(architecture("phi-3-mini"), sliding_window=None)
    with pytest.raises(BadInputError, match="no sliding window in its config"):
        cache_window(no_window, "window")


def test_predict_json_keeps_final_bytes_and_adds_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["predict", "--model", "phi-3-mini", "--precision", "nf4", "--context", "4032", "--new-tokens", "64"]
    assert main([*argv, "--json"]) == 0
    memory = json.loads(capsys.readouterr().out)["memory"]
    assert memory["kv_cache_final_bytes"] == KV_TOKEN_FP16 * 2046 and memory["kv_cache_tokens"] == 2046
    assert memory["cache_policy"] == "window" and memory["label"] == "predicted"
    assert main([*argv, "--cache", "full", "--json"]) == 0
    full = json.loads(capsys.readouterr().out)["memory"]
    assert full["kv_cache_tokens"] == 4095 and full["cache_policy"] == "full"


@pytest.mark.slow
def test_the_window_prefill_peak_against_torch_allocations() -> None:
    """A 2100-token prefill of phi-3-tiny (fp32, above its 2047-token window), with the window and without it:
    the predicted peak of live tensors (KV cache + activations) against torch's own allocation record.

    Measured here (2-core CPU, torch 2.14.1, transformers 5.25): 50,180,992 B with the window (predicted
    51,114,000, at attention: the boolean mask and SDPA's fp32 additive copy of it), 35,515,232 B without it
    (predicted 35,481,600, at the MLP).
    """
    from live_tensors import live_tensor_peak

    length = 2100
    measured = {cache: live_tensor_peak("phi-3-tiny", "fp32", length, 1, 2, cache) for cache in ("window", "full")}
    predicted = {}
    for cache in ("window", "full"):
        p = predict_memory("phi-3-tiny", "fp32", length, 1, 2, cache=cache)
        predicted[cache] = p.kv_cache_bytes + p.activation_bytes
        assert predicted[cache] == pytest.approx(measured[cache], rel=0.05), cache
    # what the window costs at the peak (the masks, less what the full cache's MLP stage held): within 10%
    window_cost = measured["window"] - measured["full"]
    assert window_cost > length * length  # more than the boolean mask alone
    assert predicted["window"] - predicted["full"] == pytest.approx(window_cost, rel=0.10)
