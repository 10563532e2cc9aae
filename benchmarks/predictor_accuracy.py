"""How close the memory predictor comes to what the harness measures: relative error per case and the worst case.

On a CPU (the default): every case runs in a fresh process with the harness's loader and scenarios
(``bench.measure.host_cases.measure_host_case``); the measured figure is the run's resident-memory high-water
mark minus the process's resident memory before the model was loaded, and the prediction is
``bench.predict.memory.predict_memory`` for this host. Tiny configs (phi-3-tiny, bert-tiny) at every
precision and layer-reduced full-width configs (phi-3-mini-2l, bert-base-2l), including phi-3-mini-2l above its
2047-token sliding window, where the KV cache the run held (``kv_cache_bytes``: W - 1 tokens per layer) is compared
with the predicted ``kv_cache_final_bytes`` too.

On a GPU: ``--results DIR`` compares the records of a GPU run folder (``nvml_process_peak_bytes``, what
the card must hold) with the prediction for the card named in each record.

    python benchmarks/predictor_accuracy.py                # CPU, all cases (about 15 minutes on 2 cores)
    python benchmarks/predictor_accuracy.py --quick        # CPU, a few cases
    python benchmarks/predictor_accuracy.py --results reports/<gpu-run>
    python benchmarks/predictor_accuracy.py --out accuracy.json
    python benchmarks/predictor_accuracy.py --published    # published A100 readings (published_accuracy.py)

Exit status 1 when the worst relative error exceeds ``--tolerance`` (default 5%).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ALL_PRECISIONS = ("fp32", "fp16", "bf16", "int8", "nf4", "nf4-dq", "fp4", "fp4-dq")


@dataclass(frozen=True)
class Case:
    """One measured shape: model, precision, context, new tokens, batch."""

    model: str
    precision: str
    context_tokens: int
    new_tokens: int
    batch_size: int

    @property
    def label(self) -> str:
        """A short name for tables."""
        return f"{self.model} {self.precision} L{self.context_tokens} n{self.new_tokens} b{self.batch_size}"


def cpu_cases(quick: bool = False) -> list[Case]:
    """The CPU cases: tiny configs at every precision, layer-reduced configs at the main ones."""
    if quick:
        return [
            Case("phi-3-tiny", "fp32", 512, 8, 2),
            Case("phi-3-tiny", "nf4", 256, 8, 1),
            Case("bert-tiny", "int8", 256, 0, 4),
            Case("bert-base-2l", "fp32", 256, 0, 2),
        ]
    cases = []
    for p in ALL_PRECISIONS:
        cases.append(Case("phi-3-tiny", p, 128, 16, 1))
        cases.append(Case("phi-3-tiny", p, 1024, 8, 2))
        cases.append(Case("bert-tiny", p, 512, 0, 4))
    cases.append(Case("phi-3-tiny", "fp16", 16, 128, 4))  # decode-dominated
    cases.append(Case("phi-3-tiny", "fp32", 3000, 4, 1))  # above the window: the sliding mask dominates attention
    for p in ("fp32", "bf16", "int8", "nf4", "nf4-dq"):
        cases.append(Case("phi-3-mini-2l", p, 256, 8, 1))
    cases.append(Case("phi-3-mini-2l", "fp32", 1024, 8, 1))
    # above the checkpoint's 2047-token sliding window: the cache keeps 2046 tokens per layer
    cases.append(Case("phi-3-mini-2l", "fp32", 2100, 8, 1))
    cases.append(Case("phi-3-mini-2l", "nf4", 2100, 8, 1))
    for p in ("fp32", "fp16", "int8", "nf4"):
        cases.append(Case("bert-base-2l", p, 512, 0, 2))
    return cases


def host_profile() -> Any:
    """A CPU profile of this host for memory prediction (its vector ISA; no speed figures needed)."""
    import torch

    from bench.config.hardware import HardwareProfile, Measured
    from bench.measure.device_probes import cpu_model_name, host_memory_bytes

    return HardwareProfile(
        name=f"{cpu_model_name()} (this host)", kind="cpu", memory_bytes=host_memory_bytes(),
        memory_bandwidth_bytes_per_s=1.0,
        measured=Measured(cpu_capability=str(torch.backends.cpu.get_cpu_capability())),
    )


def relative_error(predicted: float, measured: float) -> float:
    """(predicted - measured) / measured."""
    return (predicted - measured) / measured


def run_cpu(cases: Sequence[Case], threads: int | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Measure and predict every case on this CPU; one row per case."""
    from bench.measure.host_cases import measure_host_case
    from bench.predict.memory import predict_memory

    profile = host_profile()
    rows = []
    for case in cases:
        if progress:
            print(f"  measuring {case.label} ...", file=sys.stderr, flush=True)
        m = measure_host_case(case.model, case.precision, case.context_tokens, case.batch_size, case.new_tokens,
                              threads=threads)
        p = predict_memory(case.model, case.precision, case.context_tokens, case.batch_size, case.new_tokens,
                           profile, bnb_4bit_path=m.bnb_4bit_kernel_path)  # the 4-bit path the case took
        rows.append({
            "case": case.label, "model": case.model, "precision": case.precision,
            "context_tokens": case.context_tokens, "new_tokens": case.new_tokens, "batch_size": case.batch_size,
            "evidence": "host RSS peak minus baseline (CPU)",
            "measured_bytes": m.measured_bytes, "predicted_bytes": p.total_bytes,
            "measured_weights_bytes": m.weights_bytes, "predicted_weights_bytes": p.weights_bytes,
            "relative_error": relative_error(p.total_bytes, m.measured_bytes),
            "peak_phase": p.peak_phase, "peak_stage": p.peak_stage,
            **kv_columns(p.kv_cache_final_bytes if case.new_tokens else None, m.kv_cache_bytes),
        })
    return rows


