"""The report's environment and quality-flag sections."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench.config.machine import fingerprint_brief
from bench.report.document import Block, Details, Heading, Para, Table
from bench.report.run_data import DeviceGroup, RunData
from bench.units import fmt_gib

FLAG_MEANINGS = {
    "random_weights": "weights are random (built from the model's config): speed and memory match the real "
    "checkpoint, the generated text does not",
    "noisy": "the timed repetitions vary more than the policy's threshold (coefficient of variation): treat "
    "the speed numbers with care",
    "throttled": "the GPU reported clock throttling (power or thermal) during the case",
    "int8_outliers_unrepresentative": "LLM.int8 with random weights: fewer outlier activations than real "
    "weights, so int8 speed is optimistic",
    "full_cache": "measured with --cache full: the checkpoint's sliding window removed, so the KV cache keeps "
    "every token (as runtimes that ignore the window do, e.g. transformers 4.x with eager or sdpa attention)",
    "built_without_window": "an older record (schema 1) of a Phi-3 model built without the checkpoint's "
    "sliding window: its KV cache keeps every token, so its memory is that of a runtime that ignores the window",
    "predictor_drift": "the predictor's weights or peak for this case are off the measurement by more than 5% "
    "(see Predicted against measured): the predictor's model of the libraries no longer holds here",
}
ALWAYS_SHOWN_FLAGS = ("noisy", "throttled", "random_weights")

ENV_KEYS = (
    "run_id",
    "created_utc",
    "suite",
    "host",
    "cpu",
    "machine",
    "ram_bytes",
    "python",
    "torch",
    "transformers",
    "bitsandbytes",
    "cuda",
    "cuda_driver",
    "driver",
    "git_commit",
    "gpus",
    "argv",
)
ENV_LABELS = {
    "run_id": "Run id",
    "created_utc": "Started (UTC)",
    "ram_bytes": "Host RAM",
    "git_commit": "Git commit",
    "gpus": "GPUs",
    "argv": "Command",
    "cpu": "CPU",
    "cuda": "CUDA (torch built for)",
    "cuda_driver": "CUDA (driver supports)",
    "os": "OS",
    "cpu_count": "CPU cores",
    "machine": "Machine fingerprint (CPU ISA)",
}


def _env_value(key: str, value: Any) -> str:
    if value is None or value == "":
        return "—"
    if key == "ram_bytes" and isinstance(value, (int, float)):
        return fmt_gib(value, 1)
    if key == "gpus" and isinstance(value, list):
        if not value:
            return "none"
        parts = []
        for gpu in value:
            if isinstance(gpu, dict):
                mem = gpu.get("memory_bytes")
                size = f", {fmt_gib(mem, 1)}" if mem else ""
                parts.append(f"{gpu.get('index', '?')}: {gpu.get('name', '?')}{size}")
            else:
                parts.append(str(gpu))
        return "; ".join(parts)
    if key == "machine" and isinstance(value, dict):  # the digest and the ISA extensions, not every part
        return fingerprint_brief(value) or "—"
    if key == "argv" and isinstance(value, list):
        return " ".join(str(a) for a in value)
    if isinstance(value, dict):
        if "version" in value:
            return str(value["version"])
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _shown_beside(key: str, envelopes: Sequence[dict[str, Any]]) -> bool:
    """The driver's CUDA is shown wherever torch's is, as "—" for envelopes written before it was recorded."""
    return key == "cuda_driver" and any("cuda" in e for e in envelopes)


def environment_section(data: RunData, groups: Sequence[DeviceGroup]) -> list[Block]:
    """The "Environment" section: the envelope(s) of the run, then the devices in the report."""
    blocks: list[Block] = [Heading("Environment", 2)]
    if data.envelopes:
        keys = [k for k in ENV_KEYS if any(k in e for e in data.envelopes) or _shown_beside(k, data.envelopes)]
        keys += sorted({k for e in data.envelopes for k in e} - set(ENV_KEYS))
        many = len(data.envelopes) > 1
        headers = ("Item",) + tuple(
            f"Run {e.get('run_id', i + 1)}" if many else "Value" for i, e in enumerate(data.envelopes)
        )
        rows = tuple((ENV_LABELS.get(k, k), *(_env_value(k, e.get(k)) for e in data.envelopes)) for k in keys)
        blocks.append(Table(headers, rows))
    else:
        blocks.append(Para("No environment envelope: the table below is built from the records alone.", "warn"))
    rows = []
    for g in groups:
        statuses = Counter(r.status for r in g.records)
        rows.append(
            (
                g.label,
                g.host or "—",
                "GPU" if g.gpu else "CPU (host memory only)",
                str(len(g.records)),
                ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())),
            )
        )
    blocks.append(
        Table(
            ("Device", "Host", "Kind", "Cases", "Status"),
            tuple(rows),
            "lllrl",
            caption="Devices in this report (each device's records are reported separately)",
        )
    )
    return blocks


def quality_section(groups: Sequence[DeviceGroup]) -> list[Block]:
    """The "Quality flags" section: how many cases carry each flag, and which are noisy or throttled."""
    blocks: list[Block] = [Heading("Quality flags", 2)]
    rows = []
    flagged = []
    for g in groups:
        counts = Counter(f for r in g.records for f in r.flags)
        for flag in list(ALWAYS_SHOWN_FLAGS) + sorted(set(counts) - set(ALWAYS_SHOWN_FLAGS)):
            n = counts.get(flag, 0)
            symbol = "⚠️" if n else "✅"
            rows.append(
                (g.label, flag.replace("_", " "), f"{symbol} {n} of {len(g.records)}", FLAG_MEANINGS.get(flag, ""))
            )
        for r in g.records:
            bad = [f for f in r.flags if f in ("noisy", "throttled")]
            if bad:
                flagged.append(
                    (
                        g.label,
                        r.spec.model,
                        r.spec.precision,
                        r.spec.scenario,
                        str(r.spec.batch_size),
                        str(r.spec.context_tokens),
                        ", ".join(bad),
                    )
                )
    blocks.append(Table(("Device", "Flag", "Cases", "Meaning"), tuple(rows), "llrl"))
    if any(r.spec.weights == "random" or "random_weights" in r.flags for g in groups for r in g.records):
        blocks.append(
            Para(
                "Random weights: these cases ran weights built from the model's config, not a trained checkpoint. "
                "Speed and memory are those of the real model; bitsandbytes int8 speed may differ (fewer outliers).",
                "warn",
            )
        )
    if flagged:
        blocks.append(
            Details(
                f"{len(flagged)} case(s) flagged noisy or throttled",
                (
                    Table(
                        ("Device", "Model", "Precision", "Scenario", "Batch", "Context", "Flags"),
                        tuple(flagged),
                        "llllrrl",
                    ),
                ),
            )
        )
    return blocks
