"""The llama.cpp engine's section: the harness's timings beside llama.cpp's own, and llama.cpp's buffers.

Reads the records only: the per-repetition comparison is :func:`bench.results.metrics.engine_timing_metrics`
(``Record.metrics``), the buffers are what llama.cpp's log said (``engine_info["buffers_bytes"]``) and the host
RSS split is the kernel's (``RssFile``: pages of the mapped GGUF file; ``RssAnon``: the process's own memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.report.document import Block, Heading, Para, Table
from bench.results.record import Record
from bench.units import fmt_mib, fmt_ms, fmt_num


def _buffers(info: dict[str, Any], kind: str) -> int | None:
    found = [v for k, v in (info.get("buffers_bytes") or {}).items() if k.split(" ", 1)[-1] == kind]
    return sum(found) if found else None


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}x"


def llamacpp_blocks(records: Sequence[Record], gpu: bool) -> list[Block]:
    """The section for one device's llama.cpp records ([] when there are none)."""
    rows = [r for r in records if r.ok and r.spec.engine == "llama.cpp"]
    if not rows:
        return []
    rows.sort(key=lambda r: (r.spec.model, r.spec.precision, r.spec.kv_cache_type, r.spec.context_tokens))
    timing, memory = [], []
    for r in rows:
        s, m, info = r.spec, r.metrics, r.engine_info
        case = (s.model, s.precision, info.get("kv_cache_ggml_type", "F16"), f"{s.context_tokens}+{s.new_tokens}")
        timing.append(
            (
                *case,
                fmt_ms(m.get("ttft_s")),
                fmt_ms(m.get("engine_prompt_eval_s")),
                _ratio(m.get("ttft_over_engine_prompt")),
                fmt_num(m.get("decode_tokens_per_s")),
                fmt_num(m.get("engine_decode_tokens_per_s")),
                _ratio(m.get("decode_over_engine_eval")),
            )
        )
        mem = r.memory
        memory.append(
            (
                *case,
                fmt_mib(mem.weights_bytes),
                fmt_mib(_buffers(info, "model")),
                fmt_mib(_buffers(info, "KV")),
                fmt_mib(_buffers(info, "compute")),
                fmt_mib(mem.nvml_process_peak_bytes if gpu else mem.host_peak_rss_bytes),
                fmt_mib(info.get("file_rss_bytes")),
                fmt_mib(info.get("anon_rss_bytes")),
            )
        )
    head = ("Model", "GGUF", "KV type", "Tokens")
    peak = "NVML peak (MiB)" if gpu else "Peak RSS (MiB)"
    return [
        Heading("llama.cpp: the harness's timings beside llama.cpp's own", 3),
        Para(
            "llama.cpp times its prompt evaluation and its single-token evaluations itself (llama_perf_context, "
            "reset before every call); the harness's clock encloses them (the call into the binding and the argmax "
            "of each token), so a ratio of 1.0000x means the same time and 1.0100x means the harness reads 1% more."
        ),
        Table(
            (*head, "TTFT (ms)", "llama.cpp prompt (ms)", "ratio", "decode tok/s", "llama.cpp tok/s", "ratio"),
            tuple(timing),
            "llllrrrrrr",
        ),
        Table(
            (*head, "GGUF tensors", "model buf", "KV buf", "compute buf", peak, "RssFile", "RssAnon"),
            tuple(memory),
            "llllrrrrrrr",
            caption="MiB. Buffers as llama.cpp's log states them (0.01 MiB). "
            + (
                "The NVML process peak includes the CUDA context."
                if gpu
                else "The weights are a mapped file (mmap): RssFile counts the file's pages the process touched "
                "(clean page cache, reclaimable), RssAnon the process's own memory; both at the end of the case. "
                "A CPU backend that repacks Q4_0 for its kernels (the CPU_REPACK model buffer) holds a second, "
                "anonymous copy of those weights beside the mapped file."
            ),
        ),
    ]
