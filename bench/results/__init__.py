"""Records, the metric formulas, the run folder and merging shards."""
