"""Imported by the CPU workers' forkserver in place of bitsandbytes itself: the same import, made quietly and
offline (:func:`bench.measure.bnb_runtime.import_bitsandbytes`), so no worker prints the hub-kernel lookup."""

from bench.measure.bnb_runtime import import_bitsandbytes

import_bitsandbytes()
