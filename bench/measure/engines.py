"""Engines: how a case's model runs while it is timed (``CaseSpec.engine``).

``eager``: transformers as it comes: ``generate`` with its default dynamic KV cache, every forward
dispatched op by op from Python.

``compiled``: a static KV cache (``transformers.StaticCache``, sized prompt + new tokens, allocated once
per case and reset before every call, so its tensors keep their addresses) and the decode step's forward
compiled with ``torch.compile(fullgraph=True)``: mode ``reduce-overhead`` on CUDA (CUDA graphs), the
default mode on a CPU (inductor's C++ kernels). The prompt's forward (prefill) stays eager, as in
transformers' own compiled generation (``compile_config``), whose shapes change with every prompt length.
transformers' own route is not used because it silently falls back to eager (a logged warning) where it
judges a model not compileable, bitsandbytes models included; here a model either runs its decode steps
through the compiled forward or the case fails with the reason. ``fullgraph=True`` makes a graph break an
error instead of a silent eager fallback, and so does hitting dynamo's recompile limit
(``fail_on_recompile_limit_hit``). An encoder's forward is compiled whole (every call), with no cache.

Compiling happens on the first call of a case's shape; the worker times that call separately
(``Record.compile_s``) and never inside the timed samples, and :meth:`CompiledEngine.graphs` lets it
notice a recompilation during the timed repetitions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from bench.config.spec import DEFAULT_ENGINE, ENGINES

_ATTR = "_bench_engine"


class EngineError(RuntimeError):
    """The compiled engine could not run a case as compiled (the message is one line, naming why)."""


def compile_mode(device: str) -> str:
    """torch.compile mode of the compiled engine: CUDA graphs on a GPU, inductor's default on a CPU."""
    return "reduce-overhead" if device.startswith("cuda") else "default"


