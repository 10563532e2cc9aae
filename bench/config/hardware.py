"""Hardware profiles: one TOML file per GPU (datasheet figures with their sources, plus measured figures).

The shipped profiles are package data, ``bench/config/profiles/gpus/``, so an installed package finds them
anywhere. A user adds or overrides cards in ``profiles/gpus/`` (the checkout's, or the current folder's when
the package is installed; ``bench profile`` writes there), in a folder given with ``--profiles DIR``, or with
``BENCH_PROFILES_DIR`` (several folders separated by ``os.pathsep``); a profile there replaces a shipped one
of the same name.

A profile file::

    name = "GeForce RTX 3060"
    aliases = ["RTX 3060"]
    kind = "cuda"                      # "cuda" or "cpu"
    memory_bytes = 12884901888         # the box figure, read as GiB (DESIGN.md)
    usable_bytes = 12587106304         # what the driver reports as the card's total (needs sources.usable_bytes)
    memory_bandwidth_bytes_per_s = 360000000000
    compute_capability = "8.6"

    [sources]                          # where each datasheet figure comes from
    memory_bytes = "..."
    usable_bytes = "..."
    memory_bandwidth_bytes_per_s = "..."

    [measured]                         # written by `bench profile` on the card itself
    memory_bandwidth_bytes_per_s = ...
    matmul_fp16_flops_per_s = ...
    cuda_context_bytes = ...

Usable memory is what CUDA reports as the card's total (``torch.cuda.get_device_properties().total_memory``,
deviceQuery's "Total amount of global memory"; nvidia-smi's memory.total is the same figure or, on recent
drivers, a few hundred MiB more, the rest being reserved by the driver). It depends on the driver and on ECC
(a T4 with ECC on reports 15110 of its 16384 MiB). Fit on a card is judged against it, in this order:
measured on the card by ``bench profile`` (``measured.device_total_bytes``), else the cited ``usable_bytes``,
else the box size minus :data:`ASSUMED_RESERVE_FRACTION`, labelled "assumed" wherever it is shown (a profile
without a public figure says so in ``usable_note``). A desktop display takes more on top (:data:`DISPLAY_NOTE`).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config.spec import from_known_fields
from bench.errors import BadInputError
from bench.units import slugify

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

PROFILES_ENV = "BENCH_PROFILES_DIR"
# A card with no public figure of its driver-reported total is assumed to expose its box size minus this share.
# The cited GeForce figures (profiles/gpus/*.toml) fall 1.5-2.3% below the box on Linux drivers 12.x (RTX 3060:
# 12004 of 12288 MiB); ECC on GDDR memory costs about 8% more (T4, L4, A10 are cited, not assumed).
ASSUMED_RESERVE_FRACTION = 0.025
DISPLAY_NOTE = (
    "a desktop display takes more: typically a few hundred MiB, up to about 1 GiB with a browser or several "
    "monitors, on a consumer card that drives them (typical range, not measured here and not subtracted)"
)
KINDS = ("cuda", "cpu")
# Words that vendors and drivers add to a card's name; ignored when matching names.
_NOISE_WORDS = ("nvidia", "geforce", "tesla", "tensor core gpu", "tensor core", "gpu")


@dataclass(frozen=True)
class Measured:
    """Figures a profiling run measured on the device itself (None where not measured)."""

    memory_bandwidth_bytes_per_s: float | None = None  # device-to-device copy: bytes read plus written per second
    matmul_fp16_flops_per_s: float | None = None
    matmul_bf16_flops_per_s: float | None = None
    matmul_fp32_flops_per_s: float | None = None
    cuda_context_bytes: int | None = None  # the process's device memory right after CUDA initialisation
    runtime_overhead_bytes: int | None = None  # process device memory outside torch's allocator after first kernels
    device_total_bytes: int | None = None  # what the driver reports as the card's total memory
    device_name: str | None = None
    driver: str | None = None
    cuda: str | None = None
    torch: str | None = None
    cpu_capability: str | None = None  # CPU profiles: torch's vector ISA ("AVX2", "AVX512", ...)
    host: str | None = None
    measured_utc: str | None = None
    source: str | None = None  # what produced these figures (a command, or a reference document)
    # True for figures typed in by hand (approximate, from notes of a run), not written by 'bench profile'
    hand_entered: bool | None = None
    # CPU profiles: the machine fingerprint's digest (bench.config.machine) of the host measured; a host of the
    # same name with another digest (another ISA or library stack) does not use these figures
    machine: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict without the unmeasured fields."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measured:
        """Inverse of :meth:`to_dict`; ignores unknown keys."""
        return from_known_fields(cls, data)


@dataclass(frozen=True)
class HardwareProfile:
    """One device: datasheet memory and bandwidth with their sources, optional peak rate and measurements."""

    name: str
    kind: str = "cuda"
    memory_bytes: int = 0
    memory_bandwidth_bytes_per_s: float = 0.0
    usable_bytes: int | None = None  # the driver's total for this card, cited in sources["usable_bytes"]
    usable_note: str = ""  # why there is no usable_bytes (no public figure found), or how to read it
    compute_capability: str | None = None
    peak_fp16_flops_per_s: float | None = None
    price_usd: float | None = None  # only with a source in ``sources["price_usd"]``
    aliases: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)
    measured: Measured | None = None
    notes: str = ""
    path: Path | None = field(default=None, compare=False)

    @property
    def slug(self) -> str:
        """A file-name form of the name (``geforce-rtx-3060``)."""
        return slugify(self.name)

    @property
    def bandwidth_bytes_per_s(self) -> float:
        """Memory bandwidth to predict with: the measured copy rate when there is one, else the datasheet's."""
        if self.measured and self.measured.memory_bandwidth_bytes_per_s:
            return float(self.measured.memory_bandwidth_bytes_per_s)
        return float(self.memory_bandwidth_bytes_per_s)

    @property
    def bandwidth_basis(self) -> str:
        """``"measured"``, ``"hand-entered"`` (approximate, not 'bench profile' output) or ``"datasheet"``:
        where :attr:`bandwidth_bytes_per_s` comes from."""
        if not (self.measured and self.measured.memory_bandwidth_bytes_per_s):
            return "datasheet"
        return "hand-entered" if self.measured.hand_entered else "measured"

    @property
    def usable_memory_bytes(self) -> int:
        """The memory a process can get on this card: measured, else cited, else the box minus the assumed reserve."""
        if self.measured and self.measured.device_total_bytes:
            return int(self.measured.device_total_bytes)
        if self.usable_bytes:
            return int(self.usable_bytes)
        return int(self.memory_bytes * (1 - ASSUMED_RESERVE_FRACTION))

    @property
    def usable_source(self) -> str:
        """Where :attr:`usable_memory_bytes` comes from, starting "measured:", "cited:" or "assumed:"."""
        if self.measured and self.measured.device_total_bytes:
            return f"measured: {self.measured.source or 'bench profile'} on the card (torch total_memory)"
        if self.usable_bytes:
            return f"cited: {self.sources.get('usable_bytes', 'no source given')}"
        return (
            f"assumed: box size minus {ASSUMED_RESERVE_FRACTION:.1%} (no public figure of the driver's total "
            "found for this card)"
        )

    @property
    def usable_assumed(self) -> bool:
        """True when the usable memory is the assumed fallback, not a measured or cited figure."""
        return self.usable_source.startswith("assumed")

    @property
    def consumer(self) -> bool:
        """True for a consumer (GeForce) card, the kind that usually drives a desktop display."""
        return "geforce" in self.name.lower()

    @property
    def compute_major(self) -> int | None:
        """The major compute capability (8 for "8.6"), or None when unknown."""
        if not self.compute_capability:
            return None
        try:
            return int(str(self.compute_capability).split(".")[0])
        except ValueError:
            return None

    @property
    def supports_bf16(self) -> bool | None:
        """True on compute capability 8.0 and newer (native bf16), None when unknown; CPUs emulate it."""
        if self.kind == "cpu":
            return True
        major = self.compute_major
        return None if major is None else major >= 8

    def with_measured(self, measured: Measured) -> HardwareProfile:
        """A copy with these measured figures (replacing earlier ones)."""
        return dataclasses.replace(self, measured=measured)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in the TOML layout (unset optional fields left out)."""
        out: dict[str, Any] = {"name": self.name}
        if self.aliases:
            out["aliases"] = list(self.aliases)
        out["kind"] = self.kind
        out["memory_bytes"] = int(self.memory_bytes)
        if self.usable_bytes is not None:
            out["usable_bytes"] = int(self.usable_bytes)
        if self.usable_note:
            out["usable_note"] = self.usable_note
        out["memory_bandwidth_bytes_per_s"] = _number(self.memory_bandwidth_bytes_per_s)
        for key in ("compute_capability", "peak_fp16_flops_per_s", "price_usd"):
            value = getattr(self, key)
            if value is not None:
                out[key] = _number(value) if isinstance(value, float) else value
        if self.notes:
            out["notes"] = self.notes
        if self.sources:
            out["sources"] = dict(self.sources)
        if self.measured is not None and self.measured.to_dict():
            out["measured"] = {k: _number(v) if isinstance(v, float) else v for k, v in self.measured.to_dict().items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path | None = None) -> HardwareProfile:
        """Build from parsed TOML; raises BadInputError naming the file and the bad field."""
        where = str(path) if path else "profile"
        try:
            name = str(data["name"])
            kind = str(data.get("kind", "cuda"))
            memory = int(data["memory_bytes"])
            bandwidth = float(data["memory_bandwidth_bytes_per_s"])
        except KeyError as exc:
            raise BadInputError(
                f"{where} lacks required field {exc.args[0]!r} (name, memory_bytes, memory_bandwidth_bytes_per_s)"
            ) from None
        except (TypeError, ValueError) as exc:
            raise BadInputError(f"{where} has a non-numeric memory or bandwidth figure ({exc})") from None
        if kind not in KINDS:
            raise BadInputError(f"{where}: kind {kind!r} must be one of {', '.join(KINDS)}")
        if memory <= 0 or bandwidth <= 0 or not math.isfinite(bandwidth):
            raise BadInputError(f"{where}: memory_bytes and memory_bandwidth_bytes_per_s must be positive")
        price = data.get("price_usd")
        sources = {str(k): str(v) for k, v in dict(data.get("sources", {})).items()}
        if price is not None and "price_usd" not in sources:
            raise BadInputError(f"{where}: price_usd needs a source (add sources.price_usd naming where it is from)")
        usable = _usable_bytes(data, sources, memory, where)
        measured = data.get("measured")
        peak = data.get("peak_fp16_flops_per_s")
        cc = data.get("compute_capability")
        return cls(
            name=name,
            kind=kind,
            memory_bytes=memory,
            memory_bandwidth_bytes_per_s=bandwidth,
            usable_bytes=usable,
            usable_note=str(data.get("usable_note", "")),
            compute_capability=None if cc is None else str(cc),
            peak_fp16_flops_per_s=None if peak is None else float(peak),
            price_usd=None if price is None else float(price),
            aliases=tuple(str(a) for a in data.get("aliases", ())),
            sources=sources,
            measured=Measured.from_dict(measured) if isinstance(measured, Mapping) else None,
            notes=str(data.get("notes", "")),
            path=path,
        )


def _usable_bytes(data: Mapping[str, Any], sources: Mapping[str, str], memory: int, where: str) -> int | None:
    """A profile's ``usable_bytes``: a whole number of bytes, at most the box size, with a source."""
    value = data.get("usable_bytes")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= memory:
        raise BadInputError(
            f"{where}: usable_bytes {value!r} must be a whole number of bytes above 0 and at most memory_bytes "
            f"({memory}); leave it out when no driver figure is known"
        )
    if "usable_bytes" not in sources:
        raise BadInputError(
            f"{where}: usable_bytes needs a source (add sources.usable_bytes naming the nvidia-smi or deviceQuery "
            "output it is read from)"
        )
    return value


