"""Regression tracking: the gate, baselines, exports."""
