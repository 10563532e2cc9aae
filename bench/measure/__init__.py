"""Running cases: runner, worker processes, loading, scenarios, memory meters, environment, telemetry, profiling."""
