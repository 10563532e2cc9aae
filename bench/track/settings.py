"""What the regression gate compares and how strictly: the metrics, their good direction, the thresholds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.errors import BadInputError
from bench.units import MiB


@dataclass(frozen=True)
class Metric:
    """A compared quantity: its name in records, how it reads, its canonical unit and its good direction."""

    name: str
    label: str
    unit: str  # "tokens/s" | "s" | "bytes"
    higher_is_better: bool
    scenario: str = ""  # "generate" | "encode" | "" (every scenario)


SPEED_METRICS = (
    Metric("decode_tokens_per_s", "decode tokens/s", "tokens/s", True, "generate"),
    Metric("prefill_tokens_per_s", "prefill tokens/s", "tokens/s", True, "generate"),
    Metric("ttft_s", "TTFT", "s", False, "generate"),
    Metric("e2e_s", "E2E latency", "s", False, "generate"),
    Metric("latency_s", "encode latency", "s", False, "encode"),
)
MEMORY_METRIC = Metric("peak_memory_bytes", "peak memory", "bytes", False)
METRICS = {m.name: m for m in (*SPEED_METRICS, MEMORY_METRIC)}

# The peak that is judged, in order of preference; the first field both records carry is used.
MEMORY_FIELDS = ("nvml_process_peak_bytes", "peak_reserved_bytes", "host_peak_rss_bytes")


@dataclass(frozen=True)
class CompareSettings:
    """Thresholds of the gate. Relative values are fractions (0.05 = 5%)."""

    threshold: float = 0.05
    metric_thresholds: tuple[tuple[str, float], ...] = ()
    alpha: float = 0.01
    memory_tolerance: float = 0.01
    memory_tolerance_bytes: int = 32 * MiB
    require_same_versions: bool = False
    bootstrap_resamples: int = 2000
    seed: int = 0
    # A baseline of this many runs (or more) of a case is judged by the spread of its run medians, fewer by
    # the Mann-Whitney U test on the pooled repetitions.
    min_baseline_runs: int = 3
    allow_inconclusive: bool = False  # exit 0, not 3, when changes beyond the threshold could not be tested

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise BadInputError(f"threshold {self.threshold!r} must be a fraction between 0 and 1, e.g. 0.05 for 5%")
        for name, value in self.metric_thresholds:
            if name not in METRICS or name == MEMORY_METRIC.name:
                speed = ", ".join(m.name for m in SPEED_METRICS)
                raise BadInputError(f"no speed metric named {name!r} for a threshold; choose one of: {speed}")
            if not 0 < value < 1:
                raise BadInputError(f"threshold {value!r} for {name} must be a fraction between 0 and 1")
        if not 0 < self.alpha < 0.5:
            raise BadInputError(f"alpha {self.alpha!r} must lie between 0 and 0.5 (0.01 is the default)")
        if not 0 <= self.memory_tolerance < 1:
            raise BadInputError(f"memory tolerance {self.memory_tolerance!r} must be a fraction between 0 and 1")
        if self.memory_tolerance_bytes < 0:
            raise BadInputError(f"memory tolerance {self.memory_tolerance_bytes!r} bytes must not be negative")
        if self.bootstrap_resamples < 0:
            raise BadInputError("bootstrap resamples must not be negative (0 turns the interval off)")
        if isinstance(self.min_baseline_runs, bool) or not isinstance(self.min_baseline_runs, int):
            raise BadInputError(f"minimum baseline runs {self.min_baseline_runs!r} must be a whole number, e.g. 3")
        if self.min_baseline_runs < 2:
            raise BadInputError(
                f"minimum baseline runs {self.min_baseline_runs} must be at least 2: the spread of one run's "
                "median is unknown (one run is judged by the Mann-Whitney U test on its repetitions)"
            )

    def threshold_for(self, metric: str) -> float:
        """The relative threshold of one speed metric (its own if set, else the default)."""
        return dict(self.metric_thresholds).get(metric, self.threshold)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return {
            "threshold": self.threshold,
            "metric_thresholds": dict(self.metric_thresholds),
            "alpha": self.alpha,
            "memory_tolerance": self.memory_tolerance,
            "memory_tolerance_bytes": self.memory_tolerance_bytes,
            "require_same_versions": self.require_same_versions,
            "min_baseline_runs": self.min_baseline_runs,
            "allow_inconclusive": self.allow_inconclusive,
            "test": "one-sided Mann-Whitney U of current vs baseline x (1 +/- threshold) on raw samples",
            "test_with_several_baseline_runs": (
                f"with {self.min_baseline_runs} or more baseline runs: the current median outside the range of "
                "the baseline run medians widened by the threshold"
            ),
            "interval": f"percentile bootstrap of the ratio of medians, {1 - self.alpha:.0%}",
        }
