"""``bench predict``, ``bench advise`` and ``bench profile``: will it fit, how fast, on which card.

bench predict --model phi-3-mini --precision nf4 --context 4032 --new-tokens 64 --gpu "RTX 3060"
bench predict --model phi-3-mini --precision fp16 --context 2048 --json
bench advise --model phi-3-mini --context 4096 --min-tokens-per-s 20
bench profile                      # measure this machine's GPU (or CPU) and write its profile
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.commands.json_output import write_json_output
from bench.config.spec import ENGINES
from bench.errors import BadInputError
from bench.units import GiB, MiB

DEFAULT_ADVISE_PRECISIONS = ("fp16", "int8", "nf4", "nf4-dq")
DEFAULT_ADVISE_CONTEXTS = (1024, 2048, 4096)


def register(sub: Any) -> None:
    """Add the ``predict``, ``advise`` and ``profile`` subcommands."""
    p = sub.add_parser("predict", help="predict peak memory and decode tokens/s for a card you may not own")
    p.add_argument(
        "--model", help="a registered model (bench list) or a hub id org/name (config.json from the local cache)"
    )
    _any_model_arguments(p)
    p.add_argument("--precision", required=True, help="fp32, fp16, bf16, int8, nf4, nf4-dq, fp4, fp4-dq")
    p.add_argument("--context", type=int, required=True, help="prompt tokens")
    p.add_argument("--batch", type=int, default=1, help="sequences per batch (default 1)")
    p.add_argument("--new-tokens", type=int, default=None, help="tokens to generate (default 64; 0 for encoders)")
    p.add_argument("--gpu", help="a GPU profile name (see 'bench advise'); default: a generic CUDA GPU")
    p.add_argument(
        "--profile", type=Path, help="a profile file instead of --gpu (e.g. a CPU written by 'bench profile')"
    )
    p.add_argument("--profiles", action="append", default=[], help="an extra folder of profile files")
    p.add_argument(
        "--results",
        action="append",
        default=[],
        type=Path,
        help="a run folder whose measured decode speeds calibrate the efficiency (repeatable)",
    )
    p.add_argument("--attn", default="sdpa", choices=("sdpa", "eager"), help="attention implementation")
    p.add_argument(
        "--cache",
        default="config",
        choices=("config", "window", "full"),
        help="decoders' KV cache: the checkpoint config's sliding window (config, the default; window insists on "
        "one) or full: every token kept, as runtimes that ignore the window do",
    )
    p.add_argument(
        "--engine",
        default="eager",
        choices=ENGINES,
        help="the engine whose measured roofline fraction calibrates the speed (default eager; see bench run --engine)",
    )
    p.add_argument(
        "--kv-cache-type",
        default="auto",
        choices=("auto", "f16", "q8_0", "q4_0"),
        help="--engine llama.cpp: the KV cache's type (auto: f16)",
    )
    p.add_argument("--json", nargs="?", const="-", metavar="FILE", help="write JSON (byte fields) to FILE or stdout")
    p.set_defaults(func=predict_command)

    a = sub.add_parser("advise", help="which card fits which model x precision x context, and how fast (predicted)")
    a.add_argument(
        "--model", action="append", help="model(s): registered names or hub ids org/name (default phi-3-mini)"
    )
    _any_model_arguments(a)
    a.add_argument("--precision", action="append", help=f"precision(s) (default {' '.join(DEFAULT_ADVISE_PRECISIONS)})")
    a.add_argument(
        "--context",
        action="append",
        type=int,
        help="context window(s) to fill: prompt plus new tokens (default 1024 2048 4096)",
    )
    a.add_argument("--batch", type=int, default=1, help="sequences per batch (default 1)")
    a.add_argument("--new-tokens", type=int, default=64, help="generated tokens within the window (default 64)")
    a.add_argument("--min-tokens-per-s", type=float, help="the decode speed the card must reach")
    a.add_argument(
        "--max-kl",
        type=float,
        metavar="NATS",
        help="the highest mean KL divergence (nats) from the reference precision a precision may have, as measured "
        "by 'bench run --quality' in the --results run folders (a precision without a measurement is excluded)",
    )
    a.add_argument("--gpu", action="append", help="only these cards (default: every profile)")
    a.add_argument("--profiles", action="append", default=[], help="an extra folder of profile files")
    a.add_argument(
        "--results",
        action="append",
        default=[],
        type=Path,
        help="a run folder with measured speeds and peaks (repeatable)",
    )
    a.add_argument(
        "--engine",
        default="eager",
        choices=ENGINES,
        help="the engine whose measured roofline fraction calibrates the speed (default eager; see bench run --engine)",
    )
    a.add_argument("--plot", type=Path, help="also draw the chart (tokens/s per card and precision) as a PNG here")
    a.add_argument("--markdown", type=Path, help="also write the short Markdown summary here")
    a.add_argument("--json", type=Path, help="also write every fit as JSON here")
    a.set_defaults(func=advise_command)

    f = sub.add_parser("profile", help="measure this machine (bandwidth, matmul rate, CUDA context) into a profile")
    f.add_argument("--device", help="cuda, cuda:N or cpu (default: the first GPU, else the CPU)")
    f.add_argument("--out", type=Path, help="profile file to write (default: the card's file under profiles/)")
    f.add_argument("--quick", action="store_true", help="smaller buffers and fewer repetitions")
    f.add_argument("--no-write", action="store_true", help="print the profile without writing it")
    f.set_defaults(func=profile_command)


def _any_model_arguments(parser: Any) -> None:
    """--model-path and --allow-download: predict any model from its config.json alone."""
    parser.add_argument(
        "--model-path",
        type=Path,
        help="a directory holding the model's config.json (weights not needed); --model then names it",
    )
    parser.add_argument(
        "--allow-download",
        action="store_true",
        help="fetch a hub id's config.json (that file only) when the local Hugging Face cache lacks it",
    )


def _profiles(extra: list[str]) -> list[Any]:
    from bench.config.hardware import load_profiles, profile_dirs

    return load_profiles(profile_dirs(extra))


def _records(folders: list[Path]) -> list[Any]:
    from bench.results.run_folder import RunFolder

    out: list[Any] = []
    for folder in folders:
        out.extend(RunFolder(folder).load_records())
    return out


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / GiB:,.2f} GiB" if abs(n) >= GiB else f"{n / MiB:,.1f} MiB"


def predict_command(args: argparse.Namespace) -> int:
    """Print (or write as JSON) the predicted peak memory breakdown and decode tokens/s."""
    from bench.config.config_only import resolve_model
    from bench.config.hardware import get_profile, load_profile
    from bench.config.models import DECODER
    from bench.config.precision import get_precision
    from bench.predict.memory import largest_batch, predict_memory
    from bench.predict.speed import predict_decode

    entry = resolve_model(args.model, args.model_path, args.allow_download)
    model = entry.model
    if args.engine == "llama.cpp" or get_precision(args.precision).is_gguf:
        return _predict_llamacpp(args, entry)
    new_tokens = args.new_tokens if args.new_tokens is not None else (64 if entry.family == DECODER else 0)
    profiles = _profiles(args.profiles)
    if args.gpu and args.profile:
        raise BadInputError("give --gpu NAME or --profile FILE, not both")
    device = load_profile(args.profile) if args.profile else get_profile(args.gpu, profiles) if args.gpu else None
    mem = predict_memory(
        model,
        args.precision,
        args.context,
        args.batch,
        new_tokens,
        device,
        attn_implementation=args.attn,
        cache=args.cache,
    )
    if device is not None and device.kind == "cuda" and args.batch > 1 and not mem.fits:
        limit = largest_batch(model, args.precision, args.context, new_tokens, device, cache=args.cache)
        what = f"the largest batch that fits is {limit}" if limit else "not even a batch of 1 fits"
        raise BadInputError(
            f"batch {args.batch} cannot fit on {device.name} ({_size(device.usable_memory_bytes)} usable of "
            f"{_size(device.memory_bytes)}) at context {args.context}: predicted peak {_size(mem.total_bytes)}; "
            f"{what} (predicted, loading included)"
        )
    speed = None
    if entry.family == DECODER and device is not None and new_tokens >= 2:
        speed = predict_decode(
            model,
            args.precision,
            args.context,
            args.batch,
            new_tokens,
            device,
            _records(args.results),
            profiles,
            engine=args.engine,
        )
    if args.json:
        payload = {"label": "predicted", "memory": mem.to_dict(), "decode": speed.to_dict() if speed else None}
        write_json_output(payload, args.json)
        return 0
    _print_prediction(mem, speed, device)
    return 0


def _predict_llamacpp(args: argparse.Namespace, entry: Any) -> int:
    """``bench predict --engine llama.cpp``: llama.cpp's predicted buffers (weights by GGUF type, KV, compute)."""
    from bench.config.models import DECODER
    from bench.config.precision import get_precision
    from bench.predict.llamacpp import predict_llamacpp

    if args.engine != "llama.cpp":
        raise BadInputError(f"precision {args.precision!r} is a GGUF file type: pass --engine llama.cpp")
    if entry.config is not None:
        raise BadInputError(
            f"model {entry.name} ({entry.source}): the llama.cpp predictor takes registered models (bench list)"
        )
    if entry.family != DECODER:
        raise BadInputError(f"model {args.model} is an encoder: llama.cpp runs decoders here")
    if args.batch != 1:
        raise BadInputError(f"--batch {args.batch}: the llama.cpp engine runs batch 1")
    if not get_precision(args.precision).is_gguf:
        raise BadInputError(f"engine llama.cpp runs GGUF types, not {args.precision!r}: pass f16, q8_0 or q4_0")
    new_tokens = args.new_tokens if args.new_tokens is not None else 64
    # a CPU profile (bench profile --device cpu): llama.cpp runs on the CPU and ggml-cpu may repack weights,
    # judged by this machine's CPU features; otherwise every layer is on a GPU
    device = "cpu" if args.profile and _profile_kind(args.profile) == "cpu" else "cuda"
    pred = predict_llamacpp(args.model, args.precision, args.context, new_tokens, args.kv_cache_type, device)
    if args.json:
        write_json_output(pred.to_dict(), args.json)
        return 0
    print(
        f"{args.model} {args.precision} in llama.cpp, prompt {args.context:,} + {new_tokens:,} new tokens\n"
        "predicted, not measured:"
    )
    types = ", ".join(f"{t} {_size(b)}" for t, b in pred.weights_by_type.items())
    rows = (
        ("weights", pred.weights_bytes, types),
        (f"KV cache ({pred.kv_cache_type})", pred.kv_cache_bytes, f"{pred.n_ctx:,} cells (context padded to 256)"),
        ("compute buffer", pred.compute_bytes, "one micro-batch of logits"),
        ("output buffer", pred.output_bytes, "one row of logits"),
    )
    if device == "cpu":
        repacked = ", ".join(pred.repack_by_type) or "nothing"
        rows += (("CPU_REPACK", pred.repack_bytes, f"{repacked} interleaved for this CPU's kernels"),)
    rows += (("total", pred.total_bytes, "+ the process (host RSS)" if device == "cpu" else "+ CUDA context"),)
    for name, value, note in rows:
        print(f"  {name:<16}{_size(value):>11}  {note}")
    return 0


