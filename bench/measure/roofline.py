"""What the bandwidth roofline of a decode record needs, measured in the worker: bytes read and bandwidth.

The fraction itself is a formula of the record (:func:`bench.results.metrics.roofline_metrics`); this module
only gathers its inputs from the loaded model, its KV cache and the device:

- :func:`weights_read_bytes`: the weights as stored (``weights_bytes``, bitsandbytes state included), less
  the rows of an untied input embedding that a step does not look up;
- :func:`kv_bytes_per_token`: K and V bytes per token per sequence over all layers, from the cache's tensors;
- :func:`device_bandwidth`: the bandwidth ``bench profile`` measured (``profiles/gpus/*.toml`` [measured], or
  ``profiles/hosts/`` for this host), else the datasheet figure of the GPU's profile; a CPU without a host
  profile is measured with a short tensor copy (:func:`measure_host_bandwidth`) once per host and kept in the
  harness's cache (:func:`cached_host_bandwidth`), so every worker and run on the host uses the same figure.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import machine
from bench.config.hardware import PROFILES_ENV, HardwareProfile, find_profile, load_profiles, user_profiles_dir
from bench.measure.memory import cache_layers
from bench.results.record import Roofline
from bench.units import MiB, slugify, utc_now

MEASURED_PROFILE = "measured by bench profile"
DATASHEET = "datasheet"
MEASURED_HOST = "measured host bandwidth"
HOST_PROBE_BYTES = 64 * MiB  # larger than the last-level caches of the CPUs this runs on
HOST_PROBE_ROUNDS = 3


@dataclass(frozen=True)
class Bandwidth:
    """A device's memory bandwidth (bytes read plus written per second), where it comes from, and a note."""

    bytes_per_s: float | None
    source: str | None  # MEASURED_PROFILE | DATASHEET | MEASURED_HOST | None (unknown)
    note: str


def weights_read_bytes(model: Any, stored_bytes: int, batch_size: int) -> int:
    """Weight bytes one decode step reads: all weights as stored, except an untied input embedding's table, of
    which a step reads only the ``batch_size`` rows it looks up (a tied table is read whole by the head)."""
    get_in = getattr(model, "get_input_embeddings", None)
    emb = get_in() if callable(get_in) else None
    weight = getattr(emb, "weight", None)
    if weight is None or weight.dim() != 2:
        return int(stored_bytes)
    get_out = getattr(model, "get_output_embeddings", None)
    head = get_out() if callable(get_out) else None
    head_weight = getattr(head, "weight", None)
    if head_weight is not None and head_weight.data_ptr() == weight.data_ptr():
        return int(stored_bytes)
    row = weight.shape[1] * weight.element_size()
    return int(stored_bytes - weight.numel() * weight.element_size() + batch_size * row)


def kv_bytes_per_token(cache: Any) -> int | None:
    """K and V bytes per token per sequence over every layer of a transformers cache, as its tensors store them
    (``[batch, heads, tokens, head_dim]``); None without a cache or tensors (encoders)."""
    layers = cache_layers(cache)
    pairs: list[tuple[Any, Any]] = []
    if layers is not None:
        pairs = [(getattr(layer, "keys", None), getattr(layer, "values", None)) for layer in layers]
    elif isinstance(cache, (tuple, list)):
        pairs = [tuple(item[:2]) for item in cache if isinstance(item, (tuple, list)) and len(item) >= 2]
    total = 0
    for pair in pairs:
        for t in pair:
            if t is None or not hasattr(t, "element_size") or t.dim() != 4:
                continue
            total += int(t.shape[1]) * int(t.shape[3]) * t.element_size()
    return total or None


def measure_host_bandwidth(nbytes: int = HOST_PROBE_BYTES, rounds: int = HOST_PROBE_ROUNDS) -> float:
    """Host memory bandwidth: the best of ``rounds`` timed copies of ``nbytes`` (bytes read plus written / s)."""
    import torch

    from bench.measure.device_probes import copy_bandwidth, host_timer

    src = torch.ones(nbytes, dtype=torch.uint8)
    dst = torch.empty_like(src)
    return max(copy_bandwidth(lambda: dst.copy_(src), nbytes, 2, host_timer) for _ in range(rounds))


def host_profile_dirs() -> list[Path]:
    """Folders of host (CPU) profiles: ``profiles/hosts`` next to the GPU profiles, then ``BENCH_PROFILES_DIR``."""
    dirs = [user_profiles_dir().parent / "hosts"]
    env = os.environ.get(PROFILES_ENV)
    if env:
        dirs.extend(Path(p) for p in env.split(os.pathsep) if p)
    return [d for d in dirs if d.is_dir()]


def host_profile_name(cpu: str, host: str | None = None) -> str:
    """The name ``bench profile`` gives this host's profile: the CPU model and the host name."""
    return f"{cpu} ({host or socket.gethostname()})"


_HOST_MEASURED: dict[str, tuple[float, str]] = {}


def here() -> str:
    """This machine's fingerprint digest (:mod:`bench.config.machine`)."""
    return machine.fingerprint().digest


