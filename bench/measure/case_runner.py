"""Measure cases inside a worker process: load the model once per group, time each case, build its record."""

from __future__ import annotations

import os
import platform
import socket
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from bench.config import machine
from bench.config.models import DECODER, resolve_source
from bench.config.precision import get_precision
from bench.config.spec import CaseSpec, TimingPolicy
from bench.measure.engines import engine_failure, engine_for, skip_reason
from bench.measure.llamacpp_binding import BindingMissing
from bench.measure.load_phase import LoadMeter
from bench.measure.loader import LoadedModel, load_model, random_checkpoint
from bench.measure.memory import (
    CudaPeaks,
    cache_layout,
    host_peak_rss_bytes,
    host_rss_bytes,
    reset_host_peak,
)
from bench.measure.oom import is_oom, poisons_cuda_context
from bench.measure.quantization import weights_bytes
from bench.measure.roofline import decode_roofline, device_bandwidth
from bench.measure.scenarios import Clock, device_sync, make_prompt, run_encode, run_generate
from bench.measure.timing import case_telemetry, compile_call, run_phases
from bench.measure.user_view import measure_user_view
from bench.results.load_phase import LoadPhase, UserView
from bench.results.metrics import coefficient_of_variation
from bench.results.record import Memory, Record, Roofline, Samples
from bench.units import utc_now


def resolve_device(requested: str) -> str:
    """A concrete torch device string: 'cuda' becomes the current CUDA device ('cuda:N').

    Does not initialise CUDA: before initialisation torch's current device is the first visible one.
    """
    if requested == "cuda":
        import torch

        return f"cuda:{torch.cuda.current_device() if torch.cuda.is_initialized() else 0}"
    return requested


def device_name(device: str) -> str:
    """A human name for a device: the GPU's name, or the CPU model."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(device)
    return cpu_name()


def cpu_name() -> str:
    """The CPU model name (Linux /proc/cpuinfo), or the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def process_device_bytes(sampler: Any) -> tuple[int | None, str | None]:
    """What the driver reports this process holds on the sampler's device now (NVML), and how it was read."""
    sampler.start()
    tel = sampler.stop()
    return tel.nvml_process_peak_bytes, tel.nvml_method


