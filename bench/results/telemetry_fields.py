"""What a record's telemetry summary holds: its keys, their display labels, and NVML clock event reasons."""

from __future__ import annotations

from typing import Any

_REASONS = (
    ("GpuIdle", 0x1, "gpu_idle"),
    ("ApplicationsClocksSetting", 0x2, "applications_clocks_setting"),
    ("SwPowerCap", 0x4, "sw_power_cap"),
    ("HwSlowdown", 0x8, "hw_slowdown"),
    ("SyncBoost", 0x10, "sync_boost"),
    ("SwThermalSlowdown", 0x20, "sw_thermal_slowdown"),
    ("HwThermalSlowdown", 0x40, "hw_thermal_slowdown"),
    ("HwPowerBrakeSlowdown", 0x80, "hw_power_brake_slowdown"),
    ("DisplayClockSetting", 0x100, "display_clock_setting"),
    ("BoardLimit", 0x200, "board_limit"),
    ("Reliability", 0x400, "reliability"),
)
# Reasons that do not mean the clocks were pulled down by power or heat.
BENIGN_REASONS = frozenset({"gpu_idle", "applications_clocks_setting", "display_clock_setting"})

# Summary keys a report tabulates, with a display label (values are in the unit the key names).
SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("energy_j", "energy (J)"),
    ("joules_per_token", "J/token"),
    ("joules_per_sequence", "J/sequence"),
    ("power_mean_w", "mean power (W)"),
    ("power_max_w", "max power (W)"),
    ("power_limit_w", "power limit (W)"),
    ("sm_clock_min_mhz", "SM clock min (MHz)"),
    ("sm_clock_max_mhz", "SM clock max (MHz)"),
    ("mem_clock_max_mhz", "memory clock (MHz)"),
    ("gpu_util_mean_pct", "GPU util (%)"),
    ("mem_util_mean_pct", "memory util (%)"),
    ("temperature_max_c", "max temp (°C)"),
    ("throttle_reasons", "clock events"),
    ("cpu_util_mean_pct", "CPU (% of a core)"),
    ("host_peak_rss_bytes", "host peak RSS (bytes)"),
    ("samples", "samples"),
)

# Every GPU key of a summary; a CPU summary has them all as None so tables line up.
GPU_SUMMARY_KEYS = (
    "power_mean_w",
    "power_max_w",
    "power_limit_w",
    "energy_j",
    "energy_method",
    "energy_counter_j",
    "energy_integrated_j",
    "sm_clock_min_mhz",
    "sm_clock_max_mhz",
    "sm_clock_busy_min_mhz",
    "sm_clock_busy_max_mhz",
    "mem_clock_min_mhz",
    "mem_clock_max_mhz",
    "gpu_util_mean_pct",
    "gpu_util_max_pct",
    "mem_util_mean_pct",
    "temperature_max_c",
    "throttle_reasons",
    "throttled",
    "throttled_fraction",
    "foreign_processes",
    "nvml_process_peak_bytes",
    "nvml_method",
    "nvml_pid_match",
    "device_used_peak_bytes",
    "device_baseline_used_bytes",
    "gpu_uuid",
    "nvml_index",
    "nvml_device_match",
)


def reason_names(mask: int, nvml: Any = None) -> list[str]:
    """Names of the clock event reasons set in an NVML bitmask (unknown bits as ``"bit_0x..."``)."""
    names = []
    known = 0
    for suffix, default, name in _REASONS:
        bit = getattr(nvml, f"nvmlClocksEventReason{suffix}", None) if nvml is not None else None
        if bit is None and nvml is not None:
            bit = getattr(nvml, f"nvmlClocksThrottleReason{suffix}", None)
        bit = default if bit is None else int(bit)
        known |= bit
        if mask & bit:
            names.append(name)
    rest = mask & ~known
    bit = 1
    while rest:
        if rest & bit:
            names.append(f"bit_{bit:#x}")
            rest &= ~bit
        bit <<= 1
    return names