def device_bandwidth(
    device: str,
    device_name: str,
    *,
    profiles: Sequence[HardwareProfile] | None = None,
    host_profiles: Sequence[HardwareProfile] | None = None,
    probe: Callable[[], float] | None = None,
) -> Bandwidth:
    """The memory bandwidth a decode record of ``device`` is held against, and where it comes from.

    A GPU: its profile's ``[measured]`` bandwidth (``bench profile``), else its datasheet figure, else unknown.
    A CPU: this host's profile from ``bench profile`` (named CPU model and host name), else ``probe`` (default:
    :func:`cached_host_bandwidth`, measured once per host and kept).
    """
    if device.startswith("cuda"):
        pool = list(profiles) if profiles is not None else load_profiles()
        prof = find_profile(device_name, pool) if device_name else None
        if prof is None:
            return Bandwidth(None, None, f"no GPU profile matches {device_name!r}: run 'bench profile' on this card")
        if prof.measured and prof.measured.memory_bandwidth_bytes_per_s:
            why = prof.measured.source or "bench profile"
            return Bandwidth(float(prof.measured.memory_bandwidth_bytes_per_s), MEASURED_PROFILE, f"{prof.name}: {why}")
        why = prof.sources.get("memory_bandwidth_bytes_per_s", "no source named")
        return Bandwidth(float(prof.memory_bandwidth_bytes_per_s), DATASHEET, f"{prof.name}: {why}")
    pool = list(host_profiles) if host_profiles is not None else load_profiles(host_profile_dirs())
    prof = find_profile(host_profile_name(device_name), [p for p in pool if p.kind == "cpu"])
    other = prof is not None and prof.measured is not None and prof.measured.machine not in (None, here())
    if prof is not None and prof.bandwidth_bytes_per_s > 0 and not other:
        why = prof.measured.source if prof.measured and prof.measured.source else "bench profile"
        return Bandwidth(prof.bandwidth_bytes_per_s, MEASURED_PROFILE, f"{prof.name}: {why}")
    if probe is not None:
        value, when = float(probe()), "now"
    else:
        value, when = cached_host_bandwidth(device_name)
    probe_mib = HOST_PROBE_BYTES // MiB
    why = (
        f"the host profile {prof.name!r} was measured on another machine (fingerprint {prof.measured.machine}, "
        f"this one {here()})"
        if other and prof is not None and prof.measured is not None
        else "no host profile for this host ('bench profile' writes one)"
    )
    note = f"{why}: best of {HOST_PROBE_ROUNDS} {probe_mib} MiB tensor copies, measured {when}"
    return Bandwidth(value, MEASURED_HOST, note)


def host_bandwidth_file(cpu: str) -> Path:
    """Where the measured host bandwidth of this host is kept, so that every worker (and run) on it uses one
    figure: a copy rate measured under a momentary load would otherwise differ between a run's workers.

    The name carries the machine fingerprint's digest (:mod:`bench.config.machine`): two hosts of one name
    (the same CPU model string and host name) with another ISA or library stack never share the figure."""
    from bench.config.locations import cache_dir

    return cache_dir() / "host-bandwidth" / f"{slugify(host_profile_name(cpu))}-{machine.fingerprint().digest}.json"


def cached_host_bandwidth(cpu: str, measure: Callable[[], float] = measure_host_bandwidth) -> tuple[float, str]:
    """``(bytes per second, when it was measured)`` for this host: this process's figure, else the kept one
    (written under this machine's fingerprint), else measured now (``measure``) and kept."""
    if cpu in _HOST_MEASURED:
        return _HOST_MEASURED[cpu]
    path = host_bandwidth_file(cpu)
    digest = machine.fingerprint().digest
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("machine") != digest:
            raise KeyError("machine")  # another machine's figure: measure this one's
        found = (float(data["memory_bandwidth_bytes_per_s"]), f"{data['measured_utc']} (kept in {path})")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        value = float(measure())
        stamp = utc_now()
        found = (value, f"{stamp} (kept in {path})")
        kept = {"memory_bandwidth_bytes_per_s": value, "measured_utc": stamp, "machine": digest}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
            tmp.write_text(json.dumps(kept), encoding="utf-8")
            tmp.replace(path)
        except OSError:
            found = (value, f"{stamp} (not kept: {path.parent} is not writable)")
    _HOST_MEASURED[cpu] = found
    return found


def decode_roofline(
    model: Any, stored_bytes: int | None, cache: Any, window_tokens: int | None, batch_size: int, bandwidth: Bandwidth
) -> Roofline:
    """The record's :class:`Roofline` of a decode case from its model, its final KV cache and the bandwidth."""
    return Roofline(
        weights_read_bytes=weights_read_bytes(model, stored_bytes, batch_size) if stored_bytes is not None else None,
        kv_bytes_per_token=kv_bytes_per_token(cache),
        window_tokens=window_tokens,
        memory_bandwidth_bytes_per_s=bandwidth.bytes_per_s,
        memory_bandwidth_source=bandwidth.source,
        memory_bandwidth_note=bandwidth.note,
    )
