"""``bench fit``: the largest context and batch that fit a card, per precision (predicted).

bench fit --model phi-3-mini --gpu "GeForce RTX 4060"
bench fit --model-path ./my-model --gpu "RTX 3060" --batch 1 --batch 8 --context 4096 --json -
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.commands.json_output import write_json_output
from bench.errors import BadInputError

DEFAULT_PRECISIONS = ("fp16", "int8", "nf4", "nf4-dq")
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32)
DEFAULT_CARD = "GeForce RTX 4060"


def register(sub: Any) -> None:
    """Add the ``fit`` subcommand."""
    f = sub.add_parser("fit", help="the largest context and batch that fit a card, per precision (predicted)")
    f.add_argument("--model", help="a registered model (bench list) or a hub id org/name")
    f.add_argument("--model-path", type=Path, help="a directory holding the model's config.json")
    f.add_argument("--allow-download", action="store_true", help="fetch a hub id's config.json (only) when not cached")
    f.add_argument("--gpu", help=f"a GPU profile name (see 'bench advise'; default {DEFAULT_CARD!r})")
    f.add_argument("--profiles", action="append", default=[], help="an extra folder of profile files")
    f.add_argument("--precision", action="append", help=f"precision(s) (default {' '.join(DEFAULT_PRECISIONS)})")
    f.add_argument(
        "--batch", action="append", type=int, help="batch size(s) (default " + " ".join(map(str, DEFAULT_BATCHES)) + ")"
    )
    f.add_argument("--new-tokens", type=int, default=64, help="generated tokens within the context (default 64)")
    f.add_argument(
        "--context", type=int, help="the context (prompt + new tokens) for the largest-batch column (default 2048)"
    )
    f.add_argument("--cache", default="config", choices=("config", "window", "full"), help="decoders' KV cache policy")
    f.add_argument("--json", nargs="?", const="-", metavar="FILE", help="write JSON (bytes, tokens) to FILE or stdout")
    f.add_argument("--plot", type=Path, help="also draw largest context against batch as a PNG here")
    f.set_defaults(func=fit_command)


def fit_command(args: argparse.Namespace) -> int:
    """Print (or write as JSON) the capacity table of a model on a card."""
    from bench.config.config_only import resolve_model
    from bench.config.hardware import get_profile, load_profiles, profile_dirs
    from bench.config.precision import get_precision
    from bench.predict.architecture import architecture
    from bench.predict.capacity import capacity

    entry = resolve_model(args.model, args.model_path, args.allow_download)
    precisions = args.precision or list(DEFAULT_PRECISIONS)
    for p in precisions:
        get_precision(p)
    batches = args.batch or list(DEFAULT_BATCHES)
    bad = [b for b in batches if b < 1]
    if bad:
        raise BadInputError(f"--batch must be at least 1, got {bad[0]}")
    if args.new_tokens < 0:
        raise BadInputError(f"--new-tokens must not be negative, got {args.new_tokens}")
    card = get_profile(args.gpu or DEFAULT_CARD, load_profiles(profile_dirs(args.profiles)))
    if card.kind != "cuda":
        raise BadInputError(f"{card.name} is not a GPU profile; bench fit predicts for CUDA cards")
    context = args.context or min(2048, architecture(entry.model).max_positions)
    contexts, batch_rows = capacity(entry.model, precisions, batches, args.new_tokens, context, card, cache=args.cache)
    if args.json:
        payload = {
            "label": "predicted",
            "gpu": card.name,
            "usable_bytes": card.usable_memory_bytes,
            "usable_source": card.usable_source,
            "largest_context": [c.to_dict() for c in contexts],
            "largest_batch": [b.to_dict() for b in batch_rows],
        }
        write_json_output(payload, args.json)
    else:
        from bench.report.capacity import render_capacity

        for line in render_capacity(card.name, card.usable_memory_bytes, contexts, batch_rows):
            print(line)
        import textwrap

        print(textwrap.fill(f"usable memory: {card.usable_source}", width=80))
    if args.plot:
        from bench.report.capacity import plot_capacity

        print(f"plot: {plot_capacity(card.name, contexts, args.plot, batch_rows)}")
    return 0
