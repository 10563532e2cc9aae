"""``bench list``: suites, models and precisions."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add the ``list`` subcommand."""
    p = sub.add_parser("list", help="show suites, models and precisions")
    p.set_defaults(func=list_command)


def list_command(args: argparse.Namespace) -> int:
    """Print the shipped suites, registered models and precisions."""
    from rich.console import Console
    from rich.table import Table

    from bench.config.models import MODELS
    from bench.config.precision import PRECISIONS
    from bench.config.suite import shipped_suites

    console = Console()
    t = Table(title="Suites")
    t.add_column("name")
    t.add_column("description")
    for name, desc in shipped_suites().items():
        t.add_row(name, desc)
    console.print(t)
    t = Table(title="Models (random weights from the config; or --model-path DIR for a checkpoint)")
    for col in ("name", "family", "reproduces", "description"):
        t.add_column(col)
    for m in MODELS.values():
        t.add_row(m.name, m.family, m.reproduces, m.description)
    console.print(t)
    t = Table(title="Precisions")
    t.add_column("name")
    t.add_column("description")
    for p in PRECISIONS.values():
        t.add_row(p.name, p.description)
    console.print(t)
    return 0