def _seq_len(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    ids = kwargs.get("input_ids")
    if ids is None and args:
        ids = args[0]
    if ids is None:
        embeds = kwargs.get("inputs_embeds")
        return int(embeds.shape[1]) if embeds is not None else None
    return int(ids.shape[-1])


class EagerEngine:
    """transformers' own generate and forward, unchanged."""

    name = "eager"

    def prepare(self, spec: Any) -> None:
        """Nothing to prepare per case."""

    def before_call(self) -> None:
        """Nothing to reset before a call."""

    def generate_kwargs(self) -> dict[str, Any]:
        """No extra generate() arguments."""
        return {}

    def graphs(self) -> int:
        """Compiled graphs so far: none."""
        return 0

    def verify(self) -> None:
        """Nothing to verify: eager is what it says."""

    def info(self) -> dict[str, Any]:
        """What the record says about the engine."""
        return {"engine": self.name}


class CompiledEngine:
    """Static KV cache plus a ``torch.compile``'d decode forward (see the module docstring).

    ``compile_fn`` and ``cache_factory`` are injectable for tests (defaults: ``torch.compile`` and
    ``transformers.StaticCache``). The engine wraps ``model.forward`` once; :func:`engine_for` keeps one
    engine per model.
    """

    name = "compiled"

    def __init__(
        self,
        model: Any,
        device: str,
        *,
        decoder: bool,
        mode: str | None = None,
        fullgraph: bool = True,
        compile_fn: Callable[..., Any] | None = None,
        cache_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.model = model
        self.device = device
        self.decoder = decoder
        self.mode = mode or compile_mode(device)
        self.fullgraph = fullgraph
        self._cache_factory = cache_factory
        self.cache: Any = None
        self.max_cache_len: int | None = None
        self.compiled_calls = 0
        self.eager_calls = 0
        if compile_fn is None:
            import torch

            compile_fn = torch.compile
            _fail_on_recompile_limit(torch)
        eager = model.forward
        compiled = compile_fn(eager, mode=self.mode, fullgraph=fullgraph)

        @functools.wraps(eager)  # generate() reads the forward's signature to choose its arguments
        def forward(*args: Any, **kwargs: Any) -> Any:
            # a decoder compiles its one-token decode step; its prompt (prefill) shape changes per case
            if self.decoder and _seq_len(args, kwargs) != 1:
                self.eager_calls += 1
                return eager(*args, **kwargs)
            self.compiled_calls += 1
            return compiled(*args, **kwargs)

        model.forward = forward

    def prepare(self, spec: Any) -> None:
        """Allocate the case's static cache (decoders): batch x (prompt + new tokens) positions."""
        self.compiled_calls = self.eager_calls = 0
        if not self.decoder:
            return
        factory = self._cache_factory
        if factory is None:
            from transformers import StaticCache

            factory = StaticCache
        self.max_cache_len = int(spec.context_tokens + spec.new_tokens)
        config = self.model.config
        if hasattr(config, "get_text_config"):
            config = config.get_text_config(decoder=True)
        self.cache = factory(config=config, max_cache_len=self.max_cache_len)

    def before_call(self) -> None:
        """Empty the static cache in place (outside the timed call), so every repetition starts alike."""
        if self.cache is not None and hasattr(self.cache, "reset"):
            self.cache.reset()

    def generate_kwargs(self) -> dict[str, Any]:
        """generate() arguments: the case's static cache, and transformers' own auto-compilation off (this
        engine compiles; two compilers of one forward would nest)."""
        if not self.decoder:
            return {}
        return {"cache": self.cache, "disable_compile": True}

    def graphs(self) -> int:
        """Graphs dynamo has compiled in this process so far (a change during timing is a recompilation)."""
        try:
            from torch._dynamo.utils import counters
        except ImportError:  # pragma: no cover - torch without dynamo
            return 0
        return int(counters["stats"]["unique_graphs"])

    def verify(self) -> None:
        """Raise :class:`EngineError` unless the calls so far went through the compiled forward."""
        if self.compiled_calls == 0:
            what = "decode step" if self.decoder else "forward"
            raise EngineError(
                f"engine compiled: no {what} ran through the compiled forward ({self.eager_calls} eager call(s)); "
                "refusing to report eager speed under the compiled label"
            )

    def info(self) -> dict[str, Any]:
        """What the record says about the engine: mode, fullgraph, cache, compiled and eager calls."""
        out: dict[str, Any] = {
            "engine": self.name,
            "compile_mode": self.mode,
            "fullgraph": self.fullgraph,
            "compiled_calls": self.compiled_calls,
            "eager_calls": self.eager_calls,
        }
        if self.decoder:
            out.update(cache="StaticCache", max_cache_len=self.max_cache_len, compiled="decode step")
        else:
            out.update(compiled="forward")
        return out


def _fail_on_recompile_limit(torch: Any) -> None:
    """Make dynamo raise instead of running eagerly when a function hits its recompile limit."""
    config = torch._dynamo.config
    if hasattr(config, "fail_on_recompile_limit_hit"):
        config.fail_on_recompile_limit_hit = True


def engine_for(model: Any, name: str, device: str, *, decoder: bool, **options: Any) -> EagerEngine | CompiledEngine:
    """The engine ``name`` for ``model``, made once per model (the compiled one wraps its forward).

    A model already wrapped for another engine is refused: a worker loads one model per engine.
    """
    if name not in ENGINES:
        raise ValueError(f"engine {name!r} is not one of {', '.join(ENGINES)}")
    existing = getattr(model, _ATTR, None)
    if existing is not None:
        if existing.name != name:
            raise ValueError(f"this model already runs engine {existing.name!r}; load it again for {name!r}")
        return existing
    engine: EagerEngine | CompiledEngine
    if name == DEFAULT_ENGINE:
        engine = EagerEngine()
    else:
        engine = CompiledEngine(model, device, decoder=decoder, **options)
    setattr(model, _ATTR, engine)
    return engine


def engine_failure(exc: BaseException) -> bool:
    """True for a failure of the compiled engine itself (:class:`EngineError`, or torch.compile's dynamo and
    inductor errors: a graph break under ``fullgraph``, an unsupported operator, the recompile limit)."""
    if isinstance(exc, EngineError):
        return True
    modules = ("torch._dynamo", "torch._inductor")
    return any(cls.__module__.startswith(modules) for cls in type(exc).__mro__ if cls is not object)


def skip_reason(exc: BaseException, precision: str, device: str) -> str:
    """The one-line reason a record of a case the compiled engine cannot run gives."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, EngineError):
        return text
    return f"engine compiled cannot run {precision} on {device}: torch.compile failed ({type(exc).__name__}: {text})"
