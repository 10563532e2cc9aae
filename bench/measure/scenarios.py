"""Scenarios: one timed call each. ``generate`` timestamps every new token; ``encode`` times a forward pass.

The clock and the device synchronisation are injected, so the formulas are testable with a fake clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.results.metrics import token_times_to_sample

Clock = Callable[[], float]
Sync = Callable[[], None]


def no_sync() -> None:
    """Synchronisation for a CPU: nothing to wait for."""


def device_sync(device: str) -> Sync:
    """A function that waits for queued work on ``device`` (CUDA), or does nothing (CPU)."""
    if not device.startswith("cuda"):
        return no_sync
    import torch

    return lambda: torch.cuda.synchronize(device)


class TokenTimer:
    """A transformers streamer that reads the clock as each new token reaches the host.

    generate() hands the prompt first (skipped), then each step's tokens after copying them to the
    host, which waits for the device: the clock is read after the token really exists.
    """

    def __init__(self, clock: Clock = time.perf_counter):
        self.clock = clock
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        """Called by generate() with the prompt, then with every new token."""
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.times.append(self.clock())

    def end(self) -> None:
        """Called by generate() at the end."""


@dataclass(frozen=True)
class GenerateSample:
    """One timed generation: TTFT, E2E and inter-token gaps (seconds), and what it produced."""

    ttft_s: float
    e2e_s: float
    itl_s: tuple[float, ...]
    new_tokens: int
    cache: Any = None


def make_prompt(vocab_size: int, batch_size: int, tokens: int, seed: int, device: str) -> dict[str, Any]:
    """Random prompt token ids from a seed (avoiding the lowest ids, often special tokens), attention mask of ones."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    low = min(100, max(vocab_size // 2, 1))
    ids = torch.randint(low, vocab_size, (batch_size, tokens), generator=gen)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def generation_kwargs(model: Any, new_tokens: int) -> dict[str, Any]:
    """generate() arguments that force exactly ``new_tokens`` greedy tokens (EOS ignored)."""
    pad = getattr(model.generation_config, "pad_token_id", None)
    if pad is None:
        pad = getattr(model.config, "pad_token_id", None) or 0
    return {
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "do_sample": False,
        "num_beams": 1,
        "use_cache": True,
        "pad_token_id": pad,
        "return_dict_in_generate": True,
    }


def run_generate(
    model: Any,
    prompt: dict[str, Any],
    new_tokens: int,
    clock: Clock = time.perf_counter,
    sync: Sync = no_sync,
    extra_kwargs: dict[str, Any] | None = None,
    before: Callable[[], None] | None = None,
) -> GenerateSample:
    """Generate ``new_tokens`` tokens once, timing the first and every later token from the call's start.

    ``extra_kwargs`` go to generate() (an engine's static cache); ``before`` runs before the clock starts
    (an engine resetting that cache), so neither is inside the timed call.
    """
    timer = TokenTimer(clock)
    kwargs = dict(generation_kwargs(model, new_tokens), **(extra_kwargs or {}))
    if before is not None:
        before()
    sync()
    start = clock()
    out = model.generate(**prompt, streamer=timer, **kwargs)
    produced = out.sequences.shape[-1] - prompt["input_ids"].shape[-1]
    if produced != new_tokens or len(timer.times) != new_tokens:
        raise RuntimeError(
            f"generate produced {produced} tokens ({len(timer.times)} timestamps) instead of {new_tokens}"
        )
    ttft, e2e, gaps = token_times_to_sample(start, timer.times)
    cache = out.get("cache") if hasattr(out, "get") else None
    if cache is None:  # transformers releases before the rename
        cache = out.get("past_key_values") if hasattr(out, "get") else getattr(out, "past_key_values", None)
    return GenerateSample(ttft, e2e, gaps, produced, cache)


def run_encode(model: Any, inputs: dict[str, Any], clock: Clock = time.perf_counter, sync: Sync = no_sync) -> float:
    """One forward pass of an encoder; returns its latency in seconds (device work included)."""
    import torch

    sync()
    start = clock()
    with torch.inference_mode():
        model(**inputs)
    sync()
    return clock() - start


def repeat_until(
    run_once: Callable[[], float], min_repetitions: int, max_repetitions: int, min_duration_s: float, clock: Clock
) -> int:
    """Call ``run_once`` at least ``min_repetitions`` times and for ``min_duration_s``, at most ``max_repetitions``."""
    start = clock()
    count = 0
    while count < max_repetitions:
        run_once()
        count += 1
        elapsed = clock() - start
        if count >= min_repetitions and elapsed >= min_duration_s:
            break
    return count
