"""What NVML says about the visible GPUs before a suite runs, and the NVML plumbing telemetry shares.

Every NVML call here can fail on a real machine (no driver, a query the card does not support,
no permission): a failed query gives ``None`` and a reason string, never an exception.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from bench.units import GiB as GIB

# NVML return codes (pynvml's NVML_ERROR_*): after these a query is not worth repeating.
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_FUNCTION_NOT_FOUND = 13
PERMANENT_ERRORS = frozenset({NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_NO_PERMISSION, NVML_ERROR_FUNCTION_NOT_FOUND})

COMPUTE_MODES = {0: "default", 1: "exclusive_thread", 2: "prohibited", 3: "exclusive_process"}


# --------------------------------------------------------------------------- NVML plumbing


def describe_error(exc: BaseException) -> str:
    """A one-line reason for a failed NVML call, e.g. ``"NVMLError_NotSupported: Not Supported"``."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except Exception:  # pynvml's __str__ itself calls into the library
        text = ""
    return f"{name}: {text}" if text and text != name else name


def is_permanent(exc: BaseException) -> bool:
    """True when retrying the query cannot help (NotSupported, NoPermission, FunctionNotFound)."""
    return getattr(exc, "value", None) in PERMANENT_ERRORS


def open_nvml(nvml: Any = None) -> tuple[Any, str | None]:
    """Import pynvml when ``nvml`` is None and call ``nvmlInit``: ``(module, None)`` or ``(None, reason)``.

    Pair a successful open with :func:`close_nvml` (NVML counts inits and shutdowns).
    """
    try:
        if nvml is None:
            import pynvml as nvml  # imported late: without a driver there is no NVML
        nvml.nvmlInit()
    except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None, describe_error(exc)
    return nvml, None


def close_nvml(nvml: Any) -> None:
    """Call ``nvmlShutdown``, ignoring failures (telemetry must never fail a case)."""
    if nvml is None:
        return
    try:
        nvml.nvmlShutdown()
    except Exception:
        pass


def call(nvml: Any, name: str, *args: Any) -> tuple[Any, str | None]:
    """Call ``nvml.<name>(*args)``: ``(value, None)``, or ``(None, reason)`` when missing or failing."""
    fn: Callable[..., Any] | None = getattr(nvml, name, None)
    if fn is None:
        return None, f"{name} is not in this NVML binding"
    try:
        return fn(*args), None
    except Exception as exc:
        return None, describe_error(exc)


def text(value: Any) -> str:
    """NVML strings arrive as bytes from old bindings and str from new ones."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def pci_bus_id(nvml: Any, handle: Any) -> tuple[str | None, str | None]:
    """The device's PCI bus id as NVML spells it (``"00000000:3B:00.0"``), or ``(None, reason)``."""
    info, reason = call(nvml, "nvmlDeviceGetPciInfo", handle)
    if info is None:
        return None, reason
    bus = getattr(info, "busId", None) or getattr(info, "busIdLegacy", None)
    return (text(bus).upper(), None) if bus else (None, "PCI info has no bus id")


def _device_uuids(nvml: Any) -> list[str | None]:
    count, _ = call(nvml, "nvmlDeviceGetCount")
    out: list[str | None] = []
    for i in range(int(count or 0)):
        handle, _ = call(nvml, "nvmlDeviceGetHandleByIndex", i)
        uuid, _ = call(nvml, "nvmlDeviceGetUUID", handle) if handle is not None else (None, None)
        out.append(text(uuid) if uuid is not None else None)
    return out


