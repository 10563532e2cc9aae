"""Units and small shared helpers: byte units, display formatting, slugs and UTC timestamps (one copy each).

Data stays in canonical units (bytes, seconds); these formatters are for what a person reads.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
GB = 10**9  # decimal gigabyte, as a claim's "GB" is sometimes read
MB = 10**6


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second ("2026-12-03T10:21:27+00:00")."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def slugify(text: str, empty: str = "") -> str:
    """Lower-case words joined by dashes (``"GeForce RTX 4060 Ti"`` -> ``"geforce-rtx-4060-ti"``); ``empty`` if none."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or empty


def is_missing(value: Any) -> bool:
    """True for None and NaN: a value a table shows as an em dash."""
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def fmt_gib(b: float | None, digits: int = 2) -> str:
    """Bytes as GiB ("7.45 GiB"); an em dash when unknown."""
    return "—" if is_missing(b) else f"{b / GiB:.{digits}f} GiB"


def fmt_mib(b: float | None, signed: bool = False) -> str:
    """Bytes as whole MiB with thousands separators ("7,629"); signed for margins."""
    if is_missing(b):
        return "—"
    return f"{b / MiB:+,.0f}" if signed else f"{b / MiB:,.0f}"


def fmt_gb(b: float | None, signed: bool = False) -> str:
    """Bytes as decimal GB with two decimals ("8.00")."""
    if is_missing(b):
        return "—"
    return f"{b / GB:+.2f}" if signed else f"{b / GB:.2f}"


def fmt_num(v: float | None, digits: int = 1) -> str:
    """A number with thousands separators, or an em dash."""
    return "—" if is_missing(v) else f"{v:,.{digits}f}"


def fmt_ms(s: float | None) -> str:
    """Seconds as milliseconds: no decimals from 100 ms, one from 10 ms, two below."""
    if is_missing(s):
        return "—"
    ms = s * 1000.0
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"
