import ast
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "gpu-bench.yml"


@pytest.fixture(scope="module")
def workflow():
    return yaml.safe_load(WORKFLOW.read_text())


def _run_lines(job):
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_bench_job_is_a_matrix_of_gpu_runners_and_shards(workflow):
    job = workflow["jobs"]["bench"]
    assert job["runs-on"][:2] == ["self-hosted", "gpu"]
    assert job["runs-on"][2] == "${{ matrix.gpu }}"
    matrix = job["strategy"]["matrix"]
    assert len(matrix["gpu"]) >= 2
    assert int(workflow["env"]["SHARDS"]) == len(matrix["shard"]) == max(matrix["shard"])
    run = _run_lines(job)
    assert "nox -s bench" in run and '--shard "${{ matrix.shard }}/$SHARDS"' in run
    assert any(s.get("uses", "").startswith("actions/upload-artifact") for s in job["steps"])


def test_gate_job_merges_reports_compares_and_fails_on_regression(workflow):
    job = workflow["jobs"]["gate"]
    assert job["needs"] == "bench"
    run = _run_lines(job)
    order = [run.index(s) for s in ("bench merge shards/*", "bench report", "bench compare", "GITHUB_STEP_SUMMARY")]
    assert order == sorted(order)
    assert any(s.get("uses", "").startswith("actions/download-artifact") for s in job["steps"])
    assert any(s.get("uses", "").startswith("actions/upload-artifact") and s["with"]["path"] == "reports/merged"
               for s in job["steps"])
    gate = next(s for s in job["steps"] if s.get("name", "").startswith("Gate"))
    assert gate["run"] == 'exit "${{ steps.compare.outputs.status }}"'


def test_noxfile_has_a_compare_session():
    tree = ast.parse((REPO / "noxfile.py").read_text())
    sessions = {f.name for f in tree.body if isinstance(f, ast.FunctionDef)
                and any("session" in ast.unparse(d) for d in f.decorator_list)}
    assert {"bench", "compare"} <= sessions
    source = ast.unparse(next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "compare"))
    assert "'bench', 'compare'" in source
