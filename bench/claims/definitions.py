"""Claims as data: a memory claim's cases and byte budget, parsed from TOML (DESIGN.md, "Claims").

A claim names a model, its precisions, a scenario, the contexts it is judged over and a byte
budget with its unit ("8 GiB" is what a card's box calls 8 GB; "16 GB" is decimal). The
verdicts on records are :mod:`bench.claims.claim_verdicts`'.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from bench.config.spec import CaseSpec
from bench.errors import BadInputError
from bench.units import GB
from bench.units import GiB as GIB
from bench.units import MiB as MIB

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

_UNITS = {
    "b": 1,
    "byte": 1,
    "bytes": 1,
    "kib": 1 << 10,
    "mib": MIB,
    "gib": GIB,
    "tib": 1 << 40,
    "kb": 10**3,
    "mb": 10**6,
    "gb": GB,
    "tb": 10**12,
}
_BUDGET_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)\s*$")


def parse_bytes(text: str | int) -> int:
    """A byte count from "8 GiB", "6144 MiB", "16 GB" (decimal: 16e9) or a plain integer of bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text <= 0:
            raise BadInputError(f"budget {text} must be a positive number of bytes")
        return text
    match = _BUDGET_RE.match(str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise BadInputError(
            f"budget {text!r} is not a size with a unit; write e.g. '8 GiB' (8192 MiB, what a card's box calls 8 GB), "
            "'6144 MiB' or '16 GB' (decimal, 16e9 bytes)"
        )
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value <= 0:
        raise BadInputError(f"budget {text!r} must be larger than zero")
    return int(round(value))


@dataclass(frozen=True)
class Claim:
    """A memory claim: which cases (model, precisions, scenario, batch sizes) must fit in how many bytes.

    ``"*"`` matches any model, precision or scenario. ``contexts`` are the contexts the claim expects
    to see judged (a missing one is a gap; empty means "whatever was measured"); records at other
    contexts (e.g. from a boundary search) are judged too. ``new_tokens`` is used only to build the
    specs of missing cases for a prediction.
    """

    id: str
    title: str
    budget_bytes: int
    budget_text: str
    stated_as: str = ""
    model: str = "*"
    precisions: tuple[str, ...] = ("*",)
    scenario: str = "*"
    batch_sizes: tuple[int, ...] = ()
    contexts: tuple[int, ...] = ()
    new_tokens: int | None = None
    source: str = ""
    note: str = ""

    def matches(self, spec: CaseSpec) -> bool:
        """True when a case falls under this claim."""
        return (
            self.model in ("*", spec.model)
            and ("*" in self.precisions or spec.precision in self.precisions)
            and self.scenario in ("*", spec.scenario)
            and (not self.batch_sizes or spec.batch_size in self.batch_sizes)
        )

    @property
    def concrete(self) -> bool:
        """True when model, precisions and scenario are named (so missing cases can be listed)."""
        return self.model != "*" and "*" not in self.precisions and self.scenario != "*"

    def describe_cases(self) -> str:
        """The cases the claim covers, in words."""
        model = "every model" if self.model == "*" else self.model
        precisions = "every precision" if "*" in self.precisions else "/".join(self.precisions)
        scenario = "every scenario" if self.scenario == "*" else self.scenario
        return f"{model}, {precisions}, {scenario}"


def _claim_from_table(data: dict[str, Any], where: str) -> Claim:
    def need(key: str) -> Any:
        if key not in data:
            raise BadInputError(f"{where}: claim {data.get('id', '?')!r} has no {key!r}; add it")
        return data[key]

    known = {
        "id",
        "title",
        "budget",
        "stated_as",
        "model",
        "precisions",
        "scenario",
        "batch_sizes",
        "contexts",
        "new_tokens",
        "source",
        "note",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise BadInputError(
            f"{where}: claim {data.get('id', '?')!r} has unknown key(s) {', '.join(unknown)}; "
            f"valid keys: {', '.join(sorted(known))}"
        )
    precisions = need("precisions") if "precisions" in data else ["*"]
    if isinstance(precisions, str):
        precisions = [precisions]
    contexts = data.get("contexts", [])
    if not all(isinstance(c, int) and c > 0 for c in contexts):
        raise BadInputError(f"{where}: claim {data['id']!r} contexts {contexts!r} must be positive integers")
    budget = need("budget")
    return Claim(
        id=str(need("id")),
        title=str(need("title")),
        budget_bytes=parse_bytes(budget),
        budget_text=str(budget),
        stated_as=str(data.get("stated_as", "")),
        model=str(data.get("model", "*")),
        precisions=tuple(str(p) for p in precisions),
        scenario=str(data.get("scenario", "*")),
        batch_sizes=tuple(int(b) for b in data.get("batch_sizes", [])),
        contexts=tuple(sorted(set(contexts))),
        new_tokens=data.get("new_tokens"),
        source=str(data.get("source", "")),
        note=str(data.get("note", "")),
    )


def parse_claims(text: str, where: str = "claims file") -> list[Claim]:
    """Claims from TOML text: a list of ``[[claim]]`` tables."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(f"{where} is not valid TOML ({exc}); fix it or pass another --claims file") from exc
    tables = data.get("claim")
    if not isinstance(tables, list) or not tables:
        raise BadInputError(f"{where} has no [[claim]] tables; see bench/claims/default.toml for the format")
    claims = [_claim_from_table(t, where) for t in tables]
    ids = Counter(c.id for c in claims)
    repeated = [i for i, n in ids.items() if n > 1]
    if repeated:
        raise BadInputError(f"{where}: claim id(s) {', '.join(repeated)} appear more than once; make ids unique")
    return claims


def default_claims_text() -> str:
    """The TOML text of the claims shipped with the package."""
    return resources.files("bench").joinpath("claims", "default.toml").read_text(encoding="utf-8")


def load_claims(path: str | Path | None = None) -> list[Claim]:
    """The claims of a user's TOML file, or the shipped defaults when ``path`` is None."""
    if path is None:
        return parse_claims(default_claims_text(), "bench/claims/default.toml")
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"claims file {p} does not exist; pass a TOML file with [[claim]] tables")
    return parse_claims(p.read_text(encoding="utf-8"), str(p))
