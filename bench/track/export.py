"""Exports of records for other tools: pytest-benchmark JSON and github-action-benchmark JSON.

pytest-benchmark: one benchmark per measured case, named like the pytest integration's tests
(``test_case[<case key>]``) so exported runs and runs of the pytest suite compare with each other;
the timed value is one call (E2E seconds for generate, forward latency for encode) and tokens/s,
TTFT and memory go into ``extra_info``. Statistics come from pytest-benchmark's own ``Stats``.

github-action-benchmark: ``customBiggerIsBetter`` (tokens/s) and ``customSmallerIsBetter``
(latencies in ms, peak memory in MiB) lists of ``{name, unit, value, range, extra}``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.config.spec import CaseSpec
from bench.errors import BadInputError
from bench.results.envelopes import envelope_for
from bench.results.metrics import percentile, speed_samples
from bench.results.record import Record
from bench.track.settings import MEMORY_FIELDS
from bench.units import MiB

PYTEST_TEST_PATH = "tests/benchmarks/test_suite_benchmark.py"
PYTEST_TEST_FUNCTION = "test_case"
FORMATS = ("pytest-benchmark", "github-bigger", "github-smaller")


def case_test_id(spec: CaseSpec) -> str:
    """The pytest parameter id of a case: its key."""
    return spec.key


def case_test_name(spec: CaseSpec) -> str:
    """The pytest test name of a case, as pytest-benchmark records it."""
    return f"{PYTEST_TEST_FUNCTION}[{case_test_id(spec)}]"


def case_group(spec: CaseSpec) -> str:
    """The pytest-benchmark group of a case: model, precision and scenario (so tables compare like with like)."""
    return f"{spec.model} {spec.precision} {spec.scenario}"


def timed_samples(record: Record) -> tuple[str, list[float]]:
    """The per-call durations a benchmark tool sees: E2E seconds (generate) or forward latency (encode)."""
    if record.spec.scenario == "generate":
        return "e2e_s", list(record.samples.e2e_s)
    return "latency_s", list(record.samples.latency_s)


def _finite_items(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None and not (isinstance(v, float) and not math.isfinite(v))}


def extra_info(record: Record) -> dict[str, Any]:
    """What pytest-benchmark keeps beside the timings: device, derived metrics (tokens/s, TTFT) and memory bytes."""
    timed, _ = timed_samples(record)
    info: dict[str, Any] = {
        "case_key": record.spec.key,
        "device": record.device,
        "device_name": record.device_name,
        "host": record.host,
        "run_id": record.run_id,
        "weights": record.spec.weights,
        "flags": list(record.flags),
        "timed": timed,
    }
    info.update(_finite_items(record.metrics))
    info.update(_finite_items({k: v for k, v in record.memory.to_dict().items() if k != "nvml_method"}))
    return info


def _single_device(records: Sequence[Record]) -> str:
    names = sorted({r.device_name for r in records})
    if len(names) > 1:
        raise BadInputError(
            f"the records come from {len(names)} devices ({', '.join(map(repr, names))}); a pytest-benchmark file "
            "describes one machine: pass --device-name to export one of them"
        )
    return names[0] if names else ""


def to_pytest_benchmark(
    records: Sequence[Record], envelopes: Sequence[dict[str, Any]] = (), *, now: datetime | None = None
) -> dict[str, Any]:
    """A pytest-benchmark JSON document (the ``--benchmark-json`` layout) of the measured records of one device."""
    from pytest_benchmark import __version__ as pb_version
    from pytest_benchmark.stats import Stats

    measured = [r for r in records if r.ok and timed_samples(r)[1]]
    device_name = _single_device(measured)
    env = next((e for r in measured if (e := envelope_for(r, envelopes)) is not None), None) or {}
    benchmarks = []
    for r in measured:
        stats = Stats()
        for duration in timed_samples(r)[1]:
            stats.update(duration)
        stats_dict = stats.as_dict()
        stats_dict.update(data=list(stats.data), iterations=1)
        benchmarks.append(
            {
                "group": case_group(r.spec),
                "name": case_test_name(r.spec),
                "fullname": f"{PYTEST_TEST_PATH}::{case_test_name(r.spec)}",
                "params": {"case": case_test_id(r.spec)},
                "param": case_test_id(r.spec),
                "extra_info": extra_info(r),
                "options": {
                    "disable_gc": False,
                    "timer": "bench (harness timers)",
                    "min_rounds": r.policy.min_repetitions,
                    "max_time": r.policy.timeout_s,
                    "min_time": r.policy.min_duration_s,
                    "warmup": r.policy.warmup_runs > 0,
                },
                "stats": stats_dict,
            }
        )
    machine_info = {
        "node": env.get("host", measured[0].host if measured else ""),
        "processor": env.get("cpu", ""),
        "machine": platform.machine(),
        "python_version": env.get("python", platform.python_version()),
        "system": platform.system(),
        "device_name": device_name,
        "gpus": env.get("gpus", []),
        **{k: env.get(k) for k in ("torch", "transformers", "bitsandbytes", "cuda", "driver") if k in env},
    }
    commit = env.get("git_commit")
    return {
        "machine_info": machine_info,
        "commit_info": {"id": commit, "project": "llm-bench"} if commit else {},
        "benchmarks": benchmarks,
        "datetime": env.get("created_utc") or (now or datetime.now(timezone.utc)).isoformat(),
        "version": pb_version,
    }


_BIGGER = (
    ("decode_tokens_per_s", "decode tokens/s"),
    ("prefill_tokens_per_s", "prefill tokens/s"),
    ("tokens_per_s", "encode tokens/s"),
)
_SMALLER_TIMES = (
    ("ttft_s", "TTFT", "ttft_s"),
    ("e2e_s", "E2E latency", "e2e_s"),
    ("latency_s", "encode latency", "latency_s"),
)


def _series_name(record: Record, what: str) -> str:
    s = record.spec
    shape = f"b{s.batch_size} L{s.context_tokens}" + (f" n{s.new_tokens}" if s.scenario == "generate" else "")
    weights = "" if s.weights == "random" else f" {s.weights}"
    device = record.device_name or record.device
    return f"{s.model} {s.precision} {s.scenario} {shape}{weights} [{device}] {what}"


def _extra(record: Record) -> str:
    reps = int(record.metrics.get("repetitions", 0))
    flags = f"; flags: {', '.join(record.flags)}" if record.flags else ""
    return f"{reps} repetitions; run {record.run_id or '?'}; key {record.spec.key}{flags}"


def _iqr_range(values: Sequence[float], scale: float) -> str:
    if len(values) < 2:
        return ""
    return f"IQR {percentile(values, 25) * scale:.4g} to {percentile(values, 75) * scale:.4g}"


def to_github_benchmark(records: Sequence[Record], *, bigger: bool) -> list[dict[str, Any]]:
    """github-action-benchmark entries: tokens/s (``bigger``) or latencies in ms and peak memory in MiB (not bigger)."""
    out: list[dict[str, Any]] = []
    for r in records:
        if not r.ok:
            continue
        m = r.metrics
        if bigger:
            for key, label in _BIGGER:
                if key in m and math.isfinite(m[key]):
                    samples = (
                        speed_samples(r, key)
                        if key != "tokens_per_s"
                        else [r.spec.batch_size * r.spec.context_tokens / t for t in r.samples.latency_s if t > 0]
                    )
                    out.append(
                        {
                            "name": _series_name(r, label),
                            "unit": "tokens/s",
                            "value": round(m[key], 3),
                            "range": _iqr_range(samples, 1.0),
                            "extra": _extra(r),
                        }
                    )
            continue
        for key, label, sample_key in _SMALLER_TIMES:
            if key in m and math.isfinite(m[key]):
                samples = speed_samples(r, sample_key)
                out.append(
                    {
                        "name": _series_name(r, label),
                        "unit": "ms",
                        "value": round(m[key] * 1e3, 4),
                        "range": _iqr_range(samples, 1e3),
                        "extra": _extra(r),
                    }
                )
        for name in MEMORY_FIELDS:
            value = getattr(r.memory, name)
            if value is not None:
                out.append(
                    {
                        "name": _series_name(r, "peak memory"),
                        "unit": "MiB",
                        "value": round(value / MiB, 1),
                        "extra": f"{name}; {_extra(r)}",
                    }
                )
                break
    return out


def export_records(
    records: Sequence[Record], fmt: str, envelopes: Sequence[dict[str, Any]] = (), *, device_name: str | None = None
) -> Any:
    """The export document of one format (see FORMATS), optionally of one device's records only."""
    if fmt not in FORMATS:
        raise BadInputError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if device_name is not None:
        picked = [r for r in records if r.device_name == device_name]
        if not picked:
            found = ", ".join(sorted({repr(r.device_name) for r in records}))
            raise BadInputError(f"no records of device {device_name!r}; the run holds {found}")
        records = picked
    if fmt == "pytest-benchmark":
        return to_pytest_benchmark(records, envelopes)
    return to_github_benchmark(records, bigger=fmt == "github-bigger")


def write_json(document: Any, path: str | os.PathLike[str]) -> Path:
    """Write a JSON document (NaN and infinities are not valid JSON and are refused)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8")
    return out


def save_to_pytest_benchmark_storage(
    document: dict[str, Any], storage_dir: str | os.PathLike[str], machine_id: str, name: str
) -> Path:
    """Save a pytest-benchmark document the way ``--benchmark-save`` does: ``STORAGE/MACHINE/NNNN_NAME.json``."""
    folder = Path(storage_dir) / machine_id
    folder.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in folder.glob("*.json") if (m := re.match(r"(\d{4})_", p.name))]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
    return write_json(document, folder / f"{max(numbers, default=0) + 1:04d}_{safe}.json")
