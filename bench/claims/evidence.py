"""How strong a GPU memory reading is: a per-process NVML match, or something weaker that a verdict must show.

A claim is judged on the live peak over loading and generation plus the memory outside the allocator, which is
derived from the NVML process peak (:func:`bench.results.metrics.outside_allocator_bytes`); a record without
the loading phase or without the allocator's figures is judged on less, and says so. The NVML peak is this
process's own device memory only when NVML listed the process by its PID (``nvml_method`` "process",
``nvml_pid_match`` "pid"). When the PID was hidden (a container) and one process was on the GPU, the telemetry
took that one as ours: a guess. When no process matched, the figure is the device's used memory minus the
baseline (``nvml_method`` "device_used"): a device-wide reading that counts whatever else ran. And a record
flagged ``shared_gpu`` was measured while another process used the GPU. Each of these backs a verdict less
firmly: the verdict names its reading and carries its own symbol, never a plain ✅ / ❌.
"""

from __future__ import annotations

from collections.abc import Iterable

from bench.results.record import Record

DEVICE_WIDE = "device-wide reading"
GUESSED_PROCESS = "guessed process"
SHARED_GPU = "shared GPU"
UNKNOWN_METHOD = "reading method not recorded"
LOAD_NOT_RECORDED = "loading not recorded"
STEADY_NVML_ONLY = "steady-state NVML peak only"
WEAK_READINGS = (DEVICE_WIDE, GUESSED_PROCESS, SHARED_GPU, UNKNOWN_METHOD, LOAD_NOT_RECORDED, STEADY_NVML_ONLY)
READING_LABELS = {
    DEVICE_WIDE: "device-wide reading: the GPU's used memory minus the baseline, not this process's own",
    GUESSED_PROCESS: "guessed process: NVML did not list our PID; the only process on the GPU was taken as ours",
    SHARED_GPU: "shared GPU: another process used the GPU during the run",
    UNKNOWN_METHOD: "the record does not say how the NVML peak was read",
    LOAD_NOT_RECORDED: "loading not recorded: a record without the loading phase is judged on the live peak of "
    "its generation only (a quantizing load can peak higher)",
    STEADY_NVML_ONLY: "steady-state NVML peak only: the live peak over loading and generation could not be "
    "derived; judged on the NVML process peak of a cleaned worker",
}
# A verdict on a weak reading: holds / fails, drawn differently from a per-process GPU measurement.
WEAK_SYMBOLS = {True: "☑️", False: "✖️"}


def weak_readings(record: Record) -> tuple[str, ...]:
    """The weaknesses of a GPU record's NVML peak (empty: a per-process reading on a GPU nobody else used)."""
    out: list[str] = []
    method = record.memory.nvml_method
    if record.memory.nvml_process_peak_bytes is not None:
        if method is None:
            out.append(UNKNOWN_METHOD)
        elif method != "process":
            out.append(DEVICE_WIDE)
        elif (record.telemetry or {}).get("nvml_pid_match") == "single_process":
            out.append(GUESSED_PROCESS)
    if "shared_gpu" in record.flags:
        out.append(SHARED_GPU)
    return tuple(out)


def reading_words(readings: Iterable[str]) -> str:
    """The weak readings in a parenthesis-ready phrase ("device-wide reading, shared GPU"); "" for none."""
    return ", ".join(dict.fromkeys(readings))
