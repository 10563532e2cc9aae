"""The record's loading phase and user view (schema 3): what a card holds while and after a model loads.

The worker measures a case's steady state in a cleaned process (the allocator's cache emptied before the
timed repetitions). A user's script does not clean up: loading (bitsandbytes quantizes 16-bit weights on the
device) leaves freed blocks in the caching allocator's pool, and nvidia-smi shows that pool. Two blocks keep
both views, each reading named:

- :class:`LoadPhase`: the load of the case's worker group (every case of the group carries the same one; the
  group's first case is ``loaded_for_key``): wall time, the allocator's live peak while loading, what it
  holds and reserves right after (before any ``empty_cache()``), the NVML process reading then, and the
  host RSS (VmHWM peak and current) around it.
- :class:`UserView`: load, then one generation at the case's shape, no clean-up in between, in the same
  process, as a user's script does; measured for the first case of each worker group only (no second load).

Every field is None where not recorded (older records, a CPU run's device readings, an engine that cannot
run the user view): a reader never takes a missing figure for zero.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from bench.config.spec import from_known_fields


@dataclass(frozen=True)
class LoadPhase:
    """The loading of a worker group's model, in bytes and seconds (None: not recorded).

    ``load_s``: the load call itself (``from_pretrained`` or the random build; the harness's cached random
    checkpoint is written before it and not counted). Device readings (torch CUDA allocator, reset before
    the load): ``load_peak_allocated_bytes`` the live peak during loading, ``load_allocated_after_bytes``
    and ``load_reserved_after_bytes`` right after it, before any ``empty_cache()``. NVML (this process):
    ``load_nvml_process_peak_bytes`` sampled during loading, ``load_nvml_process_bytes`` right after it.
    Host (this process): ``load_host_rss_before_bytes``, ``load_host_peak_rss_bytes`` (VmHWM, reset before
    the load), ``load_host_rss_after_bytes``.
    """

    load_s: float | None = None
    load_peak_allocated_bytes: int | None = None
    load_allocated_after_bytes: int | None = None
    load_reserved_after_bytes: int | None = None
    load_nvml_process_bytes: int | None = None
    load_nvml_process_peak_bytes: int | None = None
    load_host_rss_before_bytes: int | None = None
    load_host_peak_rss_bytes: int | None = None
    load_host_rss_after_bytes: int | None = None
    nvml_method: str | None = None
    loaded_for_key: str | None = None  # the key of the group's first case, whose worker loaded the model

    @property
    def recorded(self) -> bool:
        """True when the load was measured (its wall time at least)."""
        return self.load_s is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> LoadPhase:
        """Inverse of :meth:`to_dict`; ignores unknown keys; None or {} is "not recorded"."""
        return from_known_fields(cls, data or {})


@dataclass(frozen=True)
class UserView:
    """Load then generate at the case's shape in one process, no clean-up: what a user's script holds.

    Device readings over load and generation together (the allocator's peak statistics are reset once,
    before the load): ``peak_allocated_bytes`` the live peak, ``reserved_high_water_bytes`` the pool's
    high-water, ``reserved_after_bytes`` the pool after the generation. NVML (this process, sampled on a
    thread throughout): ``nvml_process_peak_bytes``, and ``nvml_process_after_bytes`` read after the
    generation (what nvidia-smi shows while the script idles). Host: ``host_peak_rss_bytes`` (VmHWM over
    load and generation), ``host_rss_after_bytes``. ``generate_s``: the one generation's wall time (the
    view's cost). ``error``: why the view failed (the case's other results stand); ``skipped``: why it was
    not run.
    """

    generate_s: float | None = None
    peak_allocated_bytes: int | None = None
    reserved_high_water_bytes: int | None = None
    reserved_after_bytes: int | None = None
    nvml_process_peak_bytes: int | None = None
    nvml_process_after_bytes: int | None = None
    host_peak_rss_bytes: int | None = None
    host_rss_after_bytes: int | None = None
    nvml_method: str | None = None
    error: str | None = None
    skipped: str | None = None

    @property
    def recorded(self) -> bool:
        """True when the view ran to the end of its generation."""
        return self.generate_s is not None and self.error is None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> UserView:
        """Inverse of :meth:`to_dict`; ignores unknown keys; None or {} is "not recorded"."""
        return from_known_fields(cls, data or {})
