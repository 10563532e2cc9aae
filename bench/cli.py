"""The ``bench`` command line: subcommands are registered by the modules named in COMMAND_MODULES."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from bench.errors import BadInputError

# Each module defines ``register(subparsers)`` that adds its subcommand(s) and sets ``func``
# (a callable taking the parsed namespace and returning an exit status).
COMMAND_MODULES = (
    "bench.commands.run_cmd",
    "bench.commands.list_cmd",
    "bench.commands.compare_cmd",
    "bench.commands.report_cmd",
    "bench.commands.predict_cmd",
    "bench.commands.fit_cmd",
)

# The module that registers each subcommand: a command line that names one imports that module only (the
# others' imports are not paid for). A name missing here still works: the full parser is built instead.
COMMANDS = {
    "run": "bench.commands.run_cmd",
    "list": "bench.commands.list_cmd",
    "compare": "bench.commands.compare_cmd",
    "baseline": "bench.commands.compare_cmd",
    "export": "bench.commands.compare_cmd",
    "merge": "bench.commands.compare_cmd",
    "report": "bench.commands.report_cmd",
    "predict": "bench.commands.predict_cmd",
    "advise": "bench.commands.predict_cmd",
    "profile": "bench.commands.predict_cmd",
    "fit": "bench.commands.fit_cmd",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"bench: error: {message}\n")


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    """The argument parser with the subcommands of ``modules`` (default: every one)."""
    parser = _Parser(prog="bench", description="Benchmark and profile LLMs: tokens/s, latency and peak memory.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def modules_for(argv: Sequence[str]) -> tuple[str, ...]:
    """The command modules a command line needs: the one of the subcommand it names, else all of them
    (``bench --help`` and an unknown name list every subcommand)."""
    for arg in argv:
        if arg.startswith("-"):
            if arg in ("-h", "--help"):
                break
            continue
        module = COMMANDS.get(arg)
        return (module,) if module in COMMAND_MODULES else COMMAND_MODULES
    return COMMAND_MODULES


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; bad input prints one line and returns 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(modules_for(argv))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BadInputError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; finished cases are kept (use --resume to go on)", file=sys.stderr)
        return 130