def _profile_kind(path: Path) -> str:
    """The kind of a profile file (cuda or cpu)."""
    from bench.config.hardware import load_profile

    return load_profile(path).kind


def _cache_text(mem: Any) -> str:
    """The KV cache at the end of generation in words: tokens per layer and the policy."""
    if mem.cache_policy is None:
        return ""
    held = f"{mem.kv_cache_tokens:,} tokens per layer at the end"
    if mem.cache_window_tokens is not None:
        return f"; {held} (sliding window of {mem.cache_window_tokens:,})"
    return f"; {held} (full cache: every token)"


def loading_lines(mem: Any) -> list[str]:
    """The loading phase and the user's view in words: the load peak, the fit figure and nvidia-smi's reading."""
    if mem.load_peak_bytes is None:
        return [f"fit figure (predicted): {_size(mem.fit_bytes)} = the steady-state peak (no loading model on a CPU)"]
    phase = "loading" if mem.load_peak_bytes > mem.total_bytes else "generation"
    lines = [
        f"load peak (predicted): {_size(mem.load_peak_bytes)} = context + live bytes while loading: the weights "
        f"loaded so far + the 16-bit tensor being placed ({mem.load_peak_tensor}) and its quantization workspace",
        f"fit figure (predicted): {_size(mem.fit_bytes)} = context + the larger live peak ({phase}) + slack; "
        "fit is judged on it (cached blocks are handed back before an allocation fails)",
    ]
    if mem.nvidia_smi_bytes is not None:
        cached = mem.nvidia_smi_bytes - mem.fit_bytes
        lines.append(
            f"nvidia-smi would show (predicted): {_size(mem.nvidia_smi_bytes)} = context + the caching allocator's "
            f"pool after loading and one generation without empty_cache() ({_size(cached)} against the fit "
            f"figure: blocks freed while loading, {_size(mem.pool_after_load_bytes)} pool after loading, and while "
            "generating; the card's own nvidia-smi line adds other processes)"
        )
        if mem.nvidia_smi_note:
            lines.append(f"note: {mem.nvidia_smi_note}")
    return lines


