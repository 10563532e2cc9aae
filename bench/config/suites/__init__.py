"""Suites shipped with the package (TOML)."""
