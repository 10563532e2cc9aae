"""The quality pass of ``bench run --quality``: score each precision of a model against its reference precision.

It runs before the timed cases, in a process of its own that ends before they start, so nothing of it (a
second model loaded, the CUDA context) is in any timed measurement. One job per model x weights x precision x
device: the first job of a model computes the reference outputs unless the cache already holds them
(:mod:`bench.measure.quality_reference`); each job loads its precision as the timed cases do
(:func:`bench.measure.loader.load_model`, quantization verified) and scores it
(:mod:`bench.measure.quality`). The result is a ``quality`` block that :meth:`QualityResults.annotate` puts
into every record of that group as the record is written.

The reference precision is the checkpoint's own dtype (``config.dtype``: float16 -> fp16, bfloat16 -> bf16,
float32 or none stated -> fp32), run on the same device as the cases: a CPU runs float16 as float16 (no
upcast), so "KL against fp16" means the same on a CPU and a GPU, up to each device's arithmetic.

Random weights make every quality number meaningless: a job for them is refused
(:func:`refuse_random_weights`), unless the caller asks explicitly (``allow_random_weights``, tests only);
then the block says ``random_weights: true``.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.config.eval_text import DEFAULT_EVAL_TEXT, load_eval_text
from bench.config.models import checkpoint_files, resolve_source
from bench.config.precision import get_precision
from bench.config.spec import CaseSpec
from bench.errors import BadInputError
from bench.measure.quality import (
    DEFAULT_WINDOW_TOKENS,
    FORWARD,
    Scored,
    load_tokenizer,
    score_against_reference,
    tokenize,
    write_reference,
)
from bench.measure.quality_reference import ReferenceStore, reference_key, weights_identity
from bench.results.record import Record

DTYPE_PRECISIONS = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}
RANDOM_WEIGHTS_LABEL = "random weights: these quality numbers mean nothing about any real model"


@dataclass(frozen=True)
class QualityJob:
    """One precision of one model to score, and how (text, window, token cap)."""

    model: str
    weights: str
    precision: str
    device: str
    cache: str = "config"
    attn_implementation: str = "sdpa"
    seed: int = 0
    eval_text: str = DEFAULT_EVAL_TEXT
    window_tokens: int = DEFAULT_WINDOW_TOKENS
    max_tokens: int | None = None
    allow_random_weights: bool = False
    tokenizer_path: str | None = None  # random weights only: registered models ship no tokenizer

    @property
    def group(self) -> tuple[str, ...]:
        """The records this job's block belongs to: model, weights, precision, device, cache, attention."""
        return (self.model, self.weights, self.precision, self.device, self.cache, self.attn_implementation)


def group_of(spec: CaseSpec) -> tuple[str, ...]:
    """:attr:`QualityJob.group` of a case spec (every engine of a precision shares its quality block)."""
    return (spec.model, spec.weights, spec.precision, spec.device, spec.cache, spec.attn_implementation)


def refuse_random_weights(cases: Sequence[CaseSpec]) -> None:
    """Refuse ``--quality`` for random weights: one line naming the model and the way out (exit status 2)."""
    for spec in cases:
        if spec.weights == "random":
            raise BadInputError(
                f"--quality: model {spec.model} has random weights, which make KL, top-1 and perplexity "
                "meaningless; pass --model-path DIR (a trained checkpoint with its tokenizer) or a hub id"
            )


def jobs_for(cases: Sequence[CaseSpec], **options: Any) -> list[QualityJob]:
    """One job per distinct group of ``cases``, in first-seen order (``options``: QualityJob's other fields)."""
    jobs: dict[tuple[str, ...], QualityJob] = {}
    for s in cases:
        job = QualityJob(s.model, s.weights, s.precision, s.device, s.cache, s.attn_implementation, s.seed, **options)
        jobs.setdefault(job.group, job)
    return list(jobs.values())


