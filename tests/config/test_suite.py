import pytest

from bench.config.suite import load_suite, parse_suite, shipped_suites, with_overrides
from bench.errors import BadInputError

GOOD = {
    "name": "t",
    "device": "cpu",
    "policy": {"warmup_runs": 0, "min_repetitions": 1, "max_repetitions": 1},
    "group": [{"models": ["phi-3-tiny"], "precisions": ["fp32"], "contexts": [8, 16], "new_tokens": [4]}],
}


def test_shipped_suites_parse_and_cover_every_precision():
    names = shipped_suites()
    assert {"smoke", "gpu", "claims"} <= set(names)
    smoke = load_suite("smoke").cases
    assert {c.model for c in smoke} == {"phi-3-tiny", "bert-tiny"}
    assert {c.precision for c in smoke} == {"fp32", "fp16", "bf16", "int8", "nf4", "nf4-dq", "fp4", "fp4-dq", "q4_0"}
    assert [(c.precision, c.context_tokens) for c in smoke if c.engine == "llama.cpp"] == [("q4_0", 128)]
    gpu = load_suite("gpu").cases
    phi = [c for c in gpu if c.model == "phi-3-mini"]
    assert len(phi) == 3 * 6 and max(c.total_tokens for c in phi) == 4096
    bert = [c for c in gpu if c.model == "bert-base"]
    assert {c.precision for c in bert} == {"fp32", "fp16", "int8", "nf4"} and {c.batch_size for c in bert} == {1, 8}
    assert all(c.scenario == "encode" and c.new_tokens == 0 for c in bert)


def test_cases_are_hashable_with_stable_keys():
    cases = parse_suite(GOOD).cases
    assert len(set(cases)) == 2
    again = parse_suite(GOOD).cases
    assert [c.key for c in cases] == [c.key for c in again]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(colour="red"), "unknown key 'colour'"),
        (lambda d: d["group"][0].pop("contexts"), "missing key 'contexts'"),
        (lambda d: d["group"][0].update(contexts="long"), "'contexts' must be a non-empty list of integers"),
        (lambda d: d["group"][0].update(batch_sizes=[0]), "'batch_sizes'"),
        (lambda d: d["group"][0].update(scenario="chat"), "'scenario' must be one of"),
        (lambda d: d["policy"].update(repeats=3), "unknown key 'repeats'"),
        (lambda d: d.pop("group"), "at least one [[group]]"),
        (lambda d: d["group"][0].update(models=["phi-9"]), "unknown model 'phi-9'"),
        (lambda d: d["group"][0].update(precisions=["int3"]), "unknown precision 'int3'"),
        (lambda d: d["group"][0].update(contexts=[4090], new_tokens=[64]), "over the model's maximum of 4096"),
    ],
)
def test_malformed_suites_name_the_key(mutate, message):
    import copy

    data = copy.deepcopy(GOOD)
    mutate(data)
    with pytest.raises(BadInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _ = parse_suite(data, "my.toml").cases


def test_invalid_toml_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(BadInputError, match="not valid TOML"):
        load_suite(str(bad))
    with pytest.raises(BadInputError, match="unknown suite 'nope'"):
        load_suite("nope")


def test_overrides_replace_lists():
    suite = with_overrides(parse_suite(GOOD), precisions=("fp16", "bf16"), contexts=(32,))
    cases = suite.cases
    assert sorted(c.precision for c in cases) == ["bf16", "fp16"] and {c.context_tokens for c in cases} == {32}
    enc = with_overrides(parse_suite(GOOD), models=("bert-tiny",)).cases
    assert all(c.scenario == "encode" and c.new_tokens == 0 for c in enc)
