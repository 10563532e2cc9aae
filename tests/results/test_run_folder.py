"""The run folder: its layout, durable appends, torn last lines, envelopes, timelines, sub-runs, record schemas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_records import envelope, gpu_generate

from bench.cli import main
from bench.config.spec import CaseSpec, TimingPolicy
from bench.errors import BadInputError
from bench.results.record import SCHEMA_VERSION, Record, upgrade_record_dict
from bench.results.run_folder import EnvironmentFileError, RunFolder, latest_by_key, set_aside_torn_line

DATA = Path(__file__).resolve().parents[1] / "data" / "records"


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# --- layout ------------------------------------------------------------------------------------


def test_layout_is_the_documented_one(tmp_path: Path):
    run = RunFolder(tmp_path)
    assert run.results_file == tmp_path / "results.jsonl"
    assert run.environment_file == tmp_path / "environment.json"
    assert run.timelines_file == tmp_path / "telemetry" / "timelines.jsonl"
    assert (run.report_md, run.report_html, run.records_csv) == (
        tmp_path / "report.md",
        tmp_path / "report.html",
        tmp_path / "records.csv",
    )
    assert run.plot_file("ttft.png") == tmp_path / "ttft.png"
    assert run.boundary().root == tmp_path / "boundary"
    assert run.capped("phi3-fp16-8gb").root == tmp_path / "capped" / "phi3-fp16-8gb"
    assert run.baseline_meta_file == tmp_path / "baseline.json"
    assert (run.label, run.boundary().label, run.capped("x").label) == ("run", "boundary", "capped/x")


def test_a_jsonl_path_names_the_records_of_its_folder(tmp_path: Path):
    run = RunFolder(tmp_path / "other.jsonl")
    assert run.root == tmp_path and run.results_file == tmp_path / "other.jsonl"
    assert run.environment_file == tmp_path / "environment.json"


def test_create_and_what_makes_a_run_folder(tmp_path: Path):
    run = RunFolder(tmp_path / "run")
    assert not run.exists() and not run.is_run_folder()
    run.create()
    assert run.exists() and not run.has_results() and not run.is_run_folder()
    run.record_environment(envelope("r1"))
    assert run.is_run_folder() and not run.has_results()
    run.create(with_results=True)
    assert run.has_results() and run.load_records() == [] and run.record_line_count() == 0


def test_capped_runs_are_listed_by_claim(tmp_path: Path):
    run = RunFolder(tmp_path)
    assert run.capped_runs() == []
    for claim in ("b-claim", "a-claim"):
        run.capped(claim).create().append(gpu_generate("fp16", 128))
    (tmp_path / "capped" / "stray-file").write_text("")
    assert [c.name for c in run.capped_runs()] == ["a-claim", "b-claim"]
    assert run.capped_runs()[0] == run.capped("a-claim")


# --- records -----------------------------------------------------------------------------------


def test_records_round_trip_latest_and_completed_keys(tmp_path: Path):
    run = RunFolder(tmp_path).create()
    assert run.completed_keys() == set()
    first, other = gpu_generate("fp16", 128), gpu_generate("fp16", 1024)
    retry = first.replace(wall_s=9.0)
    run.append_all([first, other, retry])
    assert run.load_records() == [first, other, retry]
    assert run.latest() == {first.spec.key: retry, other.spec.key: other} == latest_by_key([first, other, retry])
    assert run.completed_keys() == {first.spec.key, other.spec.key}
    assert run.record_line_count() == 3


def test_missing_results_file_says_how_to_make_one(tmp_path: Path):
    with pytest.raises(BadInputError, match="no results file at .*results.jsonl: run 'bench run --out"):
        RunFolder(tmp_path).load_records()


def test_a_corrupt_line_is_named_by_file_and_line(tmp_path: Path):
    run = RunFolder(tmp_path).create()
    run.append_all([gpu_generate("fp16", 128), gpu_generate("fp16", 1024)])
    lines = _lines(run.results_file)
    run.results_file.write_text("\n".join([lines[0], "{oops", lines[1]]) + "\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"results\.jsonl:2 is not a valid record"):
        run.load_records()
    assert len(run.load_records(strict=False)) == 2


def test_a_torn_last_line_is_skipped_on_load(tmp_path: Path):
    run = RunFolder(tmp_path).create()
    run.append(gpu_generate("fp16", 128))
    with open(run.results_file, "a", encoding="utf-8") as fh:
        fh.write('{"schema": 1, "spec": {"mod')
    assert len(run.load_records()) == 1
    assert run.completed_keys() == {gpu_generate("fp16", 128).spec.key}


def test_append_after_a_torn_write_sets_the_fragment_aside(tmp_path: Path):
    """A crash mid-write left a fragment without a newline: the next append must not land on it."""
    run = RunFolder(tmp_path).create()
    done, torn, rerun = gpu_generate("fp16", 128), gpu_generate("fp16", 1024), gpu_generate("fp16", 2048)
    run.append(done)
    whole = json.dumps(torn.to_dict(), sort_keys=True)
    with open(run.results_file, "a", encoding="utf-8") as fh:
        fh.write(whole[: len(whole) // 2])  # the crash
    assert run.completed_keys() == {done.spec.key}  # so --resume runs the torn case again
    run.append(torn)
    run.append(rerun)
    assert run.load_records() == [done, torn, rerun]
    assert all(json.loads(line) for line in _lines(run.results_file))  # every line whole
    side = tmp_path / "results.jsonl.torn-1"
    assert side.read_text(encoding="utf-8") == whole[: len(whole) // 2]
    # a second torn write gets the next side file; a clean file is left alone
    with open(run.results_file, "a", encoding="utf-8") as fh:
        fh.write("{")
    assert run.repair() == [tmp_path / "results.jsonl.torn-2"]
    assert run.repair() == [] and len(run.load_records()) == 3


def test_a_whole_last_line_without_its_newline_is_kept(tmp_path: Path):
    run = RunFolder(tmp_path).create()
    first, second = gpu_generate("fp16", 128), gpu_generate("fp16", 1024)
    run.results_file.write_text(json.dumps(first.to_dict(), sort_keys=True), encoding="utf-8")
    assert set_aside_torn_line(run.results_file) is None
    assert run.results_file.read_text(encoding="utf-8").endswith("\n")
    run.append(second)
    assert run.load_records() == [first, second] and not list(tmp_path.glob("*.torn-*"))


def test_resume_reruns_a_torn_case_into_a_valid_file(tmp_path: Path, monkeypatch):
    """The runner end to end (with a fake executor): a run killed mid-write is completed by --resume."""
    from bench.measure import runner

    cases = [CaseSpec("bert-tiny", "fp32", "encode", 1, c) for c in (8, 16, 32)]

    class FakeExecutor:
        ran: list[str] = []

        def __init__(self, options):
            self.run_id = options.run_id

        def run(self, spec, policy):
            FakeExecutor.ran.append(spec.key)
            return Record(spec=spec, status="ok", run_id=self.run_id, policy=policy), [{"t_s": 0.0}]

        def close(self):
            pass

    monkeypatch.setattr(runner, "_InProcess", FakeExecutor)
    monkeypatch.setattr(runner, "quiet_libraries", lambda: None)
    policy = TimingPolicy()
    out = tmp_path / "run"
    runner.run_cases(cases[:2], policy, runner.RunOptions(out, progress=False, in_process=True, run_id="a"))
    folder = RunFolder(out)
    text = folder.results_file.read_text(encoding="utf-8")
    folder.results_file.write_text(text[: len(text) - 40], encoding="utf-8")  # killed writing the second record
    tl = folder.timelines_file.read_text(encoding="utf-8")
    folder.timelines_file.write_text(tl[:-5], encoding="utf-8")
    FakeExecutor.ran = []
    options = runner.RunOptions(out, progress=False, in_process=True, resume=True, run_id="b")
    runner.run_cases(cases, policy, options)
    assert FakeExecutor.ran == [cases[1].key, cases[2].key]
    records = folder.load_records()
    assert [r.spec.key for r in records] == [c.key for c in cases]
    assert [r.run_id for r in records] == ["a", "b", "b"]
    assert set(folder.read_timelines()) == {c.key for c in cases}
    assert (out / "results.jsonl.torn-1").is_file() and (out / "telemetry" / "timelines.jsonl.torn-1").is_file()


# --- record schemas ----------------------------------------------------------------------------


def _stored_record() -> dict:
    return json.loads((DATA / "schema-1.json").read_text(encoding="utf-8"))


def test_a_stored_schema_1_record_is_upgraded_explicitly():
    data = _stored_record()
    assert data["schema"] == 1 and SCHEMA_VERSION == 4
    upgraded = upgrade_record_dict(data)
    assert upgraded["schema"] == SCHEMA_VERSION and data["schema"] == 1  # the input is not changed
    # a schema-1 Phi-3 record was built without the checkpoint's sliding window: said, not hidden
    assert upgraded["flags"] == [*data["flags"], "built_without_window"]
    assert {k: v for k, v in upgraded.items() if k not in ("schema", "flags")} == {
        k: v for k, v in data.items() if k not in ("schema", "flags")
    }
    record = Record.from_dict(data)
    assert (record.spec.model, record.spec.precision, record.spec.context_tokens) == ("phi-3-mini", "fp16", 128)
    assert record.memory.nvml_process_peak_bytes == 8_365_676_544 and record.device_name == "NVIDIA H200"
    assert record.spec.key == data["key"]  # the case keeps its identity: old baselines still match
    assert record.memory.cache_policy is None  # not recorded by a schema-1 harness
    assert not record.load.recorded and not record.user_view.recorded  # nor the loading phase (schema 3)
    assert record.load.load_peak_allocated_bytes is None and record.user_view.nvml_process_after_bytes is None
    assert record.quality == {}  # no quality pass before schema 3
    assert record.prediction.predicted_peak_bytes is None  # no prediction before schema 4
    assert not any(k.startswith("predicted_") for k in record.metrics)
    again = record.to_dict()
    for k, v in data.items():  # every stored value comes back; versions 2 to 4 only add fields
        if k in ("metrics", "schema", "flags"):
            continue
        if isinstance(v, dict):
            assert {f: x for f, x in again[k].items() if f in v} == v, k
        else:
            assert again[k] == v, k


def test_a_schema_2_record_gets_no_old_flag():
    data = {**_stored_record(), "schema": 2}
    assert upgrade_record_dict(data)["flags"] == data["flags"]


def test_the_loading_phase_and_user_view_survive_a_round_trip():
    from bench.results.load_phase import LoadPhase, UserView

    record = Record.from_dict({**_stored_record(), "schema": 2}).replace(
        load=LoadPhase(load_s=2.5, load_peak_allocated_bytes=3_000_000_000, loaded_for_key="k"),
        user_view=UserView(generate_s=0.4, nvml_process_after_bytes=6_584_000_000),
    )
    again = Record.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again.load == record.load and again.user_view == record.user_view and again.schema == 4
    assert again.load.recorded and again.user_view.recorded


def test_a_schema_2_record_loads_without_a_machine_fingerprint():
    data = {**_stored_record(), "schema": 2}
    record = Record.from_dict(data)
    assert record.schema == 4 and record.machine == ""  # not recorded by a schema-2 harness
    assert Record.from_dict({**data, "schema": 3, "machine": "de78a7c4159a"}).machine == "de78a7c4159a"


def test_a_schema_2_record_loads_without_quality():
    data = {**_stored_record(), "schema": 2}
    upgraded = upgrade_record_dict(data)
    assert upgraded["schema"] == SCHEMA_VERSION and "quality" not in upgraded  # the default, "not recorded", applies
    assert Record.from_dict(data).quality == {}


def test_a_record_without_a_schema_is_version_1():
    data = _stored_record()
    del data["schema"]
    upgraded = upgrade_record_dict(data)
    assert upgraded["schema"] == SCHEMA_VERSION and "schema" not in data  # the input is not changed
    assert Record.from_dict(data) == Record.from_dict(_stored_record())


@pytest.mark.parametrize("version", [0, -1, "1", None, True])
def test_an_unknown_schema_is_not_a_record(version):
    data = {**_stored_record(), "schema": version}
    with pytest.raises(ValueError):
        upgrade_record_dict(data)


def test_a_record_from_a_newer_harness_is_refused_in_one_line(tmp_path: Path, capsys):
    run = RunFolder(tmp_path).create()
    run.append(gpu_generate("fp16", 128))
    newer = {**_stored_record(), "schema": SCHEMA_VERSION + 1}
    with open(run.results_file, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(newer) + "\n")
    with pytest.raises(BadInputError, match=r"results\.jsonl:2: .*written by a newer harness .*; upgrade bench$"):
        run.load_records()
    with pytest.raises(BadInputError, match="newer harness"):
        run.completed_keys()  # --resume does not skip past it either
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error: ") and len(err.strip().splitlines()) == 1 and "upgrade bench" in err


# --- environment envelopes ---------------------------------------------------------------------


def test_record_environment_keeps_the_first_run_and_adds_resumed_ones(tmp_path: Path):
    run = RunFolder(tmp_path)
    assert run.read_envelopes() == []
    run.record_environment(envelope("r1"))
    assert run.read_envelopes() == [envelope("r1")]
    run.record_environment(envelope("r2"))
    (env,) = run.read_envelopes()
    assert env["run_id"] == "r1" and [e["run_id"] for e in env["resumed"]] == ["r2"]
    assert not list(tmp_path.glob("*.tmp"))


def test_write_envelopes_writes_the_merged_list(tmp_path: Path):
    run = RunFolder(tmp_path)
    run.write_envelopes([envelope("r1")])
    assert isinstance(json.loads(run.environment_file.read_text(encoding="utf-8")), list)
    run.write_envelopes([envelope("r1"), envelope("r2")])
    assert [e["run_id"] for e in run.read_envelopes()] == ["r1", "r2"]
    run.record_environment(envelope("r3"))  # a run started in a merged folder gets its own envelope
    assert [e["run_id"] for e in run.read_envelopes()] == ["r3"]


@pytest.mark.parametrize(("text", "kind", "message"), [
    ("{not json", "json", "is not valid JSON"),
    ("[1, 2]", "shape", "must hold an object or a list of objects, not list"),
    ('"text"', "shape", "not str"),
])
def test_unusable_environment_files(tmp_path: Path, text, kind, message):
    run = RunFolder(tmp_path)
    run.environment_file.write_text(text, encoding="utf-8")
    with pytest.raises(EnvironmentFileError, match=message) as exc:
        run.read_envelopes()
    assert exc.value.kind == kind and isinstance(exc.value, BadInputError)
    run.record_environment(envelope("r1"))  # a new run replaces what cannot be read
    assert run.read_envelopes() == [envelope("r1")]


# --- telemetry timelines -----------------------------------------------------------------------


def test_timelines_side_file_round_trip(tmp_path: Path):
    run = RunFolder(tmp_path)
    rows_a = [{"t_s": 0.0, "power_w": 100.0}, {"t_s": 0.02, "power_w": 110.0}]
    rows_b = [{"t_s": 0.0, "rss_bytes": 5}]
    path = run.append_timeline("phi-3-mini/fp16/a", rows_a)
    assert path == run.timelines_file
    run.append_timeline("bert/fp16/b", rows_b)
    run.append_timeline("phi-3-mini/fp16/a", rows_a[:1])  # a resumed case supersedes its first try
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"key": "cut-off", "rows": [{"t_')  # a crash mid-write
    assert run.read_timelines() == {"phi-3-mini/fp16/a": rows_a[:1], "bert/fp16/b": rows_b}
    assert RunFolder(tmp_path / "nowhere").read_timelines() == {}
    run.append_timeline("after", rows_b)  # the fragment is set aside, not appended to
    assert run.read_timelines()["after"] == rows_b and len(_lines(path)) == 4
    assert (tmp_path / "telemetry" / "timelines.jsonl.torn-1").read_text().startswith('{"key": "cut-off"')


def test_corrupt_timeline_line_is_an_error(tmp_path: Path):
    run = RunFolder(tmp_path)
    path = run.append_timeline("k", [{"t_s": 0.0}])
    path.write_text("not json\n" + path.read_text(), encoding="utf-8")
    with pytest.raises(BadInputError, match=r"timelines\.jsonl:1 is not a telemetry timeline"):
        run.read_timelines()


# --- stored baselines --------------------------------------------------------------------------


def test_baseline_meta_round_trip(tmp_path: Path):
    run = RunFolder(tmp_path)
    assert run.read_baseline_meta() == {}
    run.write_baseline_meta({"device_name": "NVIDIA H200", "cases": 3})
    assert run.read_baseline_meta() == {"device_name": "NVIDIA H200", "cases": 3}
    run.baseline_meta_file.write_text("{", encoding="utf-8")
    with pytest.raises(BadInputError, match="save the baseline again"):
        run.read_baseline_meta()
