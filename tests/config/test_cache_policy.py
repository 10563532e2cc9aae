"""The cache policy of a case: the spec field, its key, suites, the command line's --cache, and the sources."""

import pytest

from bench.config.models import resolve_source
from bench.config.spec import CaseSpec
from bench.config.suite import load_suite, parse_suite, with_overrides
from bench.errors import BadInputError


def test_keys_of_cases_at_the_default_cache_are_unchanged():
    # the keys this harness gave these cases before the cache field existed
    assert (
        CaseSpec("phi-3-tiny", "fp32", "generate", 1, 128, 32).key
        == "phi-3-tiny/fp32/generate/b1/L128/n32/c7c9f60fe2b9"
    )
    spec = CaseSpec("bert-tiny", "fp32", "encode", 2, 64, 0, suite="smoke")
    assert spec.key == "bert-tiny/fp32/encode/b2/L64/n0/12bcb6ebbde4"
    assert CaseSpec.from_dict({k: v for k, v in spec.to_dict().items() if k != "cache"}) == spec


def test_full_cache_is_another_case_and_another_loaded_model():
    base = CaseSpec("phi-3-tiny", "fp32", "generate", 1, 128, 32)
    full = base.with_(cache="full")
    assert full.key != base.key and full.key.startswith("phi-3-tiny/fp32/generate/b1/L128/n32/")
    assert full.group != base.group
    assert full.label == "phi-3-tiny fp32 generate b1 L128 n32 [cache full]" and "cache" not in base.label
    assert CaseSpec.from_dict(full.to_dict()) == full


def test_full_removes_the_window_and_keeps_the_checkpoint_config():
    source = resolve_source("phi-3-tiny", "random", "full")
    assert source.config().sliding_window is None
    assert source.config_factory().sliding_window == 2047  # what random checkpoints are built from
    assert source.sliding_window == 2047 and source.window_removed
    default = resolve_source("phi-3-tiny", "random")
    assert default.config().sliding_window == 2047 and not default.window_removed
    assert resolve_source("phi-3-tiny", "random", "window").config().sliding_window == 2047


@pytest.mark.parametrize(
    "model, cache, message",
    [
        ("bert-tiny", "full", "is an encoder and keeps no KV cache"),
        ("phi-3-tiny", "sliding", "cache policy 'sliding' is not one of config, window, full"),
    ],
)
def test_sources_refuse_a_cache_policy_that_cannot_apply(model, cache, message):
    with pytest.raises(BadInputError, match=message):
        resolve_source(model, "random", cache)


def _suite(cache=None, models=("phi-3-tiny", "bert-tiny")):
    group = {"models": list(models), "precisions": ["fp32"], "contexts": [16], "new_tokens": [2]}
    if cache is not None:
        group["cache"] = cache
    return parse_suite({"name": "t", "group": [group]})


def test_suite_cache_key_applies_to_decoders_only():
    cases = {c.model: c for c in _suite("full").cases}
    assert cases["phi-3-tiny"].cache == "full"
    assert cases["bert-tiny"].cache == "config"  # encoders keep no cache; their key stays the default one
    assert {c.cache for c in _suite().cases} == {"config"}


def test_suite_cache_key_is_validated():
    with pytest.raises(BadInputError, match=r"\[\[group\]\] #1: key 'cache' must be one of config, window, full"):
        _suite("none")


def test_command_line_cache_overrides_the_suite():
    suite = with_overrides(load_suite("smoke"), cache="full")
    assert {c.cache for c in suite.cases if c.scenario == "generate"} == {"full"}
    assert {c.cache for c in suite.cases if c.scenario == "encode"} <= {"config"}


def test_command_line_cache_for_encoders_only_is_refused():
    suite = with_overrides(_suite(models=("bert-tiny",)), cache="full")
    with pytest.raises(BadInputError, match="--cache full: every case of this run is an encoder"):
        _ = suite.cases


def test_window_on_a_windowless_checkpoint_is_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "phi3", "architectures": ["Phi3ForCausalLM"]}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(BadInputError, match="has no sliding window in its config"):
        resolve_source("mine", f"checkpoint:{tmp_path}", "window")
    assert resolve_source("mine", f"checkpoint:{tmp_path}", "full").sliding_window is None
