"""LLM benchmarking and hardware-profiling harness: tokens/s, latency and peak memory per case."""

__version__ = "0.1.0"
