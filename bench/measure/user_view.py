"""The user view: right after the load, one generation at the case's shape, with no clean-up in between.

A user's script loads a model and generates; nobody calls ``empty_cache()``, so the caching allocator's pool
keeps what loading freed (bitsandbytes quantizes each 16-bit weight on the device) and nvidia-smi shows that
pool plus the CUDA context. The worker measures it for the first case of each worker group, on the model it
has just loaded and before it cleans up for the steady-state figures: no second load; the cost is one
untimed generation per group (``UserView.generate_s``). On a GPU an NVML sampler thread runs throughout
(the load's sampler, then this one); torch's allocator peaks are not reset after the load, so they cover
load and generation. On a CPU the host's VmHWM (reset before the load) covers both phases.

A failure here (an out-of-memory in the generation, say) is recorded in ``UserView.error``; it never fails
the case, whose clean measurement follows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.config.spec import DEFAULT_ENGINE
from bench.measure.load_phase import LoadMeter, larger, nvml_reading
from bench.measure.memory import host_peak_rss_bytes, host_rss_bytes
from bench.results.load_phase import UserView


def measure_user_view(meter: LoadMeter, generate: Callable[[], Any], engine: str = DEFAULT_ENGINE) -> UserView:
    """Run ``generate`` (one generation at the case's shape, dropping what it returns) on the just-loaded
    model and read what the process holds over load and generation; call after :meth:`LoadMeter.loaded`.

    ``engine``: the case's engine; only the eager engine runs the view (a compiled engine would compile
    here, and its first call is timed apart by the worker), others get ``skipped``.
    """
    if engine != DEFAULT_ENGINE:
        return UserView(skipped=f"the user view runs the eager engine only, not {engine!r}")
    load = meter.phase
    sampler = meter.make_sampler(meter.device) if meter.cuda else None
    error = None
    generate_s = None
    try:
        if sampler is not None:
            sampler.start()
        t0 = meter.clock()
        generate()
        meter.sync()
        generate_s = meter.clock() - t0
    except Exception as exc:  # recorded, never raised: the case's clean measurement still runs
        text = str(exc).strip()
        error = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:500]
        del exc  # its traceback holds the generation's tensors
    tel = sampler.stop() if sampler is not None else None
    readings: dict[str, Any] = {}
    if meter.cuda:
        cuda = meter.torch_cuda
        after, method = nvml_reading(meter.make_sampler, meter.device)
        readings = {
            "peak_allocated_bytes": int(cuda.max_memory_allocated(meter.device)),
            "reserved_high_water_bytes": int(cuda.max_memory_reserved(meter.device)),
            "reserved_after_bytes": int(cuda.memory_reserved(meter.device)),
            "nvml_process_after_bytes": after,
            "nvml_process_peak_bytes": larger(
                load.load_nvml_process_peak_bytes if load else None,
                tel.nvml_process_peak_bytes if tel else None,
                after,
            ),
            "nvml_method": method or (tel.nvml_method if tel else None),
        }
    return UserView(
        generate_s=generate_s,
        host_peak_rss_bytes=host_peak_rss_bytes(),
        host_rss_after_bytes=host_rss_bytes(),
        error=error,
        **readings,
    )
