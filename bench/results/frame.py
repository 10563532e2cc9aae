"""Records as a flat pandas DataFrame for reports, claims and comparisons (read-only view)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from bench.results import metrics
from bench.results.record import Record

if TYPE_CHECKING:
    import pandas as pd

SPEC_COLUMNS = (
    "model",
    "precision",
    "scenario",
    "batch_size",
    "context_tokens",
    "new_tokens",
    "weights",
    "attn_implementation",
    "suite",
    "engine",
)


def records_to_frame(records: Iterable[Record]) -> pd.DataFrame:
    """One row per record: spec fields, status, device, derived metrics, memory bytes, the load (``load_*``)
    and user view (``user_view_*``) with the fit figures derived from them, telemetry summary, flags."""
    import pandas as pd  # imported here: only the paths that draw or tabulate need pandas

    rows = []
    for r in records:
        row: dict[str, object] = {c: getattr(r.spec, c) for c in SPEC_COLUMNS}
        row.update(
            key=r.spec.key,
            status=r.status,
            error=r.error,
            device=r.device,
            device_name=r.device_name,
            host=r.host,
            run_id=r.run_id,
            flags=",".join(r.flags),
            wall_s=r.wall_s,
        )
        row.update(r.metrics)
        row.update(r.memory.to_dict())
        row.update(r.roofline.to_dict(), compile_s=r.compile_s)
        row.update({k if k.startswith("load") else f"load_{k}": v for k, v in r.load.to_dict().items()})
        row.update({f"user_view_{k}": v for k, v in r.user_view.to_dict().items()})
        row.update(
            measured_fit_bytes=metrics.measured_fit_bytes(r),
            host_live_peak_rss_bytes=metrics.host_live_peak_rss_bytes(r),
            measured_nvidia_smi_bytes=metrics.measured_nvidia_smi_bytes(r),
        )
        row.update({f"telemetry_{k}": v for k, v in r.telemetry.items() if not isinstance(v, (dict, list))})
        row.update({f"quality_{k}": v for k, v in r.quality.items() if not isinstance(v, (dict, list))})
        rows.append(row)
    return pd.DataFrame(rows)
