"""The command line answers without loading heavy libraries it does not use (each check in a fresh interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("torch", "transformers", "bitsandbytes", "pandas", "matplotlib", "scipy", "numpy")


def loaded_after(argv: list[str], *, block: tuple[str, ...] = ()) -> dict:
    """Run ``bench.cli.main(argv)`` in a fresh interpreter; the exit status and which HEAVY (and rich) modules
    it loaded. Modules in ``block`` cannot be imported at all there (an import of one fails)."""
    script = textwrap.dedent(
        f"""
        import json, sys
        for name in {list(block)!r}:
            sys.modules[name] = None  # 'import name' now raises ImportError
        import bench.cli
        try:
            code = bench.cli.main({argv!r})
        except SystemExit as exc:
            code = exc.code
        loaded = [m for m in {list(HEAVY) + ["rich"]!r} if sys.modules.get(m) is not None]
        print(json.dumps({{"code": code, "loaded": loaded}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ), timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_imports_no_heavy_library():
    result = loaded_after(["--help"])
    assert result["code"] == 0
    assert result["loaded"] == []


@pytest.mark.parametrize("command", ["run", "compare", "report", "predict", "advise", "profile", "baseline"])
def test_subcommand_help_imports_no_heavy_library(command):
    result = loaded_after([command, "--help"])
    assert result["code"] == 0 and result["loaded"] == []


def test_list_draws_with_rich_only():
    result = loaded_after(["list"])
    assert result["code"] == 0 and result["loaded"] == ["rich"]


@pytest.mark.slow
def test_predict_and_advise_need_no_torch_once_the_summary_is_cached(tmp_path, monkeypatch):
    from bench.predict import architecture as arch_module

    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(arch_module, "_ARCHITECTURES", {})
    arch_module.architecture("phi-3-mini")  # the one meta-device build, written to the cache
    blocked = ("torch", "transformers", "bitsandbytes")  # importing any of them fails in the child
    argv = ["predict", "--model", "phi-3-mini", "--precision", "nf4", "--context", "4032"]
    predict = loaded_after(argv, block=blocked)
    assert predict["code"] == 0 and not set(predict["loaded"]) & {"torch", "transformers", "pandas", "matplotlib"}
    advise = loaded_after(["advise", "--model", "phi-3-mini", "--context", "4096"], block=blocked)
    assert advise["code"] == 0 and not set(advise["loaded"]) & {"torch", "transformers", "pandas", "matplotlib"}


def test_every_subcommand_maps_to_the_module_that_registers_it():
    import argparse

    from bench import cli

    for module in cli.COMMAND_MODULES:
        parser = cli.build_parser((module,))
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for name in sub.choices:
            assert cli.COMMANDS[name] == module, name


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["list"], ("bench.commands.list_cmd",)),
        (["baseline", "show"], ("bench.commands.compare_cmd",)),
        (["run", "--help"], ("bench.commands.run_cmd",)),
        (["--help"], None),
        (["-h", "run"], None),  # the top level's help lists every subcommand
        ([], None),
        (["nope"], None),  # an unknown name: the full parser says which names exist
    ],
)
def test_a_command_line_imports_the_module_it_names(argv, expected):
    from bench import cli

    assert cli.modules_for(argv) == (expected or cli.COMMAND_MODULES)


def test_list_imports_no_other_command_module():
    script = (
        "import sys, bench.cli; bench.cli.main(['list']); "
        "print(sorted(m for m in sys.modules if m.startswith('bench.commands.')))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['bench.commands.list_cmd']"