def kv_columns(predicted: int | None, measured: int | None) -> dict[str, Any]:
    """The KV cache at the end of generation, predicted and measured, and their relative error (None: no cache)."""
    error = relative_error(predicted, measured) if predicted is not None and measured else None
    return {"predicted_kv_cache_bytes": predicted, "measured_kv_cache_bytes": measured, "kv_relative_error": error}


def run_records(results: Path, profiles_dirs: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Compare a run folder's GPU records (nvml_process_peak_bytes) with predictions for their cards."""
    from bench.config.hardware import find_profile, load_profiles, profile_dirs
    from bench.errors import BadInputError
    from bench.predict.memory import predict_memory
    from bench.results.run_folder import RunFolder

    profiles = load_profiles(profile_dirs(profiles_dirs))
    rows = []
    for r in RunFolder(results).load_records():
        if r.status != "ok" or not str(r.device).startswith("cuda"):
            continue
        measured = r.memory.nvml_process_peak_bytes
        if not measured:
            continue
        prof = find_profile(r.device_name, profiles)
        s = r.spec
        try:
            p = predict_memory(s.model, s.precision, s.context_tokens, s.batch_size, s.new_tokens, prof,
                               attn_implementation=s.attn_implementation, cache=getattr(s, "cache", "config"))
        except BadInputError:
            continue
        rows.append({
            "case": f"{s.model} {s.precision} L{s.context_tokens} n{s.new_tokens} b{s.batch_size}",
            "model": s.model, "precision": s.precision, "context_tokens": s.context_tokens,
            "new_tokens": s.new_tokens, "batch_size": s.batch_size, "device": r.device_name,
            "evidence": "nvml_process_peak_bytes (GPU)" + ("" if prof else "; no profile: generic CUDA GPU"),
            "measured_bytes": int(measured), "predicted_bytes": p.total_bytes,
            "measured_weights_bytes": r.memory.weights_bytes, "predicted_weights_bytes": p.weights_bytes,
            "relative_error": relative_error(p.total_bytes, measured),
            "peak_phase": p.peak_phase, "peak_stage": p.peak_stage,
            **kv_columns(p.kv_cache_final_bytes if s.new_tokens else None, r.memory.kv_cache_bytes),
        })
    return rows


def render(rows: Sequence[dict[str, Any]], tolerance: float) -> str:
    """A plain-text table of the rows and the worst case."""
    import io

    from rich.console import Console
    from rich.table import Table

    table = Table(title="Predicted vs measured peak memory (predicted)")
    for col in ("case", "evidence", "measured MiB", "predicted MiB", "error", "KV error", "peak at"):
        table.add_column(col, justify="right" if "MiB" in col or "error" in col else "left")
    for r in rows:
        err = r["relative_error"]
        mark = "" if abs(err) <= tolerance else " !"
        kv_err = r.get("kv_relative_error")
        kv = "-" if kv_err is None else f"{kv_err:+.2%}"
        table.add_row(r["case"], r["evidence"], f"{r['measured_bytes'] / 2**20:,.2f}",
                      f"{r['predicted_bytes'] / 2**20:,.2f}", f"{err:+.2%}{mark}", kv,
                      f"{r['peak_phase']}: {r['peak_stage']}")
    console = Console(file=io.StringIO(), record=True, width=160)
    console.print(table)
    if rows:
        worst = max(rows, key=lambda r: abs(r["relative_error"]))
        mean_abs = sum(abs(r["relative_error"]) for r in rows) / len(rows)
        console.print(f"worst case: {worst['case']}: {worst['relative_error']:+.2%} "
                      f"(tolerance {tolerance:.0%}); mean absolute error {mean_abs:.2%} over {len(rows)} cases")
        kv_rows = [r for r in rows if r.get("kv_relative_error") is not None]
        if kv_rows:
            kv_worst = max(kv_rows, key=lambda r: abs(r["kv_relative_error"]))
            console.print(f"KV cache at the end of generation, worst case: {kv_worst['case']}: "
                          f"{kv_worst['kv_relative_error']:+.2%} over {len(kv_rows)} decoder cases")
    return console.export_text()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; exit 1 when the worst case is outside the tolerance."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--published" in argv:  # published real-GPU readings instead of this machine (published_accuracy.py)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import published_accuracy

        return published_accuracy.main(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, help="a GPU run folder to compare instead of measuring on this CPU")
    parser.add_argument("--profiles", action="append", default=[], help="extra hardware profile folder(s)")
    parser.add_argument("--quick", action="store_true", help="CPU: a few cases only")
    parser.add_argument("--threads", type=int, help="CPU threads per measured case")
    parser.add_argument("--tolerance", type=float, default=0.05, help="largest acceptable relative error")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.results:
        rows = run_records(args.results, args.profiles)
        if not rows:
            print(f"no ok GPU records with nvml_process_peak_bytes in {args.results}", file=sys.stderr)
            return 2
    else:
        rows = run_cpu(cpu_cases(args.quick), args.threads)
    print(render(rows, args.tolerance))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    worst = max(abs(r["relative_error"]) for r in rows)
    worst_kv = max((abs(r["kv_relative_error"]) for r in rows if r.get("kv_relative_error") is not None), default=0.0)
    return 0 if max(worst, worst_kv) <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