class PreparedCase:
    """One case ready to time: the prompt built, each ``run_once`` a timed call whose samples are kept."""

    def __init__(self, loaded: LoadedModel, spec: CaseSpec, device: str, clock: Clock = time.perf_counter):
        limit = loaded.source.max_positions
        if spec.total_tokens > limit:
            raise ValueError(f"{spec.total_tokens} tokens exceed the model's maximum of {limit}")
        is_decoder = loaded.source.family == DECODER
        expected = "generate" if is_decoder else "encode"
        if spec.scenario != expected:
            kind = "decoder" if is_decoder else "encoder"
            raise ValueError(f"model {spec.model} is an {kind}: use scenario {expected!r}, not {spec.scenario!r}")
        self.loaded, self.spec, self.device, self.clock = loaded, spec, device, clock
        self.sync = device_sync(device)
        self.prompt = make_prompt(
            loaded.model.config.vocab_size, spec.batch_size, spec.context_tokens, spec.seed, device
        )
        if not is_decoder:
            import torch

            self.prompt["token_type_ids"] = torch.zeros_like(self.prompt["input_ids"])
        self.engine = engine_for(loaded.model, spec.engine, device, decoder=is_decoder)
        self.engine.prepare(spec)
        self.last_cache: Any = None
        self.compile_s: float | None = None
        self._raw: dict[str, list[Any]] = {"ttft_s": [], "e2e_s": [], "itl_s": [], "latency_s": []}

    def run_once(self) -> float:
        """One timed call; returns its E2E (generate) or forward latency (encode) in seconds."""
        if self.spec.scenario == "generate":
            self.last_cache = None  # the previous repetition's KV cache must not inflate this one's peak
            sample = run_generate(
                self.loaded.model,
                self.prompt,
                self.spec.new_tokens,
                self.clock,
                self.sync,
                self.engine.generate_kwargs(),
                self.engine.before_call,
            )
            self._raw["ttft_s"].append(sample.ttft_s)
            self._raw["e2e_s"].append(sample.e2e_s)
            self._raw["itl_s"].append(sample.itl_s)
            self.last_cache = sample.cache
            return sample.e2e_s
        self.engine.before_call()
        latency = run_encode(self.loaded.model, self.prompt, self.clock, self.sync)
        self._raw["latency_s"].append(latency)
        return latency

    def clear(self) -> None:
        """Forget the samples so far (after warm-up)."""
        for values in self._raw.values():
            values.clear()
        self.last_cache = None

    def samples(self) -> Samples:
        """The samples kept so far."""
        return Samples(
            ttft_s=tuple(self._raw["ttft_s"]),
            e2e_s=tuple(self._raw["e2e_s"]),
            itl_s=tuple(tuple(g) for g in self._raw["itl_s"]),
            latency_s=tuple(self._raw["latency_s"]),
        )

    def extra_info(self) -> dict[str, Any]:
        """Metrics of the samples so far and memory in bytes (JSON-safe), for pytest-benchmark's extra_info."""
        record = Record(spec=self.spec, status="ok", samples=self.samples())
        info: dict[str, Any] = {k: v for k, v in record.metrics.items() if v == v and abs(v) != float("inf")}
        layout = cache_layout(self.last_cache)
        info.update(
            weights_bytes=weights_bytes(self.loaded.model),
            kv_cache_bytes=layout.kv_bytes if layout else None,
            kv_cache_tokens=layout.tokens if layout else None,
            cache_policy=layout.policy if layout else None,
            host_peak_rss_bytes=host_peak_rss_bytes(),
            precision=self.spec.precision,
            random_weights=self.loaded.source.random_weights,
            engine=self.spec.engine,
            compile_s=self.compile_s,
        )
        if self.device.startswith("cuda"):
            import torch

            info["peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated(self.device))
            info["peak_reserved_bytes"] = int(torch.cuda.max_memory_reserved(self.device))
        return info

    def close(self) -> None:
        """Drop the samples and the model reference."""
        self.clear()
        self.loaded = None  # type: ignore[assignment]


def prepare_case(spec: CaseSpec, device: str | None = None) -> PreparedCase:
    """Load a case's model in this process and return it ready to time (for pytest-benchmark and notebooks)."""
    runner = CaseRunner()
    resolved = resolve_device(device or spec.device)
    loaded = runner.model_for(spec, resolved)
    case = PreparedCase(loaded, spec, resolved, runner.clock)
    case.compile_s = compile_call(case)  # the compiled engine compiles here, never in a timed round
    return case


@dataclass
class GroupState:
    """What a worker keeps between the cases of one group: the loaded model and the CUDA baseline."""

    group: tuple[str, ...] | None = None
    loaded: LoadedModel | None = None
    baseline_bytes: int | None = None
    host_baseline_rss_bytes: int | None = None
    load_s: float = 0.0
    load: LoadPhase = field(default_factory=LoadPhase)  # the group's load, measured (every case's record)
    user_view: UserView | None = None  # load + one generation, no clean-up: the group's first record only


class CaseRunner:
    """Runs cases in this process, keeping one model loaded per group."""

    def __init__(
        self, clock: Clock = time.perf_counter, memory_cap_bytes: int | None = None, telemetry_period_s: float = 0.02
    ):
        self.clock = clock
        self.memory_cap_bytes = memory_cap_bytes
        self.telemetry_period_s = telemetry_period_s
        self._used_before: dict[str, int | None] = {}
        self.state = GroupState()
        self._device_total: dict[str, int] = {}
        self._context_bytes: dict[str, int | None] = {}
        self.last_timeline: tuple[dict[str, Any], ...] = ()
        # True after a case failed with a CUDA error other than OOM: this process's CUDA context may be
        # unusable, so its runner must replace it before the next case (bench.measure.runner).
        self.context_poisoned = False

    def sampler(self, device: str, background: bool = True) -> Any:
        """A telemetry sampler for ``device`` (NVML on a GPU, psutil on a CPU); ``background=False``: no thread,
        samples only where the caller takes them."""
        from bench.measure.telemetry.sampler import TelemetrySampler

        return TelemetrySampler(
            device,
            period_s=self.telemetry_period_s,
            baseline_used_bytes=self._used_before.get(device),
            background=background,
        )

    def prepared_case(self, spec: CaseSpec, device: str) -> PreparedCase:
        """A case of the loaded group ready to time outside :meth:`run` (the overhead benchmark's bare calls)."""
        return PreparedCase(self.model_for(spec, device), spec, device, self.clock)

    def _prepare_device(self, device: str) -> None:
        """Create the CUDA context once, measure it, and apply the simulated card size (``memory_cap_bytes``)."""
        if not device.startswith("cuda") or device in self._device_total:
            return
        from bench.measure.telemetry.nvml import device_used_bytes

        index = int(device.split(":", 1)[1])
        # what the card holds before this process touches it: the fallback when NVML cannot see our PID
        self._used_before[device] = device_used_bytes(device, identity={"index": index})
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available in this process; use --device cpu")
        torch.empty(1, device=device)  # create the CUDA context before measuring it
        total = int(torch.cuda.get_device_properties(device).total_memory)
        self._device_total[device] = total
        context = process_device_bytes(self.sampler(device))[0]
        self._context_bytes[device] = context
        if self.memory_cap_bytes:
            # a simulated card of memory_cap_bytes: the CUDA context takes its share, the allocator the rest
            allocator_cap = self.memory_cap_bytes - (context or 0)
            if allocator_cap <= 0:
                raise RuntimeError(
                    f"the CUDA context ({context} bytes) does not fit the simulated card of {self.memory_cap_bytes}"
                )
            torch.cuda.set_per_process_memory_fraction(min(1.0, allocator_cap / total), device)

    def model_for(self, spec: CaseSpec, device: str, user_view: bool = False) -> LoadedModel:
        """The loaded model for a spec's group, loading it (and dropping the previous one) when needed.

        The load is measured (:class:`LoadMeter`); ``user_view``: right after a new load, one generation at
        ``spec``'s shape, before any clean-up (:func:`measure_user_view`), for the group's first record.
        """
        group = (*spec.group[:3], device, *spec.group[4:], spec.attn_implementation)
        if self.state.group == group and self.state.loaded is not None:
            return self.state.loaded
        self.release(device)
        self._prepare_device(device)
        baseline = process_device_bytes(self.sampler(device))[0] if device.startswith("cuda") else None
        host_baseline = host_rss_bytes()
        start = time.perf_counter()
        source = resolve_source(spec.model, spec.weights, spec.cache)
        precision = get_precision(spec.precision)
        if precision.quantized and source.checkpoint is None:
            random_checkpoint(source, spec.seed)  # the harness's cached weights: written before the load is measured
        with LoadMeter(device, self.sampler, self.clock) as meter:
            loaded = load_model(source, precision, device, spec.seed, spec.attn_implementation)
            load = meter.loaded(spec.key)
            load_s = time.perf_counter() - start  # as before the user view: source, weights and the load
            view = None
            if user_view:
                view = measure_user_view(
                    meter, lambda: PreparedCase(loaded, spec, device, self.clock).run_once(), spec.engine
                )
        self.state = GroupState(group, loaded, baseline, host_baseline, load_s, load, view)
        return loaded

    def _load_fields(self) -> dict[str, Any]:
        """The record's ``load`` (the group's) and ``user_view`` (given to the group's first record only)."""
        view, self.state.user_view = self.state.user_view, None
        return {"load": self.state.load, "user_view": view or UserView()}

    def release(self, device: str | None = None) -> None:
        """Drop the loaded model and give its memory (and the allocator's cached blocks) back."""
        device = self.state.loaded.device if self.state.loaded is not None else device
        self.state = GroupState()
        _free(device or "cpu")

    def run(self, spec: CaseSpec, policy: TimingPolicy, run_id: str = "") -> Record:
        """Measure one case; failures become records (oom / error), never exceptions."""
        started = utc_now()
        self.last_timeline = ()
        t0 = time.perf_counter()
        device = spec.device
        base = {"spec": spec, "policy": policy, "run_id": run_id, "started_utc": started, "host": socket.gethostname()}
        base["machine"] = machine.fingerprint().digest  # which CPU, ISA and library versions measured it
        try:
            device = resolve_device(spec.device)
            if spec.engine == "llama.cpp":  # a GGUF file in llama.cpp: no torch model is loaded
                from bench.measure.llamacpp import measure_llamacpp

                record = measure_llamacpp(self, spec, policy, device, base)
            else:
                record = self._measure(self.model_for(spec, device, user_view=True), spec, policy, device, base)
        except Exception as exc:
            missing = isinstance(exc, BindingMissing)  # llama.cpp's binding is not installed (or lacks the GPU)
            status = "oom" if is_oom(exc, device) else "skipped" if engine_failure(exc) or missing else "error"
            self.context_poisoned = status == "error" and device.startswith("cuda") and poisons_cuda_context(exc)
            message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            if status == "error":
                message += "\n" + "".join(traceback.format_exception(exc)[-3:])
            elif status == "skipped" and not missing:  # the compiled engine cannot run this case: one line saying why
                message = skip_reason(exc, spec.precision, device)
            elif missing:
                message = str(exc)
            del exc  # its traceback holds the case's tensors
            memory = Memory(
                baseline_bytes=self.state.baseline_bytes,
                device_total_bytes=self._device_total.get(device),
                memory_cap_bytes=self.memory_cap_bytes,
            )
            # a llama.cpp case loads its own model: a failed one has no load, never the last torch group's
            loads = {} if spec.engine == "llama.cpp" else self._load_fields()
            record = Record(
                status=status,
                error=message[:4000],
                device=device,
                device_name=_safe_device_name(device),
                memory=memory,
                **loads,
                **base,
            )
        if record.status == "oom":
            self.release(device)  # now that nothing refers to the failed case's tensors
        return record.replace(wall_s=time.perf_counter() - t0)

    def _measure(
        self, loaded: LoadedModel, spec: CaseSpec, policy: TimingPolicy, device: str, base: dict[str, Any]
    ) -> Record:
        case = PreparedCase(loaded, spec, device, self.clock)
        _free(device)  # earlier cases' cached blocks must not count as this case's peak
        compile_s = compile_call(case)  # the compiled engine's first call: timed apart, never a sample
        for _ in range(policy.warmup_runs):
            case.run_once()
        case.clear()
        name = device_name(device)
        bandwidth = device_bandwidth(device, name) if spec.scenario == "generate" and spec.new_tokens > 1 else None

        reset_host_peak()
        with CudaPeaks(device) as peaks:
            phases = run_phases(case, policy, self.sampler, self.clock)
        host_peak = host_peak_rss_bytes()
        telemetry = case_telemetry(phases, spec.scenario, spec.batch_size, spec.new_tokens)
        self.last_timeline = telemetry.timeline
        layout = cache_layout(case.last_cache)  # what the cache really held (None for encoders)
        stored = weights_bytes(loaded.model)
        roofline = Roofline()
        if bandwidth is not None:
            window = layout.window_tokens if layout else None
            roofline = decode_roofline(loaded.model, stored, case.last_cache, window, spec.batch_size, bandwidth)
        case.last_cache = None

        total_bytes = self._device_total.get(device)
        memory = Memory(
            weights_bytes=stored,
            peak_allocated_bytes=peaks.peak_allocated_bytes,
            peak_reserved_bytes=peaks.peak_reserved_bytes,
            nvml_process_peak_bytes=telemetry.nvml_process_peak_bytes,
            nvml_method=telemetry.nvml_method,
            baseline_bytes=self.state.baseline_bytes,
            kv_cache_bytes=layout.kv_bytes if layout else None,
            kv_cache_storage_bytes=layout.storage_bytes if layout else None,
            kv_cache_tokens=layout.tokens if layout else None,
            cache_layer_classes=layout.layer_classes if layout else (),
            cache_window_tokens=layout.window_tokens if layout else None,
            cache_policy=layout.policy if layout else None,
            host_peak_rss_bytes=host_peak,
            host_baseline_rss_bytes=self.state.host_baseline_rss_bytes,
            device_total_bytes=total_bytes,
            memory_cap_bytes=self.memory_cap_bytes,
        )
        sample_obj = phases.samples
        flags = list(_quality_flags(spec, loaded, sample_obj, policy))
        flags.extend(telemetry.flags)
        if phases.recompiled:
            flags.append("recompiled_while_timed")  # a compilation ran inside a timed repetition
        info = dict(loaded.info, load_s=round(self.state.load_s, 3), pid=os.getpid())
        return Record(
            status="ok",
            device=device,
            device_name=name,
            samples=sample_obj,
            memory=memory,
            model_info=info,
            quantization=dict(loaded.quantization, **_bnb_observations(loaded)),
            telemetry=telemetry.summary,
            flags=tuple(dict.fromkeys(flags)),
            compile_s=compile_s,
            engine_info=case.engine.info(),
            roofline=roofline,
            **self._load_fields(),
            **base,
        )


def _bnb_observations(loaded: LoadedModel) -> dict[str, Any]:
    """bitsandbytes' 4-bit path and quantization state as the timed runs left them (quantized models only)."""
    if not loaded.precision.quantized:
        return {}
    from bench.measure.bnb_runtime import observations

    return observations(loaded.model, loaded.device)


def _free(device: str) -> None:
    """Collect garbage and, on a GPU, return the allocator's cached blocks to the driver."""
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _safe_device_name(device: str) -> str:
    try:
        return device_name(device)
    except Exception:
        return device


def _quality_flags(spec: CaseSpec, loaded: LoadedModel, samples: Samples, policy: TimingPolicy) -> list[str]:
    flags = []
    if loaded.source.random_weights:
        flags.append("random_weights")
        if get_precision(spec.precision).quant == "int8":
            flags.append("int8_outliers_unrepresentative")
    if loaded.source.window_removed:
        flags.append("full_cache")  # --cache full: the checkpoint's sliding window was removed
    values = samples.e2e_s or samples.latency_s
    if coefficient_of_variation(values) > policy.noisy_cv:
        flags.append("noisy")
    return flags
