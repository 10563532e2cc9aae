"""The engine dimension: a case-spec field (eager by default, out of the key at its default), suites' ``engines``
lists, ``bench run --engine`` (repeatable) and the telemetry-repetition policy keys."""

from __future__ import annotations

import hashlib
import json

import pytest

from bench.cli import main
from bench.config.spec import CaseSpec, TimingPolicy
from bench.config.suite import expand, parse_suite
from bench.errors import BadInputError


def _suite(**group):
    base = {"models": ["phi-3-tiny"], "precisions": ["fp32"], "contexts": [16], "new_tokens": [4]}
    return {"name": "t", "device": "cpu", "group": [dict(base, **group)]}


def test_eager_is_the_default_and_leaves_the_key_as_it_was():
    spec = CaseSpec("phi-3-tiny", "fp32", "generate", 1, 128, 32)
    assert spec.engine == "eager"
    # the key of a case written before the engine (and cache) fields existed: digest of the other fields only
    new_fields = ("suite", "engine", "cache", "kv_cache_type", "threads")
    old_fields = {k: v for k, v in spec.to_dict().items() if k not in new_fields}
    digest = hashlib.sha1(json.dumps(old_fields, sort_keys=True).encode()).hexdigest()[:12]
    assert spec.key == f"phi-3-tiny/fp32/generate/b1/L128/n32/{digest}"


def test_compiled_is_another_case_with_its_own_key_label_and_group():
    eager = CaseSpec("phi-3-tiny", "fp32", "generate", 1, 128, 32)
    compiled = eager.with_(engine="compiled")
    assert compiled.key != eager.key and compiled.key.startswith("phi-3-tiny/fp32/generate/b1/L128/n32/")
    assert compiled.label == "phi-3-tiny fp32 generate b1 L128 n32 [compiled]"
    assert "compiled" not in eager.label and "eager" not in eager.label
    assert compiled.group != eager.group  # each engine loads its own model (the compiled one wraps its forward)
    assert CaseSpec.from_dict(compiled.to_dict()) == compiled
    assert CaseSpec.from_dict({k: v for k, v in eager.to_dict().items() if k != "engine"}).engine == "eager"


def test_a_suite_group_lists_engines_and_each_is_a_case():
    cases = expand(parse_suite(_suite(engines=["eager", "compiled"])))
    assert [c.engine for c in cases] == ["eager", "compiled"]
    assert [c.engine for c in expand(parse_suite(_suite()))] == ["eager"]


def test_an_unknown_engine_in_a_suite_names_it():
    with pytest.raises(BadInputError, match=r"key 'engines': engine 'turbo' is not one of eager, compiled"):
        parse_suite(_suite(engines=["turbo"]))


def test_telemetry_policy_keys_are_checked():
    suite = parse_suite(dict(_suite(), policy={"telemetry_repetitions": 0, "telemetry_min_duration_s": 1.5}))
    assert (suite.policy.telemetry_repetitions, suite.policy.telemetry_min_duration_s) == (0, 1.5)
    assert TimingPolicy().telemetry_repetitions >= 1
    with pytest.raises(BadInputError, match="'telemetry_repetitions' must be a positive integer, got -1"):
        parse_suite(dict(_suite(), policy={"telemetry_repetitions": -1}))
    with pytest.raises(BadInputError, match="'telemetry_min_duration_s' must be a number of seconds >= 0"):
        parse_suite(dict(_suite(), policy={"telemetry_min_duration_s": -2}))


def test_run_engine_option_reaches_the_cases(monkeypatch, tmp_path):
    from bench.commands import run_cmd

    parser_args = ["run", "--model", "phi-3-tiny", "--context", "16", "--device", "cpu"]
    seen = {}

    def fake_run_cases(cases, policy, options):
        seen["engines"] = [c.engine for c in cases]
        return []

    monkeypatch.setattr("bench.measure.runner.run_cases", fake_run_cases)
    monkeypatch.setattr(run_cmd, "_write_report", lambda out: None)
    assert main([*parser_args, "--engine", "compiled", "--engine", "eager", "--out", str(tmp_path / "o")]) == 0
    assert seen["engines"] == ["compiled", "eager"]


def test_run_refuses_an_engine_named_twice_or_unknown(capsys, tmp_path):
    out = tmp_path / "out"
    argv = ["run", "--model", "phi-3-tiny", "--device", "cpu", "--out", str(out)]
    assert main([*argv, "--engine", "eager", "--engine", "eager"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--engine eager is given twice" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--engine", "turbo"])
    assert exc.value.code == 2
    assert "invalid choice: 'turbo'" in capsys.readouterr().err
    assert not out.exists()
