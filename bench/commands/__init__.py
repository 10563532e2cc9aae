"""Subcommands of the ``bench`` command line, one module each."""
