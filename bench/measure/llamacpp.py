"""The ``llama.cpp`` engine: a GGUF file run by llama.cpp (llama-cpp-python), timed token by token.

One case: the GGUF file (the random checkpoint written and quantized, :mod:`bench.measure.gguf_file`, or the user's
``--model-path file.gguf``) is loaded with a context of ``n_ctx`` = prompt + new tokens (llama.cpp pads the KV
cache to 256 cells), KV cache type ``spec.kv_cache_type`` (``auto`` = f16), flash attention on (llama.cpp's own
default, ``auto``, turns it on where the backend has it; a quantized V cache needs it), every layer offloaded on a
GPU, and ``spec.threads`` CPU threads (``--threads``; default every core of the process's CPU set; llama-cpp-python's
own, 0.3.36, is half of cpu_count() for decode and all of it for the prompt). A timed call: the prompt's tokens
(the same random ids as the other engines, :func:`bench.measure.scenarios.make_prompt`) are evaluated in one
``llama_decode`` per batch of 512, the first token is the argmax of the last logits (greedy; EOS never stops it),
then N - 1 single-token decode steps, the clock read as each token's logits reach the host
(``llama_get_logits_ith`` waits for the backend).

llama.cpp's own timings (``llama_perf_context``: prompt eval and eval milliseconds, reset before every call) are kept
per repetition beside the harness's, and the record's metrics compare them
(:func:`bench.results.metrics.engine_timing_metrics`).

Memory: the weights are the GGUF file's tensor bytes (its header); llama.cpp's buffers (model, KV, compute, output,
per device) come from its log. On a CPU the figure is the host peak RSS (VmHWM): llama.cpp maps the file
(``use_mmap``, its default), so the weight pages the process has touched count in RSS as file-backed pages (shared
with the page cache, dropped by the kernel under pressure and read again, not swapped); ``RssFile`` and
``RssAnon`` at the end of the case are recorded apart so a reader can see which part is the mapped file. On a GPU
with every layer offloaded: the NVML process peak, as for the other engines.

Binding calls used (llama-cpp-python 0.3.36): ``Llama(model_path, n_ctx, n_batch, n_threads, n_threads_batch,
n_gpu_layers, flash_attn, type_k, type_v, use_mmap, verbose)``, ``Llama.reset`` + ``Llama.eval`` (removes the KV
cells past ``n_tokens``, then ``llama_decode`` per batch), ``Llama.n_vocab``, ``llama_get_logits_ith``,
``llama_n_ctx``, ``llama_model_size``, ``llama_perf_context`` / ``llama_perf_context_reset``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config.models import DECODER, is_gguf_file, resolve_source
from bench.config.precision import get_precision
from bench.config.spec import CaseSpec, TimingPolicy
from bench.errors import BadInputError
from bench.measure.gguf_file import GgufHeader, random_gguf, read_header
from bench.measure.llamacpp_binding import (
    buffer_sizes,
    buffers_of_kind,
    captured_log,
    require_binding,
    require_gpu_offload,
)
from bench.measure.load_phase import LoadMeter, SamplerFactory
from bench.measure.memory import host_peak_rss_bytes, host_rss_bytes, reset_host_peak
from bench.measure.scenarios import Clock, make_prompt
from bench.results.metrics import coefficient_of_variation, token_times_to_sample
from bench.results.record import Memory, Record, Samples

ENGINE = "llama.cpp"
KV_GGML_TYPES = {"auto": "F16", "f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0"}
N_BATCH = 512  # llama-cpp-python's default logical batch: a longer prompt is decoded in batches of this many


def gguf_path(spec: CaseSpec, seed: int = 0) -> tuple[Path, GgufHeader]:
    """The GGUF file a case runs and its header; a user's file must be of the precision asked for (or ``gguf``)."""
    require_binding()
    precision = get_precision(spec.precision)
    source = resolve_source(spec.model, spec.weights)
    if source.checkpoint is not None and is_gguf_file(source.checkpoint):
        header = read_header(source.checkpoint)
        wanted = f"MOSTLY_{precision.gguf}" if precision.gguf else None
        if wanted and header.file_type not in (wanted, None):
            raise BadInputError(
                f"{source.checkpoint} is {header.file_type}, not {precision.gguf}: pass --precision gguf to run the "
                "file's own types"
            )
        return source.checkpoint, header
    if source.checkpoint is not None:
        raise BadInputError(
            f"{source.checkpoint} is a transformers checkpoint: the llama.cpp engine runs a .gguf file "
            "(convert it with llama.cpp's convert_hf_to_gguf.py) or random weights"
        )
    if not precision.gguf:
        raise BadInputError("precision 'gguf' means a GGUF file's own types: pass the file with --model-path")
    from bench.measure.loader import random_checkpoint

    path = random_gguf(random_checkpoint(source, seed), spec.model, precision.gguf)
    return path, read_header(path)


