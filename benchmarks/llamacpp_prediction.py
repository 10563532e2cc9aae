"""The llama.cpp predictor against measured llama.cpp records: weights, KV cache, compute buffer, ggml-cpu's
repacked copy and host peak RSS.

Reads the llama.cpp records of run folders (``bench run --engine llama.cpp``) and prints, per case, the measured
figure beside the prediction (``bench.predict.llamacpp``) and the relative error. A CPU case is predicted for the
CPU features of the machine that measured it (its fingerprint in the run's ``environment.json``), so the
predicted ``CPU_REPACK`` buffer is set against the one llama.cpp's log reports. The host line is the prediction of
llama.cpp's buffers (the mapped file's pages, the repacked copy, KV, compute, output) plus what the process held
before the case (``host_baseline_rss_bytes``, measured), against the peak host RSS; the last column leaves the
predicted repacked copy out, to show what it is worth.

    python benchmarks/llamacpp_prediction.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def rows(folders: list[Path]) -> list[tuple[str, ...]]:
    """One row per llama.cpp record: case, then measured / predicted / error for each quantity."""
    from bench.predict.llamacpp import predict_llamacpp
    from bench.results.run_folder import RunFolder

    def cell(measured: int | None, predicted: int) -> str:
        if not measured:
            return "-"
        return f"{measured / 2**20:,.1f} / {predicted / 2**20:,.1f} MiB ({predicted / measured - 1:+.2%})"

    out = []
    for folder in folders:
        run = RunFolder(folder)
        isa = machine_isa(run.read_envelopes())
        for r in run.load_records():
            s = r.spec
            if not r.ok or s.engine != "llama.cpp" or s.weights != "random":
                continue
            device = "cpu" if s.device == "cpu" else "cuda"
            if device == "cpu" and r.machine not in isa:
                raise SystemExit(f"{folder}: no fingerprint for machine {r.machine!r} in environment.json")
            p = predict_llamacpp(
                s.model, s.precision, s.context_tokens, s.new_tokens, s.kv_cache_type, device, isa.get(r.machine)
            )
            buffers = r.engine_info.get("buffers_bytes") or {}
            repack = sum(v for k, v in buffers.items() if k.startswith("CPU_REPACK"))
            compute = sum(v for k, v in buffers.items() if k.endswith(" compute"))
            host = p.total_bytes + (r.memory.host_baseline_rss_bytes or 0)
            out.append(
                (
                    f"{s.model} {s.precision} L{s.context_tokens}+{s.new_tokens}",
                    cell(r.memory.weights_bytes, p.weights_bytes),
                    cell(r.memory.kv_cache_bytes, p.kv_cache_bytes),
                    cell(compute, p.compute_bytes),
                    cell(repack, p.repack_bytes) if repack or p.repack_bytes else "none / none",
                    cell(r.memory.host_peak_rss_bytes, host),
                    cell(r.memory.host_peak_rss_bytes, host - p.repack_bytes),
                )
            )
    return out


def machine_isa(envelopes: list[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
    """Machine digest -> its ISA flags, from a run's environment envelopes (resumed ones included)."""
    out = {}
    for env in envelopes:
        for e in (env, *(env.get("resumed") or ())):
            m = e.get("machine") or {}
            if m.get("digest"):
                out[m["digest"]] = tuple(m.get("isa") or ())
    return out


def main(argv: list[str]) -> int:
    """Print the table; exit 2 without a run folder."""
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    head = (
        "case",
        "weights meas / pred",
        "KV cache",
        "compute buffer",
        "CPU_REPACK",
        "host peak RSS",
        "host RSS, repack left out",
    )
    for row in (head, *rows([Path(a) for a in argv])):
        print(" | ".join(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
