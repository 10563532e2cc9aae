"""Where a command's ``--json [FILE]`` goes: standard output for ``-``, else the file (saying so)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def write_json_output(payload: Any, destination: str) -> None:
    """Write ``payload`` as indented JSON to stdout (``-``) or to the file ``destination``."""
    text = json.dumps(payload, indent=2) + "\n"
    if destination == "-":
        sys.stdout.write(text)
    else:
        Path(destination).write_text(text, encoding="utf-8")
        print(f"wrote {destination}")