def reference_precision(config: Any) -> tuple[str, str]:
    """The reference precision of a checkpoint and its dtype name: its config's dtype (fp32 if it states none)."""
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = str(dtype).replace("torch.", "") if dtype else "float32"
    if name not in DTYPE_PRECISIONS:
        raise BadInputError(
            f"checkpoint dtype {name!r} has no reference precision; expected one of {list(DTYPE_PRECISIONS)}"
        )
    return DTYPE_PRECISIONS[name], name


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def measure_job(job: QualityJob) -> Scored:
    """Score one job in this process: the reference first if the cache lacks it, then the job's precision.

    Returns the record's ``quality`` block (as ``Scored.summary``) and, for decoders, every position's values.
    """
    from bench.measure.case_runner import resolve_device
    from bench.measure.loader import load_model

    t_start = time.perf_counter()
    source = resolve_source(job.model, job.weights, job.cache)
    if source.random_weights and not job.allow_random_weights:
        refuse_random_weights([CaseSpec(job.model, job.precision, "generate", 1, 1, weights=job.weights)])
    if source.random_weights and not job.tokenizer_path:
        raise BadInputError(f"model {job.model} has random weights and no tokenizer: pass tokenizer_path")
    tokenizer = load_tokenizer(source.checkpoint or job.tokenizer_path)  # type: ignore[arg-type]
    text = load_eval_text(job.eval_text)
    window = min(job.window_tokens, source.max_positions)
    tokens = tokenize(tokenizer, text.text, window, source.family, job.max_tokens)
    ref_name, ref_dtype = reference_precision(source.config_factory())
    device = resolve_device(job.device)
    if source.checkpoint is not None:
        identity = weights_identity(checkpoint_files(source.checkpoint), source.checkpoint / "config.json")
    else:
        identity = f"random:{job.model}:seed{job.seed}"
    key_parts = {
        "weights": identity,
        "reference_dtype": ref_dtype,
        "device_type": device.split(":")[0],
        "tokens": tokens.digest,
        "cache": job.cache,
        "attn": job.attn_implementation,
    }
    store = ReferenceStore(reference_key(key_parts))
    cached = store.complete
    loaded = None
    reference_wall_s = None
    if not cached:
        t0 = time.perf_counter()
        ref = load_model(source, get_precision(ref_name), device, job.seed, job.attn_implementation)
        write_reference(
            ref.model, tokens, store, device, {**key_parts, "model": job.model, "reference_precision": ref_name}
        )
        reference_wall_s = time.perf_counter() - t0
        if job.precision == ref_name:
            loaded = ref
        else:
            del ref
            _free(device)
    t0 = time.perf_counter()
    if loaded is None:
        loaded = load_model(source, get_precision(job.precision), device, job.seed, job.attn_implementation)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scored = score_against_reference(loaded.model, tokens, store, device)
    score_s = time.perf_counter() - t0
    block: dict[str, Any] = {
        "status": "ok",
        **scored.summary,
        "reference_precision": ref_name,
        "reference_dtype": ref_dtype,
        "reference_note": f"the checkpoint's dtype ({ref_dtype}) run as {ref_dtype} on {device}, no upcast",
        "reference_key": store.key,
        "reference_cached": cached,
        "reference_wall_s": reference_wall_s,
        "eval_text": text.name,
        "eval_text_source": text.source,
        "eval_text_sha256": text.sha256,
        "eval_text_chars": text.chars,
        "text_tokens": len(tokens.body),
        "window_tokens": tokens.window_tokens,
        "window_prefix_tokens": len(tokens.prefix),
        "windows": len(tokens.pieces()),
        "forward": FORWARD,
        "device": device,
        "quantized_linear_layers": loaded.quantization.get("quantized_linear_layers"),
        "weights_identity": identity,
        "random_weights": source.random_weights,
        "load_s": load_s,
        "score_s": score_s,
        "wall_s": time.perf_counter() - t_start,
    }
    if source.random_weights:
        block["label"] = RANDOM_WEIGHTS_LABEL
    del loaded
    _free(device)
    return Scored(block, scored.per_position)


def run_job(job: QualityJob) -> dict[str, Any]:
    """:func:`measure_job`'s block, or a block with ``status: error`` and the error's first line."""
    t0 = time.perf_counter()
    try:
        return measure_job(job).summary
    except Exception as exc:  # one precision failing must not cost the others or the timed cases
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return {"status": "error", "error": f"{type(exc).__name__}: {first}"[:2000], "wall_s": time.perf_counter() - t0}


@dataclass
class QualityResults:
    """The quality blocks of a run by group, and how long the pass took."""

    blocks: dict[tuple[str, ...], dict[str, Any]]
    wall_s: float = 0.0

    def annotate(self, record: Record) -> Record:
        """``record`` with its group's quality block (unchanged where its group was not scored)."""
        block = self.blocks.get(group_of(record.spec))
        return record if block is None else dataclasses.replace(record, quality=dict(block))


def _reference_first(jobs: Sequence[QualityJob]) -> list[QualityJob]:
    """Jobs in order, but a model's reference-precision job before its other precisions (it writes the reference)."""
    refs: dict[tuple[str, ...], str] = {}
    for job in jobs:
        key = (job.model, job.weights)
        if key not in refs:
            try:
                refs[key] = reference_precision(resolve_source(job.model, job.weights, job.cache).config_factory())[0]
            except BadInputError:
                refs[key] = ""
    return sorted(jobs, key=lambda j: (j.precision != refs[(j.model, j.weights)], jobs.index(j)))


def run_quality_pass(
    jobs: Sequence[QualityJob],
    *,
    in_process: bool = False,
    on_block: Callable[[QualityJob, dict[str, Any]], None] | None = None,
) -> QualityResults:
    """Run every job (the reference precision first), in one worker process unless ``in_process``.

    The worker is started with the runner's context (a forkserver with torch imported) and ends before
    this returns, giving back all the memory it used.
    """
    t0 = time.perf_counter()
    ordered = _reference_first(jobs)
    blocks: dict[tuple[str, ...], dict[str, Any]] = {}
    if in_process:
        for job in ordered:
            blocks[job.group] = run_job(job)
            if on_block is not None:
                on_block(job, blocks[job.group])
    else:
        from concurrent.futures import ProcessPoolExecutor

        from bench.config.precision import bitsandbytes_available
        from bench.measure.worker_process import mp_context, quiet_libraries

        # the same preload the runner asks for (the context is made once per process, by whoever asks first)
        cpu_quantized = all(j.device == "cpu" for j in jobs) and any(get_precision(j.precision).quantized for j in jobs)
        context = mp_context(preload_quantization=bitsandbytes_available() and cpu_quantized)
        with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=quiet_libraries) as pool:
            for job in ordered:
                blocks[job.group] = pool.submit(run_job, job).result()
                if on_block is not None:
                    on_block(job, blocks[job.group])
    return QualityResults(blocks, time.perf_counter() - t0)
