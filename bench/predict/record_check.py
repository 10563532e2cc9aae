"""The predictor beside every measurement: a record's own prediction, and the library assumptions it rests on.

:func:`attach_prediction` gives a measured record the predicted peak and weights of its own case (on the 4-bit
path the record says bitsandbytes took), lists what the predictor assumes of bitsandbytes and transformers that the
loaded model contradicts, and flags the record ``predictor_drift`` when a gap passes
:data:`bench.results.metrics.PREDICTOR_DRIFT_FRACTION`. The gaps are computed in :mod:`bench.results.metrics`;
the command line applies this to each record before it is written (``RunOptions.annotate``), since measurement
never predicts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from bench.config.hardware import HardwareProfile, Measured, profile_for_device_name
from bench.config.precision import BNB_4BIT_CPU_PACKED, BNB_4BIT_PATHS, Precision, get_precision
from bench.config.spec import DEFAULT_ENGINE
from bench.errors import BadInputError
from bench.predict.architecture import architecture
from bench.predict.bnb_kernels import READ_FROM
from bench.predict.memory import predict_memory
from bench.predict.weights import BLOCKSIZE_4BIT, NESTED_BLOCKSIZE
from bench.results import metrics
from bench.results.record import Prediction, Record

DRIFT_FLAG = "predictor_drift"


def expected_quant_state(precision: Precision, path: str | None) -> dict[str, list[Any]]:
    """The 4-bit quantization state the predictor's byte counts assume (read from bitsandbytes 0.50.2), in the
    form :func:`bench.measure.bnb_runtime.quant_state_facts` reports the loaded model's."""
    packed = path == BNB_4BIT_CPU_PACKED
    if packed:
        absmax = "bfloat16"
    elif precision.double_quant:
        absmax = "uint8"
    else:
        absmax = "float32"
    return {
        "blocksizes": [BLOCKSIZE_4BIT],
        "absmax_dtypes": [absmax],
        "nested_blocksizes": [NESTED_BLOCKSIZE] if precision.double_quant and not packed else [],
        "repacked_for_cpu": [packed],
    }


def assumption_mismatches(record: Record, precision: Precision, quantized_layers: int | None) -> tuple[str, ...]:
    """What the predictor assumed that the record's loaded model contradicts: the 4-bit state (block size, absmax
    dtype, nested block size, repacking) and the number of linear layers bitsandbytes replaced."""
    out = []
    q = record.quantization
    path = q.get("bnb_4bit_kernel_path")
    if path is not None and path not in BNB_4BIT_PATHS:
        out.append(f"bitsandbytes 4-bit path {path!r} is none the predictor models ({', '.join(BNB_4BIT_PATHS)})")
    facts = q.get("quant_state") or {}
    if facts:
        for key, want in expected_quant_state(precision, path).items():
            got = facts.get(key)
            if got is not None and list(got) != want:
                out.append(f"quant_state {key}: the model has {got}, the predictor assumes {want} ({READ_FROM})")
    measured_layers = q.get("quantized_linear_layers")
    if precision.quantized and quantized_layers is not None and measured_layers not in (None, quantized_layers):
        out.append(
            f"bitsandbytes replaced {measured_layers} linear layers, the predictor assumes {quantized_layers} "
            "(transformers' rule of which modules stay unquantized)"
        )
    return tuple(out)


def _profile(record: Record, profiles: Sequence[HardwareProfile]) -> HardwareProfile | None:
    """The device to predict for: the record's GPU profile (None: a generic GPU), or its host as a CPU."""
    q = record.quantization
    if record.device.startswith("cuda"):
        found = profile_for_device_name(record.device_name, profiles) if record.device_name else None
        sms, cc = q.get("cuda_multiprocessor_count"), q.get("cuda_compute_capability")
        if sms is None and cc is None:
            return found
        if found is None:  # the GPU as the record saw it: what bitsandbytes' kernel rule reads
            return HardwareProfile(
                name=record.device_name or "GPU", compute_capability=cc, measured=Measured(multiprocessor_count=sms)
            )
        measured = dataclasses.replace(found.measured or Measured(), multiprocessor_count=sms)
        return dataclasses.replace(found, compute_capability=cc or found.compute_capability, measured=measured)
    capability = q.get("torch_cpu_capability")
    return HardwareProfile(name=record.host or "host", kind="cpu", measured=Measured(cpu_capability=capability))


def prediction_for(record: Record, profiles: Sequence[HardwareProfile] = ()) -> Prediction:
    """The predictor's peak and weights for a measured record's case, in the reading its device measures."""
    spec = record.spec
    if spec.engine != DEFAULT_ENGINE:
        return Prediction(note=f"the predictor models the eager engine, not {spec.engine}")
    try:
        precision = get_precision(spec.precision)
        arch = architecture(spec.model)
    except BadInputError as exc:
        return Prediction(note=f"no prediction: {exc}")
    path = record.quantization.get("bnb_4bit_kernel_path")
    cpu_path = path if path in BNB_4BIT_PATHS and not record.device.startswith("cuda") else None
    try:
        pred = predict_memory(
            spec.model,
            precision,
            spec.context_tokens,
            spec.batch_size,
            spec.new_tokens,
            _profile(record, profiles),
            attn_implementation=spec.attn_implementation,
            cache=spec.cache,
            bnb_4bit_path=cpu_path,
            nvidia_smi=False,  # the record's check compares peaks and weights; no allocator-pool replay
        )
    except BadInputError as exc:
        return Prediction(note=f"no prediction: {exc}")
    quantized_layers = sum(1 for lin in arch.linears if lin.quantized)
    assumptions = assumption_mismatches(record, precision, quantized_layers)
    if record.device.startswith("cuda"):
        peak, reading = pred.weights_bytes + pred.kv_cache_bytes + pred.activation_bytes, metrics.PEAK_READING_ALLOCATOR
    else:
        peak, reading = pred.total_bytes, metrics.PEAK_READING_HOST_RSS
    guessed = tuple(n for n in pred.notes if "assumed" in n)
    return Prediction(
        predicted_peak_bytes=int(peak),
        predicted_weights_bytes=int(pred.weights_bytes),
        peak_reading=reading,
        bnb_4bit_path=path if precision.quant in ("nf4", "fp4") else None,
        assumptions=assumptions + guessed,
    )


def attach_prediction(record: Record, profiles: Sequence[HardwareProfile] = ()) -> Record:
    """The record with its own prediction, flagged ``predictor_drift`` when a gap passes 5% (measured records only)."""
    if not record.ok:
        return record
    with_prediction = record.replace(prediction=prediction_for(record, profiles))
    if metrics.predictor_drifted(with_prediction) and DRIFT_FLAG not in record.flags:
        with_prediction = with_prediction.replace(flags=(*record.flags, DRIFT_FLAG))
    return with_prediction


def prediction_annotator(
    then: Callable[[Record], Record] | None = None, profiles: Sequence[HardwareProfile] | None = None
) -> Callable[[Record], Record]:
    """A ``RunOptions.annotate`` that attaches each record's prediction after ``then`` (another annotator)."""
    if profiles is None:
        from bench.config.hardware import load_profiles

        profiles = load_profiles()
    known = list(profiles)

    def annotate(record: Record) -> Record:
        return attach_prediction(then(record) if then is not None else record, known)

    return annotate
