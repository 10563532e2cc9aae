"""The llama.cpp predictor against measured llama.cpp records: weights, KV cache, compute buffer and host peak RSS.

Reads the llama.cpp records of run folders (``bench run --engine llama.cpp``) and prints, per case, the measured
figure beside the prediction (``bench.predict.llamacpp``) and the relative error. The host line is the prediction
of llama.cpp's buffers plus what the process held before the case (``host_baseline_rss_bytes``, measured), plus the
repacked copy of the weights where llama.cpp's log shows a ``CPU_REPACK`` buffer (a CPU backend's layout for its
kernels, which the predictor does not model: it predicts what a GPU holds), against the peak host RSS.

    python benchmarks/llamacpp_prediction.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import sys
from pathlib import Path


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
        for r in RunFolder(folder).load_records():
            s = r.spec
            if not r.ok or s.engine != "llama.cpp" or s.weights != "random":
                continue
            p = predict_llamacpp(s.model, s.precision, s.context_tokens, s.new_tokens, s.kv_cache_type)
            buffers = r.engine_info.get("buffers_bytes") or {}
            repack = sum(v for k, v in buffers.items() if k.startswith("CPU_REPACK"))
            compute = sum(v for k, v in buffers.items() if k.endswith(" compute"))
            host = p.total_bytes + (r.memory.host_baseline_rss_bytes or 0) + repack
            out.append(
                (
                    f"{s.model} {s.precision} L{s.context_tokens}+{s.new_tokens}",
                    cell(r.memory.weights_bytes, p.weights_bytes),
                    cell(r.memory.kv_cache_bytes, p.kv_cache_bytes),
                    cell(compute, p.compute_bytes),
                    cell(r.memory.host_peak_rss_bytes, host),
                )
            )
    return out


def main(argv: list[str]) -> int:
    """Print the table; exit 2 without a run folder."""
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    head = ("case", "weights meas / pred", "KV cache", "compute buffer", "host peak RSS")
    for row in (head, *rows([Path(a) for a in argv])):
        print(" | ".join(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