def usable_lines(mem: Any, device: Any) -> list[str]:
    """What a prediction on a card says about its memory: fit against usable memory, the box, the sources."""
    if mem.device_usable_bytes is None:
        return []
    word = "fits" if mem.fits else "does NOT fit"
    lines = [
        f"Predicted: {word} in {mem.device}'s {_size(mem.device_usable_bytes)} usable "
        f"(box {_size(mem.device_memory_bytes)}; margin {_size(mem.margin_bytes)}).",
        f"usable memory: {mem.usable_source}",
    ]
    if device is not None and getattr(device, "consumer", False):
        from bench.config.hardware import DISPLAY_NOTE

        lines.append(f"note: {DISPLAY_NOTE}")
    return lines


def _print_prediction(mem: Any, speed: Any, device: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    title = (
        f"Predicted peak memory: {mem.model} {mem.precision}, context {mem.context_tokens}, "
        f"{mem.new_tokens} new, batch {mem.batch_size} on {mem.device}"
    )
    t = Table(title=title, caption="predicted from the architecture, not measured")
    t.add_column("part")
    t.add_column("bytes", justify="right")
    t.add_column("size", justify="right")
    t.add_column("basis")
    context_name = "CUDA context + libraries" if mem.device_kind == "cuda" else "per-case host bytes"
    rows = [
        (context_name, mem.context_bytes, mem.calibration.get("context_bytes", "")),
        (
            "weights",
            mem.weights_bytes,
            f"quantized {_size(mem.weights_quantized_bytes)} + kept {_size(mem.weights_unquantized_bytes)} "
            f"+ quantization state {_size(mem.quant_state_bytes)}",
        ),
        (
            "KV cache",
            mem.kv_cache_bytes,
            f"at the peak ({mem.peak_phase}); {_size(mem.kv_cache_final_bytes)} at the end{_cache_text(mem)}",
        ),
        ("activations + workspace", mem.activation_bytes, f"at {mem.peak_stage}"),
        ("allocator slack", mem.slack_bytes, mem.calibration.get("slack_bytes", "")),
    ]
    for name, value, basis in rows:
        t.add_row(name, f"{value:,}", _size(value), basis)
    t.add_row(
        "[bold]total (predicted peak)[/bold]",
        f"[bold]{mem.total_bytes:,}[/bold]",
        f"[bold]{_size(mem.total_bytes)}[/bold]",
        "",
    )
    console.print(t)
    for line in loading_lines(mem):
        console.print(line, highlight=False)
    for line in usable_lines(mem, device):
        console.print(line, highlight=False)
    for note in mem.notes:
        console.print(f"note: {note}")
    if speed is not None:
        line = (
            f"Decode ({speed.engine}): {speed.predicted_tokens_per_s:,.1f} tokens/s ({speed.basis_text}); ceiling "
            f"{speed.ceiling_tokens_per_s:,.1f} = batch x {speed.bandwidth_bytes_per_s / 1e9:,.0f} GB/s "
            f"({speed.bandwidth_basis}) / {_size(speed.bytes_per_step)} read per step"
        )
        console.print(line)
        if speed.efficiency is not None:
            console.print(f"efficiency {speed.efficiency:.0%}: {speed.efficiency_basis}")
        else:
            console.print(
                f"no measured roofline fraction for this model, precision and engine ({speed.engine}): the figure is "
                "the bandwidth ceiling, an upper bound "
                "(pass --results with a GPU run folder to calibrate it)"
            )
        if speed.measured_tokens_per_s is not None:
            console.print(f"measured on this card: {speed.measured_tokens_per_s:,.1f} tokens/s")


def usable_notes(pool: list[Any]) -> list[str]:
    """The lines under the advice table: fit is judged on usable memory, which cards' figure is assumed."""
    gpus = [p for p in pool if p.kind == "cuda"]
    lines = ["fit and margins: usable memory (what the driver reports as the card's total), not the box size"]
    assumed = [p.name for p in gpus if p.usable_assumed]
    if assumed:
        lines.append(f"usable memory assumed (box size minus 2.5%, no public figure found) for: {', '.join(assumed)}")
    if any(p.consumer for p in gpus):
        from bench.config.hardware import DISPLAY_NOTE

        lines.append(f"note: {DISPLAY_NOTE}")
    return lines


def _check_max_kl(max_kl: float | None, records: list[Any], models: list[str]) -> None:
    """Refuse a --max-kl that no record can answer: negative, without --results, or with no measured KL."""
    if max_kl is None:
        return
    if max_kl < 0:
        raise BadInputError(f"--max-kl must be at least 0 nats, got {max_kl:g}")
    from bench.results.quality import measured_kl_by_precision

    measured = measured_kl_by_precision(records)
    if not any(model == m for model, _ in measured for m in models):
        raise BadInputError(
            f"--max-kl needs measured quality for {', '.join(models)}: pass --results RUN_DIR of a "
            "'bench run --model NAME --model-path DIR --quality' run (none of the records given has it)"
        )


def _advise_models(args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    """The models to advise on (registered names or configs) and their display names."""
    from bench.config.config_only import resolve_model

    if args.model_path is not None:
        if args.model and len(args.model) > 1:
            raise BadInputError("--model-path predicts one model: give at most one --model to name it")
        resolved = [resolve_model(args.model[0] if args.model else None, args.model_path, args.allow_download)]
    else:
        resolved = [resolve_model(m, None, args.allow_download) for m in args.model or ["phi-3-mini"]]
    return [r.model for r in resolved], [r.name for r in resolved]


def advise_command(args: argparse.Namespace) -> int:
    """Print the fit table and the smallest card per requirement; with --plot/--markdown/--json, write those too."""
    from rich.console import Console

    from bench.config.hardware import get_profile
    from bench.predict.advisor import Requirement, advise, cheapest
    from bench.report.advice import advisor_summary_markdown, hand_entered_notes, plot_advice, render_table
    from bench.units import GiB as GIB

    profiles = _profiles(args.profiles)
    pool = [get_profile(name, profiles) for name in args.gpu] if args.gpu else profiles
    models, names = _advise_models(args)
    precisions = args.precision or list(DEFAULT_ADVISE_PRECISIONS)
    contexts = args.context or list(DEFAULT_ADVISE_CONTEXTS)
    from bench.config.precision import get_precision

    gguf = [p for p in precisions if get_precision(p).is_gguf]
    if gguf or args.engine == "llama.cpp":
        what = f"precision {gguf[0]!r} is a GGUF type" if gguf else "--engine llama.cpp"
        raise BadInputError(
            f"{what}: 'bench advise' covers the transformers engines; predict llama.cpp with "
            "'bench predict --engine llama.cpp --precision q4_0 --context N'"
        )
    records = _records(args.results)
    _check_max_kl(args.max_kl, records, names)
    fits = advise(
        pool,
        models,
        precisions,
        contexts,
        batch_size=args.batch,
        new_tokens=args.new_tokens,
        records=records,
        engine=args.engine,
    )
    console = Console()
    console.print(render_table(fits, notes=hand_entered_notes(pool)))
    for line in usable_notes(pool):
        console.print(line, highlight=False)
    requirements = [
        Requirement(m, c, tuple(precisions), args.min_tokens_per_s, args.batch, args.new_tokens, args.max_kl)
        for m in names
        for c in contexts
    ]
    for req in requirements:
        best = cheapest(fits, req)
        if best is None:
            console.print(f"[red]No profiled card meets {req.describe()} (predicted).[/red]")
        else:
            speed = f", {best.tokens_per_s:,.0f} tokens/s ({best.speed_basis})" if best.tokens_per_s is not None else ""
            console.print(
                f"Smallest card for {req.describe()}: [bold]{best.gpu}[/bold] "
                f"({best.memory_bytes / GIB:.0f} GiB, {_size(best.usable_bytes)} usable) at {best.precision}: "
                f"predicted peak {best.predicted_peak_bytes / GIB:.2f} GiB{speed}"
                + (f", measured KL {best.kl_mean_nats:.4f} nats." if best.kl_mean_nats is not None else ".")
            )
            if req.min_tokens_per_s and best.speed_label == "ceiling":
                console.print(
                    "  Its speed is a memory-bandwidth ceiling, not a prediction: it meets the minimum only if it "
                    "reaches that ceiling. Pass --results with a GPU run to calibrate the efficiency."
                )
    if args.plot:  # drawing costs more than the whole answer, so only on request
        plot = plot_advice(fits, args.plot, requirements[0] if len(requirements) == 1 else None)
        console.print(f"plot: {plot}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(advisor_summary_markdown(fits, requirements[-1]), encoding="utf-8")
        console.print(f"markdown: {args.markdown}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([f.to_dict() for f in fits], indent=2) + "\n", encoding="utf-8")
        console.print(f"json: {args.json}")
    return 0


def profile_command(args: argparse.Namespace) -> int:
    """Measure this machine and write (or print) its hardware profile."""
    from bench.config.hardware import dumps_profile, save_profile
    from bench.measure.device_profile import default_profile_path, profile_device

    if args.device and args.device != "cpu" and not args.device.startswith("cuda"):
        raise BadInputError(f"device {args.device!r} must be cpu, cuda or cuda:N")
    if args.device != "cpu":  # a GPU torch cannot use is an error, never a silent profile of the CPU
        from bench.measure.cuda_usability import MISMATCH, detect_gpu, mismatch_message

        detection = detect_gpu()
        if detection.verdict == MISMATCH:
            raise BadInputError(mismatch_message(detection))
    if args.device and args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise BadInputError(f"device {args.device} asked for, but CUDA is not available here; use --device cpu")
    profile = profile_device(args.device, quick=args.quick)
    print(dumps_profile(profile), end="")
    if not args.no_write:
        path = save_profile(profile, args.out or default_profile_path(profile))
        print(f"wrote {path}")
    return 0