def default_threads() -> int:
    """The engine's default thread count: every core of this process's CPU set (all cores where unknown)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def rss_parts() -> dict[str, int]:
    """This process's resident set now, split as the kernel counts it: RssAnon, RssFile (mapped files), RssShmem."""
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in ("RssAnon", "RssFile", "RssShmem"):
                out[f"{key[3:].lower()}_rss_bytes"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def _no_sampler(device: str, background: bool = True) -> Any:
    """A GPU load needs the runner's NVML sampler: refuse to report a GPU load without its NVML reading."""
    raise RuntimeError(f"a llama.cpp load on {device} needs the runner's NVML sampler (make_sampler) to be measured")


@dataclass
class LlamaCppEngine:
    """The engine's description for the record; no compilation, so no graphs."""

    params: dict[str, Any] = field(default_factory=dict)
    name: str = ENGINE

    def graphs(self) -> int:
        """Compiled graphs: none (llama.cpp builds its compute graph itself)."""
        return 0

    def info(self) -> dict[str, Any]:
        """What the record says about the engine."""
        return {"engine": self.name, **self.params}


class LlamaCppCase:
    """One case loaded in llama.cpp and ready to time: ``run_once`` is one timed generation of exactly N tokens."""

    def __init__(
        self,
        spec: CaseSpec,
        device: str,
        clock: Clock = time.perf_counter,
        llama_factory: Any = None,
        make_sampler: SamplerFactory | None = None,
    ):
        if spec.batch_size != 1:
            raise BadInputError(f"engine llama.cpp runs batch 1 here, not {spec.batch_size}; use --batch 1")
        self.spec, self.device, self.clock = spec, device, clock
        require_gpu_offload(device)
        self.path, self.header = gguf_path(spec, spec.seed)
        import llama_cpp

        self._lib = llama_cpp
        gpu = device.startswith("cuda")
        threads = spec.threads or default_threads()  # the record's engine_info.n_threads: the count used
        kv = KV_GGML_TYPES[spec.kv_cache_type]
        kv_type = getattr(llama_cpp, f"GGML_TYPE_{kv}")
        params = dict(
            n_ctx=spec.context_tokens + spec.new_tokens,
            n_batch=N_BATCH,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=-1 if gpu else 0,
            main_gpu=int(device.split(":", 1)[1]) if gpu and ":" in device else 0,
            flash_attn=True,
            type_k=kv_type,
            type_v=kv_type,
            use_mmap=True,
            verbose=False,  # the binding prints nothing; llama.cpp's log is captured all the same (buffer sizes)
        )
        factory = llama_factory or llama_cpp.Llama
        # The load (Llama(...): file mapped, tensors placed, context and KV cache allocated) measured as the other
        # engines' loads are: wall time, host RSS before / peak / after and, on a GPU, NVML's process reading
        # through the runner's sampler. ggml allocates its CUDA buffers itself, not through torch's caching
        # allocator, so the allocator fields stay None (torch_allocator=False).
        meter = LoadMeter(device, make_sampler or _no_sampler, clock, torch_allocator=False)
        with meter, captured_log() as log:
            self.llm = factory(str(self.path), **params)
            self.load = meter.loaded(spec.key)
        self.load_s = self.load.load_s
        self.log_lines = log.lines()
        self.buffers = buffer_sizes(self.log_lines)
        if gpu and not any(k.startswith(("CUDA", "ROCm", "Vulkan", "Metal")) for k in self.buffers):
            raise RuntimeError(
                f"llama.cpp reported no GPU buffer after loading with every layer offloaded (buffers: {self.buffers});"
                " refusing to report a CPU run as a GPU one"
            )
        self.n_vocab = int(self.llm.n_vocab())
        self.n_ctx = int(llama_cpp.llama_n_ctx(self.llm.ctx))
        prompt = make_prompt(self.n_vocab, 1, spec.context_tokens, spec.seed, "cpu")["input_ids"][0]
        self.prompt = [int(t) for t in prompt.tolist()]
        self.engine = LlamaCppEngine(
            {
                "llama_cpp_python": llama_cpp.__version__,
                "gguf_file": str(self.path),
                "gguf_file_type": self.header.file_type,
                "n_ctx": self.n_ctx,
                "n_batch": N_BATCH,
                "n_threads": threads,
                "n_threads_source": "--threads" if spec.threads else "default: every core of the process's CPU set",
                "n_gpu_layers": params["n_gpu_layers"],
                "flash_attn": True,
                "kv_cache_ggml_type": kv,
                "use_mmap": True,
                "load_s": round(self.load_s, 4),
                "model_size_bytes": int(llama_cpp.llama_model_size(self.llm.model)),
                "buffers_bytes": self.buffers,
                "buffers_source": "llama.cpp's log (MiB, two decimals)",
            }
        )
        self._raw: dict[str, list[Any]] = {k: [] for k in ("ttft_s", "e2e_s", "itl_s", "prompt_eval_s", "eval_s")}
        self._counts: list[tuple[int, int]] = []

    def _argmax(self) -> int:
        import numpy as np

        logits = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.n_vocab,))
        return int(logits.argmax())

    def run_once(self) -> float:
        """One timed generation of exactly N tokens (greedy, EOS ignored); returns its E2E in seconds."""
        lib, llm, n = self._lib, self.llm, self.spec.new_tokens
        llm.reset()  # n_tokens = 0: the next eval removes every KV cell, so each call prefills the whole prompt
        lib.llama_perf_context_reset(llm.ctx)
        times: list[float] = []
        start = self.clock()
        llm.eval(self.prompt)
        token = self._argmax()
        times.append(self.clock())
        for _ in range(n - 1):
            llm.eval([token])
            token = self._argmax()
            times.append(self.clock())
        perf = lib.llama_perf_context(llm.ctx)
        if len(times) != n or int(perf.n_eval) != n - 1:
            raise RuntimeError(f"llama.cpp decoded {perf.n_eval} single tokens, not {n - 1}, for {n} new tokens")
        ttft, e2e, gaps = token_times_to_sample(start, times)
        self._raw["ttft_s"].append(ttft)
        self._raw["e2e_s"].append(e2e)
        self._raw["itl_s"].append(gaps)
        self._raw["prompt_eval_s"].append(float(perf.t_p_eval_ms) / 1e3)
        self._raw["eval_s"].append(float(perf.t_eval_ms) / 1e3)
        self._counts.append((int(perf.n_p_eval), int(perf.n_eval)))
        return e2e

    def clear(self) -> None:
        """Forget the samples so far (after warm-up)."""
        for values in self._raw.values():
            values.clear()
        self._counts.clear()

    def samples(self) -> Samples:
        """The harness's samples so far."""
        return Samples(
            ttft_s=tuple(self._raw["ttft_s"]),
            e2e_s=tuple(self._raw["e2e_s"]),
            itl_s=tuple(tuple(g) for g in self._raw["itl_s"]),
        )

    def llama_timings(self, repetitions: int) -> dict[str, list[Any]]:
        """llama.cpp's own timings of the first ``repetitions`` calls since :meth:`clear` (the timed ones)."""
        return {
            "prompt_eval_s": self._raw["prompt_eval_s"][:repetitions],
            "eval_s": self._raw["eval_s"][:repetitions],
            "n_prompt_eval": [c[0] for c in self._counts[:repetitions]],
            "n_eval": [c[1] for c in self._counts[:repetitions]],
        }

    def close(self) -> None:
        """Free llama.cpp's model and context."""
        llm, self.llm = self.llm, None
        if llm is not None and hasattr(llm, "close"):
            llm.close()


