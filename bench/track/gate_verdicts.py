"""The regression gate's findings: per metric, per case and for the whole comparison, JSON-ready.

:func:`bench.track.compare.compare_records` makes them; ``bench compare`` and the Markdown
summary show them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bench.track.settings import METRICS, CompareSettings, Metric

# Metric verdicts.
REGRESSION = "regression"
IMPROVEMENT = "improvement"
UNCHANGED = "unchanged"
NOT_SIGNIFICANT = "not significant"
INSUFFICIENT = "insufficient samples"
NOT_MEASURED = "not measured"

# Case statuses.
COMPARED = "compared"
FAILED = "failed"  # measured in the baseline, oom/error/timeout now: a regression
FIXED = "fixed"  # failed in the baseline, measured now
BOTH_FAILED = "not measured"
SKIPPED = "skipped"  # skipped on one side: reported, not judged
ONLY_BASELINE = "only in baseline"
ONLY_CURRENT = "only in current"
NOT_COMPARABLE = "not comparable"


def _finite(value: Any) -> Any:
    """None for a float that is not finite (JSON has no NaN or infinity), else the value."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class MetricComparison:
    """One metric of one case: medians, relative change, test result and verdict."""

    metric: str
    baseline: float
    current: float
    change: float  # current / baseline - 1
    verdict: str
    threshold: float  # relative (speed) or absolute bytes (memory)
    n_baseline: int = 0
    n_current: int = 0
    p_value: float | None = None
    ci_low: float | None = None  # bounds of current / baseline
    ci_high: float | None = None
    detail: str = ""
    test: str = ""  # the rule that decided: "Mann-Whitney U on 10+10 repetitions", "run medians of 4 baseline runs"
    baseline_runs: int = 1

    @property
    def info(self) -> Metric:
        """The metric's definition."""
        return METRICS[self.metric]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (non-finite numbers become None)."""
        out = {
            k: _finite(getattr(self, k))
            for k in (
                "metric",
                "baseline",
                "current",
                "change",
                "verdict",
                "threshold",
                "n_baseline",
                "n_current",
                "p_value",
                "ci_low",
                "ci_high",
                "detail",
                "test",
                "baseline_runs",
            )
        }
        out.update(label=self.info.label, unit=self.info.unit, higher_is_better=self.info.higher_is_better)
        return out


@dataclass(frozen=True)
class CaseComparison:
    """One case: how it matched, its metric comparisons and notes (version changes, flags, why not compared)."""

    key: str
    device_name: str
    label: str
    status: str
    metrics: tuple[MetricComparison, ...] = ()
    notes: tuple[str, ...] = ()
    baseline_device_name: str | None = None

    @property
    def verdict(self) -> str:
        """The case's worst finding: regression, improvement, insufficient samples, not significant or unchanged."""
        if self.status == FAILED:
            return REGRESSION
        if self.status == FIXED:
            return IMPROVEMENT
        if self.status != COMPARED:
            return self.status
        found = {m.verdict for m in self.metrics}
        for verdict in (REGRESSION, IMPROVEMENT, INSUFFICIENT, NOT_SIGNIFICANT, UNCHANGED):
            if verdict in found:
                return verdict
        return NOT_MEASURED

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return {
            "key": self.key,
            "device_name": self.device_name,
            "baseline_device_name": self.baseline_device_name,
            "label": self.label,
            "status": self.status,
            "verdict": self.verdict,
            "notes": list(self.notes),
            "metrics": [m.to_dict() for m in self.metrics],
        }


@dataclass(frozen=True)
class Comparison:
    """The whole comparison: every case, run-level warnings and the settings used."""

    cases: tuple[CaseComparison, ...]
    settings: CompareSettings = field(default_factory=CompareSettings)
    warnings: tuple[str, ...] = ()

    @property
    def regressions(self) -> list[CaseComparison]:
        """Cases that fail the gate."""
        return [c for c in self.cases if c.verdict == REGRESSION]

    @property
    def inconclusive(self) -> list[CaseComparison]:
        """Cases with a change beyond the threshold that the test could not decide (too few repetitions)."""
        return [c for c in self.cases if c.verdict == INSUFFICIENT]

    @property
    def matched(self) -> list[CaseComparison]:
        """Cases found in both runs on the same GPU (judged or not)."""
        return [c for c in self.cases if c.status in (COMPARED, FAILED, FIXED, BOTH_FAILED, SKIPPED)]

    @property
    def exit_status(self) -> int:
        """1 on a regression; 2 when nothing could be compared (no case in common on the same GPU); 3 when a
        change beyond the threshold could not be tested (inconclusive), unless the settings allow that; else 0.

        A gate that cannot decide must not look like a pass, so "inconclusive" has its own status.
        """
        if self.regressions:
            return 1
        if not self.matched:
            return 2
        if self.inconclusive and not self.settings.allow_inconclusive:
            return 3
        return 0

    def counts(self) -> dict[str, int]:
        """How many cases got each verdict (or unmatched status)."""
        out: dict[str, int] = {}
        for case in self.cases:
            out[case.verdict] = out.get(case.verdict, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON: settings, summary counts, warnings and every case."""
        return {
            "exit_status": self.exit_status,
            "summary": self.counts(),
            "inconclusive": len(self.inconclusive),
            "settings": self.settings.to_dict(),
            "warnings": list(self.warnings),
            "cases": [c.to_dict() for c in self.cases],
        }