def parse_visible_devices(value: str | None) -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES`` as a list of entries; None when unset (every device visible).

    CUDA stops at the first empty or invalid entry; an empty or ``-1`` value hides every device.
    """
    if value is None:
        return None
    out: list[str] = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):
            break
        out.append(entry)
    return out


def _handle_for_entry(nvml: Any, entry: str, uuids: Sequence[str | None]) -> tuple[Any, str | None]:
    """The NVML handle a ``CUDA_VISIBLE_DEVICES`` entry names (an index, a UUID, a UUID prefix, a MIG UUID)."""
    if entry.isdigit():
        return call(nvml, "nvmlDeviceGetHandleByIndex", int(entry))
    wanted = entry if entry[:4].upper() in ("GPU-", "MIG-") else f"GPU-{entry}"
    matches = [i for i, u in enumerate(uuids) if u is not None and u.lower().startswith(wanted.lower())]
    if len(matches) == 1:
        return call(nvml, "nvmlDeviceGetHandleByIndex", matches[0])
    if len(matches) > 1:
        return None, f"CUDA_VISIBLE_DEVICES entry {entry!r} matches {len(matches)} GPUs"
    return call(nvml, "nvmlDeviceGetHandleByUUID", wanted)  # MIG instances are not in the index list


def visible_handles(nvml: Any, visible: str | None) -> tuple[list[tuple[int, Any]], str | None]:
    """``(cuda_index, nvml_handle)`` for every device CUDA will see under ``visible`` (CUDA_VISIBLE_DEVICES).

    Index entries are taken as NVML indices; that matches CUDA when ``CUDA_DEVICE_ORDER=PCI_BUS_ID``
    or the GPUs are all alike (CUDA's default order is fastest first, ties in PCI order). UUID
    entries are exact. The second item says why the list stopped early, if it did.
    """
    entries = parse_visible_devices(visible)
    if entries is None:
        count, reason = call(nvml, "nvmlDeviceGetCount")
        if count is None:
            return [], reason
        out = []
        for i in range(int(count)):
            handle, reason = call(nvml, "nvmlDeviceGetHandleByIndex", i)
            if handle is None:
                return out, f"GPU {i}: {reason}"
            out.append((i, handle))
        return out, None
    uuids = _device_uuids(nvml) if any(not e.isdigit() for e in entries) else []
    out = []
    for cuda_index, entry in enumerate(entries):
        handle, reason = _handle_for_entry(nvml, entry, uuids)
        if handle is None:
            return out, f"CUDA_VISIBLE_DEVICES entry {entry!r}: {reason}; CUDA ignores it and every later entry"
        out.append((cuda_index, handle))
    return out, None


def handle_for_cuda_index(
    nvml: Any,
    cuda_index: int,
    *,
    uuid: str | None = None,
    bus_id: str | None = None,
    visible: str | None = None,
) -> tuple[Any, str]:
    """The NVML handle of CUDA device ``cuda_index``: ``(handle, how_matched)`` or ``(None, reason)``.

    Never assumes the CUDA index is the NVML index: the UUID CUDA reports is tried first, then its
    PCI bus id, then the ``CUDA_VISIBLE_DEVICES`` entry at that position (``visible``), and the bare
    index only when nothing else is known.
    """
    if uuid:
        candidates = [uuid] if uuid[:4].upper() in ("GPU-", "MIG-") else [f"GPU-{uuid}", f"MIG-{uuid}"]
        for candidate in candidates:
            handle, _ = call(nvml, "nvmlDeviceGetHandleByUUID", candidate)
            if handle is not None:
                return handle, "uuid"
    if bus_id:
        handle, _ = call(nvml, "nvmlDeviceGetHandleByPciBusId", bus_id)
        if handle is not None:
            return handle, "pci_bus_id"
    entries = parse_visible_devices(visible)
    if entries is not None:
        if cuda_index >= len(entries):
            return None, f"cuda:{cuda_index} is not visible (CUDA_VISIBLE_DEVICES={visible!r})"
        entry = entries[cuda_index]
        uuids = [] if entry.isdigit() else _device_uuids(nvml)
        handle, reason = _handle_for_entry(nvml, entry, uuids)
        if handle is None:
            return None, f"CUDA_VISIBLE_DEVICES entry {entry!r}: {reason}"
        return handle, "visible_devices_index" if entry.isdigit() else "visible_devices_uuid"
    handle, reason = call(nvml, "nvmlDeviceGetHandleByIndex", cuda_index)
    if handle is None:
        return None, f"NVML device {cuda_index}: {reason}"
    return handle, "index"


def processes(
    nvml: Any, handle: Any, *, graphics: bool = False
) -> tuple[list[tuple[int, int | None]] | None, str | None]:
    """``[(pid, used_bytes or None)]`` of compute (and optionally graphics) processes on a device."""
    names = ["nvmlDeviceGetComputeRunningProcesses"] + (["nvmlDeviceGetGraphicsRunningProcesses"] if graphics else [])
    seen: dict[int, int | None] = {}
    reasons = []
    any_ok = False
    for name in names:
        procs, reason = call(nvml, name, handle)
        if procs is None:
            reasons.append(reason)
            continue
        any_ok = True
        for p in procs:
            used = getattr(p, "usedGpuMemory", None)
            pid = int(p.pid)
            if pid in seen and seen[pid] is not None and used is not None:
                seen[pid] = max(seen[pid], int(used))  # a process with both a compute and a graphics context
            elif pid not in seen or seen[pid] is None:
                seen[pid] = int(used) if used is not None else None
    if not any_ok:
        return None, "; ".join(r for r in reasons if r)
    return sorted(seen.items()), None


# --------------------------------------------------------------------------- suite-start inspection


def _inspect_one(nvml: Any, cuda_index: int, handle: Any, pid: int) -> dict[str, Any]:
    gpu: dict[str, Any] = {"index": None, "cuda_index": cuda_index}
    unavailable: dict[str, str] = {}

    def put(key: str, value: Any, reason: str | None, convert: Callable[[Any], Any] = lambda v: v) -> None:
        gpu[key] = None if value is None else convert(value)
        if value is None and reason:
            unavailable[key] = reason

    put("index", *call(nvml, "nvmlDeviceGetIndex", handle), int)
    put("name", *call(nvml, "nvmlDeviceGetName", handle), text)
    put("uuid", *call(nvml, "nvmlDeviceGetUUID", handle), text)
    put("pci_bus_id", *pci_bus_id(nvml, handle))
    put("driver", *call(nvml, "nvmlSystemGetDriverVersion"), text)
    mem, reason = call(nvml, "nvmlDeviceGetMemoryInfo", handle)
    put("memory_bytes", getattr(mem, "total", None), reason, int)
    put("memory_used_bytes", getattr(mem, "used", None), reason, int)
    put("persistence_mode", *call(nvml, "nvmlDeviceGetPersistenceMode", handle), lambda v: bool(v))
    put("compute_mode", *call(nvml, "nvmlDeviceGetComputeMode", handle), lambda v: COMPUTE_MODES.get(int(v), str(v)))
    put("power_limit_w", *call(nvml, "nvmlDeviceGetEnforcedPowerLimit", handle), lambda v: v / 1000.0)
    put(
        "default_power_limit_w",
        *call(nvml, "nvmlDeviceGetPowerManagementDefaultLimit", handle),
        lambda v: v / 1000.0,
    )
    mig, reason = call(nvml, "nvmlDeviceGetMigMode", handle)
    put("mig_mode", mig, reason, lambda v: {"current": bool(v[0]), "pending": bool(v[1])})
    put(
        "ecc_volatile_uncorrected",
        *call(
            nvml,
            "nvmlDeviceGetTotalEccErrors",
            handle,
            getattr(nvml, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1),
            getattr(nvml, "NVML_VOLATILE_ECC", 0),
        ),
        int,
    )
    put("temperature_c", *call(nvml, "nvmlDeviceGetTemperature", handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0)))
    procs, reason = processes(nvml, handle, graphics=True)
    if procs is None:
        gpu["other_processes"] = None
        unavailable["other_processes"] = reason or "unknown"
    else:
        gpu["other_processes"] = [{"pid": p, "used_bytes": b} for p, b in procs if p != pid]
    gpu["unavailable"] = unavailable
    return gpu


def gpu_warnings(gpu: dict[str, Any]) -> list[str]:
    """One-line warnings about a GPU's state that make measurements unreliable or unrepresentative."""
    label = f"GPU {gpu.get('index')}" + (f" ({gpu['name']})" if gpu.get("name") else "")
    out = []
    others = gpu.get("other_processes") or []
    if others:
        used = sum(p["used_bytes"] or 0 for p in others)
        noun = "process" if len(others) == 1 else "processes"
        out.append(
            f"{label} is shared with {len(others)} other {noun} using {used / GIB:.1f} GiB: "
            "speed and memory results may be disturbed"
        )
    if gpu.get("persistence_mode") is False:
        out.append(
            f"{label} has persistence mode off: the driver may unload between cases and each worker starts cold "
            "(enable it with 'sudo nvidia-smi -pm 1')"
        )
    mode = gpu.get("compute_mode")
    if mode == "prohibited":
        out.append(f"{label} is in compute mode 'prohibited': no CUDA process can use it")
    elif mode in ("exclusive_process", "exclusive_thread"):
        out.append(f"{label} is in compute mode '{mode}': only one CUDA process at a time may use it")
    limit, default = gpu.get("power_limit_w"), gpu.get("default_power_limit_w")
    if limit is not None and default is not None and limit < default - 1.0:
        out.append(
            f"{label} power limit is {limit:.0f} W, below its default {default:.0f} W: "
            "speed will be lower than a stock card's"
        )
    mig = gpu.get("mig_mode")
    if mig and mig.get("current"):
        out.append(
            f"{label} has MIG enabled: CUDA sees MIG instances, so memory and speed are those of an instance, "
            "not of the whole card"
        )
    if mig and mig.get("current") != mig.get("pending"):
        out.append(f"{label} has a MIG mode change pending a GPU reset")
    ecc = gpu.get("ecc_volatile_uncorrected")
    if ecc:
        out.append(
            f"{label} reports {ecc} uncorrected ECC errors since the driver loaded: results may be unreliable "
            "(see 'nvidia-smi -q -d ECC')"
        )
    return out


def inspect_gpus(nvml: Any = None, *, pid: int | None = None, visible: str | None = None) -> dict[str, Any]:
    """The state of every GPU CUDA will see, with one-line warnings; never raises.

    Per GPU: NVML index and CUDA index, name, UUID, PCI bus id, driver, memory_bytes and
    memory_used_bytes, persistence_mode, compute_mode, power_limit_w and default_power_limit_w,
    mig_mode, ecc_volatile_uncorrected, temperature_c, other_processes (pid, used_bytes; every
    process but ``pid``, default this one) and ``unavailable`` ({field: reason}). ``visible``
    defaults to ``CUDA_VISIBLE_DEVICES``. Without NVML: ``{"gpus": [], "nvml": "unavailable: <reason>"}``.
    """
    if visible is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    pid = os.getpid() if pid is None else pid
    lib, reason = open_nvml(nvml)
    if lib is None:
        return {"gpus": [], "nvml": f"unavailable: {reason}", "warnings": []}
    try:
        driver, _ = call(lib, "nvmlSystemGetDriverVersion")
        handles, stop_reason = visible_handles(lib, visible)
        gpus = [_inspect_one(lib, cuda_index, handle, pid) for cuda_index, handle in handles]
    finally:
        close_nvml(lib)
    warnings = [w for gpu in gpus for w in gpu_warnings(gpu)]
    if stop_reason:
        warnings.append(stop_reason)
    if visible is not None and not gpus:
        warnings.append(f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU")
    return {
        "nvml": "ok",
        "driver": text(driver) if driver is not None else None,
        "cuda_visible_devices": visible,
        "gpus": gpus,
        "warnings": warnings,
    }
