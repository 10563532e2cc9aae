import math

import numpy as np
import pytest

from bench.config.spec import CaseSpec
from bench.measure.scenarios import TokenTimer, repeat_until, run_generate
from bench.results.metrics import coefficient_of_variation, encode_metrics, generate_metrics, percentile
from bench.results.record import Record, Samples


class FakeClock:
    """A clock that returns scripted times."""

    def __init__(self, times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0)


class FakeGenerateModel:
    """Calls the streamer like transformers' generate: prompt first, then one put per new token."""

    class _Cfg:
        pad_token_id = 0

    generation_config = _Cfg()
    config = _Cfg()

    def __init__(self, new_tokens):
        self.new_tokens = new_tokens
        self.kwargs = None

    def generate(self, input_ids, attention_mask, streamer, **kwargs):
        import torch

        self.kwargs = kwargs
        streamer.put(input_ids)
        for _ in range(self.new_tokens):
            streamer.put(torch.zeros(input_ids.shape[0], dtype=torch.long))
        streamer.end()

        class Out:
            sequences = torch.zeros(input_ids.shape[0], input_ids.shape[1] + self.new_tokens)
            past_key_values = None

        return Out()


def test_generate_sample_from_fake_clock():
    import torch

    # call start at 10.0; tokens at 10.5, 10.6, 10.8
    clock = FakeClock([10.0, 10.5, 10.6, 10.8])
    model = FakeGenerateModel(3)
    prompt = {"input_ids": torch.zeros(2, 7, dtype=torch.long), "attention_mask": torch.ones(2, 7)}
    sample = run_generate(model, prompt, 3, clock=clock)
    assert sample.ttft_s == pytest.approx(0.5)
    assert sample.e2e_s == pytest.approx(0.8)
    assert sample.itl_s == pytest.approx((0.1, 0.2))
    # exactly N tokens are forced, EOS ignored, greedy
    assert model.kwargs["min_new_tokens"] == model.kwargs["max_new_tokens"] == 3
    assert model.kwargs["do_sample"] is False


def test_generate_refuses_short_output():
    import torch

    model = FakeGenerateModel(2)
    prompt = {"input_ids": torch.zeros(1, 4, dtype=torch.long), "attention_mask": torch.ones(1, 4)}
    with pytest.raises(RuntimeError, match="instead of 3"):
        run_generate(model, prompt, 3, clock=FakeClock([0, 1, 2]))


def test_generate_metrics_hand_computed():
    # B=2, L=100, N=3; two repetitions
    m = generate_metrics([0.5, 0.3], [0.8, 0.7], [[0.1, 0.2], [0.2, 0.2]], 2, 100, 3)
    assert m["ttft_s"] == pytest.approx(0.4)  # median of 0.5, 0.3
    assert m["e2e_s"] == pytest.approx(0.75)
    # prefill tokens/s per repetition: 200/0.5 = 400, 200/0.3 = 666.67 -> median 533.33
    assert m["prefill_tokens_per_s"] == pytest.approx((400 + 200 / 0.3) / 2)
    # TPOT per repetition: 0.3/2 = 0.15, 0.4/2 = 0.2 -> median 0.175
    assert m["tpot_s"] == pytest.approx(0.175)
    # decode tokens/s per repetition: 2*2/0.3 = 13.33, 2*2/0.4 = 10 -> median 11.67
    assert m["decode_tokens_per_s"] == pytest.approx((4 / 0.3 + 4 / 0.4) / 2)
    # ITL percentiles over all gaps 0.1, 0.2, 0.2, 0.2
    assert m["itl_p50_s"] == pytest.approx(0.2)
    assert m["itl_p90_s"] == pytest.approx(float(np.percentile([0.1, 0.2, 0.2, 0.2], 90)))


def test_single_new_token_has_no_decode_rate():
    m = generate_metrics([0.5], [0.5], [[]], 1, 10, 1)
    assert "decode_tokens_per_s" not in m and m["ttft_s"] == 0.5


def test_encode_metrics_hand_computed():
    m = encode_metrics([0.1, 0.3, 0.2], batch_size=8, sequence_tokens=128)
    assert m["latency_s"] == pytest.approx(0.2)
    assert m["sequences_per_s"] == pytest.approx(40.0)
    assert m["tokens_per_s"] == pytest.approx(8 * 128 / 0.2)


@pytest.mark.parametrize("q", [0, 10, 50, 90, 99, 100])
def test_percentile_matches_numpy(q):
    values = [0.3, 0.1, 0.7, 0.2, 0.9, 0.4]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_cv():
    assert coefficient_of_variation([1.0]) == 0.0
    assert coefficient_of_variation([1.0, 3.0]) == pytest.approx(math.sqrt(2) / 2)


def test_token_timer_skips_prompt():
    clock = FakeClock([1.0, 2.0])
    t = TokenTimer(clock)
    t.put("prompt")
    t.put("a")
    t.put("b")
    assert t.times == [1.0, 2.0]


def test_repeat_until_min_count_and_duration():
    clock = FakeClock([0.0] + [i * 0.4 for i in range(1, 20)])
    calls = []
    n = repeat_until(lambda: calls.append(1), min_repetitions=2, max_repetitions=10, min_duration_s=1.0, clock=clock)
    assert n == 3  # 0.4, 0.8 < 1.0; third call reaches 1.2
    clock = FakeClock([0.0] + [100.0] * 20)
    assert repeat_until(lambda: None, 3, 10, 0.0, clock) == 3
    clock = FakeClock([0.0] + [0.0] * 20)
    assert repeat_until(lambda: None, 1, 4, 5.0, clock) == 4


def test_record_metrics_are_derived_from_samples():
    spec = CaseSpec("phi-3-tiny", "fp32", "generate", 1, 10, 3)
    r = Record(spec=spec, status="ok", samples=Samples(ttft_s=(0.5,), e2e_s=(0.8,), itl_s=((0.1, 0.2),)))
    assert r.metrics["decode_tokens_per_s"] == pytest.approx(2 / 0.3)
    again = Record.from_dict(r.to_dict())
    assert again == r and again.metrics == r.metrics
    with pytest.raises(ValueError, match="status"):
        Record(spec=spec, status="fine")
