"""A progress bar with ETA over the cases of a run (rich), quiet when disabled or not on a terminal."""

from __future__ import annotations

from typing import Any

from bench.config.spec import CaseSpec
from bench.results.record import Record


class CaseProgress:
    """Context manager: one bar over all cases, a line per finished case with its status."""

    def __init__(self, total: int, enabled: bool = True):
        self.total = total
        self.enabled = enabled and total > 0
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> CaseProgress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("cases", total=self.total)
        return self

    def start_case(self, spec: CaseSpec) -> None:
        """Show which case is running."""
        if self._progress is not None:
            self._progress.update(self._task, description=spec.label)

    def end_case(self, record: Record) -> None:
        """Advance the bar and print the case's outcome."""
        if self._progress is None:
            return
        style = {"ok": "green", "oom": "yellow", "timeout": "yellow"}.get(record.status, "red")
        headline = _headline(record)
        from rich.markup import escape  # an error may hold brackets, e.g. "pip install 'llm-bench[llamacpp]'"

        self._progress.console.print(f"[{style}]{record.status:>7}[/] {escape(record.spec.label)}  {escape(headline)}")
        self._progress.advance(self._task)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


def _headline(record: Record) -> str:
    if not record.ok:
        return (record.error or "").splitlines()[0] if record.error else ""  # whole: it says the way out
    m = record.metrics
    if record.spec.scenario == "generate":
        parts = [f"TTFT {m.get('ttft_s', 0) * 1e3:.1f} ms"]
        if "decode_tokens_per_s" in m:
            parts.append(f"decode {m['decode_tokens_per_s']:.1f} tok/s")
    else:
        parts = [f"{m.get('latency_s', 0) * 1e3:.2f} ms", f"{m.get('sequences_per_s', 0):.1f} seq/s"]
    peak = record.memory.nvml_process_peak_bytes or record.memory.host_peak_rss_bytes
    if peak:
        label = "VRAM" if record.memory.nvml_process_peak_bytes else "host RSS"
        parts.append(f"{label} {peak / 2**30:.2f} GiB")
    return ", ".join(parts)
