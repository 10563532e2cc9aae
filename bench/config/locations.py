"""Where the harness keeps files between runs: the cache directory (``$BENCH_CACHE_DIR``).

It sits in ``config`` so that every layer may ask for it: the loader caches random checkpoints there
and the predictor its architecture summaries, neither importing the other.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The harness's cache: ``$BENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/llm-bench`` (``~/.cache/llm-bench``)."""
    root = os.environ.get("BENCH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "llm-bench"
    )
    return Path(root)
