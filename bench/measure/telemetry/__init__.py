"""Hardware telemetry: NVML access, the sampler, its per-case summary, the pre-run GPU check."""
