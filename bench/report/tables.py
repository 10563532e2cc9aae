"""The results tables of one device: decoder cases (generate) and encoder cases (encode), medians per case."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from bench.report import plots
from bench.report.document import Block, Details, Table
from bench.units import GiB, fmt_mib, fmt_ms, fmt_num, is_missing

ORDER = ["model", "precision", "batch_size", "context_tokens"]
_HIDDEN_TABLE_FLAGS = ("random_weights",)  # said once for the whole report, not on every row


_FLAG_WORDS = {"full_cache": "full cache (window removed)", "built_without_window": "no window (old record)"}


def flag_words(flags: str | Sequence[str]) -> str:
    """Record flags in words ("random weights, noisy")."""
    items = [f for f in (flags.split(",") if isinstance(flags, str) else flags) if f]
    return ", ".join(_FLAG_WORDS.get(f, f.replace("_", " ")) for f in items)


def _mem_header(gpu: bool) -> str:
    return "Peak VRAM, NVML (GiB)" if gpu else "Peak host RSS (GiB)"


def _mem_column(gpu: bool) -> str:
    return "nvml_process_peak_bytes" if gpu else "host_peak_rss_bytes"


def _gib_cell(value: Any) -> str:
    return "—" if value is None or is_missing(value) else f"{float(value) / GiB:.2f}"


def _table_flags(value: Any) -> str:
    flags = [f for f in str(value or "").split(",") if f and f not in _HIDDEN_TABLE_FLAGS]
    return flag_words(flags) or "—"


def _row_kind(row: pd.Series) -> str:
    return "" if row["status"] == "ok" else "bad"


def _random_note(frame: pd.DataFrame) -> str:
    return " (random weights)" if plots.random_weights(frame) else ""


def _generate_row(r: pd.Series, column: str) -> tuple[str, ...]:
    engine = r.get("engine")
    return (
        r["model"],
        r["precision"] if engine in (None, "eager") or is_missing(engine) else f"{r['precision']} · {engine}",
        str(r["batch_size"]),
        str(r["context_tokens"]),
        str(r["new_tokens"]),
        r["status"],
        fmt_ms(r.get("ttft_s")),
        fmt_num(r.get("decode_tokens_per_s")),
        fmt_ms(r.get("tpot_s")),
        fmt_ms(r.get("itl_p99_s")),
        _gib_cell(r.get(column)),
        _gib_cell(r.get("weights_bytes")),
        fmt_mib(r.get("kv_cache_bytes")),
        _table_flags(r.get("flags")),
    )


def generate_table(frame: pd.DataFrame, gpu: bool) -> Block | None:
    """The decoder cases (generate), folded into a <details>; None when there are none."""
    gen = frame[frame["scenario"] == "generate"].sort_values(ORDER)
    if gen.empty:
        return None
    rows = [_generate_row(r, _mem_column(gpu)) for _, r in gen.iterrows()]
    kinds = [_row_kind(r) for _, r in gen.iterrows()]
    table = Table(
        (
            "Model",
            "Precision",
            "Batch",
            "Context",
            "New",
            "Status",
            "TTFT (ms)",
            "Decode (tokens/s)",
            "TPOT (ms)",
            "ITL p99 (ms)",
            _mem_header(gpu),
            "Weights (GiB)",
            "KV cache (MiB)",
            "Flags",
        ),
        tuple(rows),
        "llrrrlrrrrrrrl",
        tuple(kinds),
        caption=f"Decoder cases (generate){_random_note(frame)}: medians over repetitions",
    )
    return Details(f"Decoder cases: {len(rows)} (table)", (table,))


def _encode_row(r: pd.Series, column: str) -> tuple[str, ...]:
    return (
        r["model"],
        r["precision"],
        str(r["batch_size"]),
        str(r["context_tokens"]),
        r["status"],
        fmt_ms(r.get("latency_s")),
        fmt_ms(r.get("latency_p90_s")),
        fmt_num(r.get("sequences_per_s")),
        fmt_num(r.get("tokens_per_s"), 0),
        _gib_cell(r.get(column)),
        _gib_cell(r.get("weights_bytes")),
        _table_flags(r.get("flags")),
    )


def encode_table(frame: pd.DataFrame, gpu: bool) -> Block | None:
    """The encoder cases (encode), folded into a <details>; None when there are none."""
    enc = frame[frame["scenario"] == "encode"].sort_values(ORDER)
    if enc.empty:
        return None
    rows = [_encode_row(r, _mem_column(gpu)) for _, r in enc.iterrows()]
    kinds = [_row_kind(r) for _, r in enc.iterrows()]
    table = Table(
        (
            "Model",
            "Precision",
            "Batch",
            "Sequence length",
            "Status",
            "Latency (ms)",
            "p90 (ms)",
            "Sequences/s",
            "Tokens/s",
            _mem_header(gpu),
            "Weights (GiB)",
            "Flags",
        ),
        tuple(rows),
        "llrrlrrrrrrl",
        tuple(kinds),
        caption=f"Encoder cases (encode){_random_note(frame)}: medians over repetitions",
    )
    return Details(f"Encoder cases: {len(rows)} (table)", (table,))


def results_tables(frame: pd.DataFrame, gpu: bool) -> list[Block]:
    """Every results table of one device's records (decoder, then encoder)."""
    return [t for t in (generate_table(frame, gpu), encode_table(frame, gpu)) if t is not None]