def measure_llamacpp(runner: Any, spec: CaseSpec, policy: TimingPolicy, device: str, base: dict[str, Any]) -> Record:
    """Measure one llama.cpp case (the worker's counterpart of its transformers path) and build its record."""
    from bench.measure.case_runner import device_name
    from bench.measure.timing import case_telemetry, run_phases

    if spec.scenario != "generate":
        raise BadInputError(f"engine llama.cpp runs decoders (scenario generate), not {spec.scenario!r}")
    host_baseline = host_rss_bytes()
    case = LlamaCppCase(spec, device, runner.clock, make_sampler=runner.sampler)
    try:
        for _ in range(policy.warmup_runs):
            case.run_once()
        case.clear()
        reset_host_peak()
        phases = run_phases(case, policy, runner.sampler, runner.clock)
        host_peak = host_peak_rss_bytes()
        rss = rss_parts()
        telemetry = case_telemetry(phases, spec.scenario, spec.batch_size, spec.new_tokens)
        runner.last_timeline = telemetry.timeline
        samples = phases.samples
        info = case.engine.info()
        info.update(rss, llama_timings=case.llama_timings(len(samples.e2e_s)))
        header = case.header
        memory = Memory(
            weights_bytes=header.tensor_bytes,
            nvml_process_peak_bytes=telemetry.nvml_process_peak_bytes,
            nvml_method=telemetry.nvml_method,
            kv_cache_bytes=buffers_of_kind(case.buffers, "KV"),
            kv_cache_tokens=case.n_ctx,
            cache_policy="full",  # llama.cpp runs Phi-3 without its window ("Phi SWA is currently disabled")
            cache_layer_classes=(f"llama.cpp KV {info['kv_cache_ggml_type']}",),
            host_peak_rss_bytes=host_peak,
            host_baseline_rss_bytes=host_baseline,
        )
        flags = ["random_weights"] if spec.weights == "random" else []
        flags.extend(telemetry.flags)
        if coefficient_of_variation(samples.e2e_s) > policy.noisy_cv:
            flags.append("noisy")
        model_info = {
            "architecture": header.architecture,
            "family": DECODER,
            "parameters": header.parameters,
            "num_layers": header.block_count,
            "hidden_size": header.embedding_length,
            "max_positions": header.context_length,
            "random_weights": spec.weights == "random",
            "runtime_dtype": f"GGUF {header.file_type}",
            "pid": os.getpid(),
        }
        quantization = {
            "method": "gguf",
            "file_type": header.file_type,
            "bytes_by_type": header.bytes_by_type(),
            "tensors": len(header.tensors),
        }
        return Record(
            status="ok",
            device=device,
            device_name=device_name(device),
            samples=samples,
            memory=memory,
            model_info=model_info,
            quantization=quantization,
            telemetry=telemetry.summary,
            flags=tuple(dict.fromkeys(flags)),
            engine_info=info,
            load=case.load,  # each llama.cpp case loads its own Llama (n_ctx is the case's): a load per case
            **base,
        )
    finally:
        case.close()
