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
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"bench: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered subcommand."""
    parser = _Parser(prog="bench", description="Benchmark and profile LLMs: tokens/s, latency and peak memory.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; bad input prints one line and returns 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BadInputError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; finished cases are kept (use --resume to go on)", file=sys.stderr)
        return 130
