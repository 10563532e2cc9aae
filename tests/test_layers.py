"""Imports follow the data flow: config -> measure -> results -> (claims, predict, track) -> report."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bench"
SHARED = {"errors", "units"}
# What each layer may import of bench, besides itself and the shared leaf modules.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "units": set(),
    "config": set(),
    "results": {"config"},
    "measure": {"config", "results"},
    "claims": {"config", "results"},
    "predict": {"config", "results"},
    "track": {"config", "results"},
    "report": {"config", "results", "claims", "predict", "track"},
    "commands": {"config", "results", "measure", "claims", "predict", "track", "report"},
    "cli": {"commands"},
    "__main__": {"cli"},
    "__init__": set(),
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    """Every bench module a file imports, at the top or inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "bench")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "bench":
                continue
            if target == "bench":
                found.update(f"bench.{a.name}" for a in node.names)
            else:
                found.add(target)
    return found


def violations(root: Path) -> list[str]:
    """Each forbidden edge in the package at ``root`` as 'importer -> imported'."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(root, path)
        layer = _layer(module)
        if layer not in ALLOWED:
            bad.append(f"{module}: not in a known layer")
            continue
        for target in sorted(_imports(path, module)):
            other = _layer(target)
            if other in {layer, *SHARED, "__init__"} and not (other == "__init__" and target != "bench"):
                continue
            if other not in ALLOWED[layer]:
                bad.append(f"{module} -> {target}")
    return bad


def test_the_package_imports_only_along_the_data_flow():
    assert violations(PACKAGE) == []


def test_every_module_sits_in_a_layer():
    layers = {_layer(_module_name(PACKAGE, p)) for p in PACKAGE.rglob("*.py")}
    assert layers <= set(ALLOWED)
    assert {"config", "measure", "results", "claims", "predict", "track", "report", "commands"} <= layers


@pytest.mark.parametrize(
    ("importer", "source", "edge"),
    [
        ("config/spec.py", "from bench.results.record import Record\n", "bench.config.spec -> bench.results.record"),
        ("results/record.py", "def f():\n    from bench.measure import case_runner\n", "bench.results.record -> bench.measure"),  # noqa: E501
        (
            "claims/claim_verdicts.py",
            "from bench.predict import predictor\n",
            "bench.claims.claim_verdicts -> bench.predict",
        ),
        ("report/build.py", "import bench.measure.runner\n", "bench.report.build -> bench.measure.runner"),
        ("track/compare.py", "from ..commands import run_cmd\n", "bench.track.compare -> bench.commands"),
    ],
)
def test_a_forbidden_import_is_caught(tmp_path, importer, source, edge):
    root = tmp_path / "bench"
    for name in ("config", "results", "measure", "claims", "predict", "report", "track", "commands"):
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "errors.py").write_text("")
    (root / importer).write_text("from bench.errors import BadInputError\n" + source)
    assert violations(root) == [edge]
