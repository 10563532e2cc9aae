"""What a run is asked to do: case specs, timing policy, suites, models, precisions, GPU profiles, shards."""