def _number(value: float) -> int | float:
    """Whole floats as ints (TOML reads back the same value, and files stay readable)."""
    return int(value) if float(value).is_integer() and abs(value) < 2**63 else float(value)


@functools.lru_cache(maxsize=4096)  # called per record x profile when speeds are calibrated: keep it cheap
def normalize_name(name: str) -> str:
    """A card name with vendor words, case, spaces and punctuation removed, for matching."""
    text = name.lower()
    for word in _NOISE_WORDS:
        text = text.replace(word, " ")
    return re.sub(r"[^a-z0-9]+", "", text)


# --------------------------------------------------------------------------- TOML files


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(value)
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to a profile")


def dumps_profile(profile: HardwareProfile) -> str:
    """The profile as TOML text (scalars first, then the [sources] and [measured] tables)."""
    data = profile.to_dict()
    lines = [f"# {profile.name}: datasheet figures with their sources; [measured] is written by 'bench profile'."]
    tables = {k: data.pop(k) for k in ("sources", "measured") if k in data}
    for key, value in data.items():
        lines.append(f"{key} = {_toml_value(value)}")
    for table, values in tables.items():
        lines.append("")
        lines.append(f"[{table}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def save_profile(profile: HardwareProfile, path: str | os.PathLike[str]) -> Path:
    """Write a profile file (folders created); returns the path written."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = dumps_profile(profile)
    tomllib.loads(text)  # never write a file that cannot be read back
    out.write_text(text, encoding="utf-8")
    return out


def load_profile(path: str | os.PathLike[str]) -> HardwareProfile:
    """Read one profile file; errors name the file."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"profile file {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(f"profile file {p} is not valid TOML ({exc})") from None
    return HardwareProfile.from_dict(data, p)


# --------------------------------------------------------------------------- folders and lookup


SHIPPED_PROFILES = Path(__file__).resolve().parent / "profiles" / "gpus"


def shipped_profiles_dir() -> Path:
    """The GPU profiles shipped with the package (``bench/config/profiles/gpus``, package data): found wherever
    the package is installed, a checkout or site-packages."""
    return SHIPPED_PROFILES


def user_profiles_dir() -> Path:
    """Where a user's own and edited profiles live, and where ``bench profile`` writes: the checkout's
    ``profiles/gpus`` (next to the package) when the package runs from a checkout, else ``./profiles/gpus``.
    A profile here replaces a shipped one of the same name."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "bench" / "config").is_dir():
        return checkout / "profiles" / "gpus"
    return Path.cwd() / "profiles" / "gpus"


def profile_dirs(extra: Iterable[str | os.PathLike[str]] | None = None) -> list[Path]:
    """Folders searched, later ones overriding earlier: shipped, the user's (:func:`user_profiles_dir`), then
    ``BENCH_PROFILES_DIR``, then ``extra``."""
    dirs = [shipped_profiles_dir(), user_profiles_dir()]
    env = os.environ.get(PROFILES_ENV)
    if env:
        dirs.extend(Path(p) for p in env.split(os.pathsep) if p)
    dirs.extend(Path(p) for p in (extra or ()))
    return dirs


def load_profiles(dirs: Sequence[str | os.PathLike[str]] | None = None) -> list[HardwareProfile]:
    """Every profile in the given folders (default :func:`profile_dirs`); later folders override by name.

    A folder that does not exist is an error when named explicitly, so a typo is not silently ignored.
    """
    chosen = [Path(d) for d in dirs] if dirs is not None else profile_dirs()
    by_name: dict[str, HardwareProfile] = {}
    for d in chosen:
        if not d.is_dir():
            if d not in (shipped_profiles_dir(), user_profiles_dir()):  # the default folders may be absent
                raise BadInputError(f"profiles folder {d} does not exist; create it or point --profiles elsewhere")
            continue
        for f in sorted(d.glob("*.toml")):
            prof = load_profile(f)
            by_name[normalize_name(prof.name)] = prof
    return sorted(by_name.values(), key=lambda p: (p.kind, p.memory_bytes, p.memory_bandwidth_bytes_per_s, p.name))


def _keys(profile: HardwareProfile) -> list[str]:
    return [normalize_name(n) for n in (profile.name, *profile.aliases)] + [normalize_name(profile.slug)]


def find_profile(name: str, profiles: Sequence[HardwareProfile]) -> HardwareProfile | None:
    """The profile whose name or alias matches ``name`` (ignoring case, spaces and vendor words), else None."""
    wanted = normalize_name(name)
    if not wanted:
        return None
    for prof in profiles:
        if wanted in _keys(prof):
            return prof
    return None


def get_profile(name: str, profiles: Sequence[HardwareProfile] | None = None) -> HardwareProfile:
    """Look a card up by name or alias; an unknown name is an error listing the closest profile names."""
    pool = list(profiles) if profiles is not None else load_profiles()
    found = find_profile(name, pool)
    if found is not None:
        return found
    names = [p.name for p in pool]
    by_key = {}
    for p in pool:
        for key in _keys(p):
            by_key.setdefault(key, p.name)
    close_keys = difflib.get_close_matches(normalize_name(name), list(by_key), n=5, cutoff=0.4)
    close = list(dict.fromkeys([by_key[k] for k in close_keys] + difflib.get_close_matches(name, names, n=3)))
    hint = f"closest: {', '.join(close[:4])}" if close else f"known: {', '.join(names)}"
    raise BadInputError(
        f"no hardware profile named {name!r} ({hint}); add a TOML file to a folder given with --profiles "
        f"or {PROFILES_ENV}, or run 'bench profile' on that card"
    )


def profile_for_device_name(device_name: str, profiles: Sequence[HardwareProfile]) -> HardwareProfile | None:
    """The profile of a record's ``device_name`` ("NVIDIA GeForce RTX 3060"), or None when none matches."""
    return find_profile(device_name, profiles)


def parse_memory_cap(text: str | float, profiles: Sequence[HardwareProfile] | None = None) -> tuple[int, str]:
    """``(bytes, label)`` of a ``--memory-cap`` value: a size in GiB ("7.5") or a card name ("GeForce RTX 4060").

    A card name means that card's usable memory (:attr:`HardwareProfile.usable_memory_bytes`); the worker
    subtracts the CUDA context it measures, as for a size. A size must be a finite number above 0; an unknown
    card name is an error listing the closest profile names (``profiles`` default: :func:`load_profiles`).
    """
    raw = str(text).strip()
    try:
        gib = float(raw)
    except ValueError:
        gib = None
    if gib is not None:
        if not math.isfinite(gib) or gib <= 0:
            raise BadInputError(
                f"--memory-cap {raw}: a simulated card needs a positive, finite size in GiB (e.g. --memory-cap 8) "
                "or a card name (e.g. --memory-cap \"GeForce RTX 4060\"); leave it out to use the whole card"
            )
        return int(gib * (1 << 30)), f"{gib:g} GiB"
    if not raw:
        raise BadInputError('--memory-cap is empty: give a size in GiB (e.g. 8) or a card name ("GeForce RTX 4060")')
    try:
        card = get_profile(raw, profiles)
    except BadInputError as exc:
        raise BadInputError(f"--memory-cap {raw!r} is neither a size in GiB nor a known card: {exc}") from None
    if card.kind != "cuda":
        raise BadInputError(f"--memory-cap {raw!r} names a {card.kind} profile; name a GPU or give a size in GiB")
    usable = card.usable_memory_bytes
    return usable, f"{card.name}: {usable / (1 << 20):,.0f} MiB usable ({card.usable_source})"
