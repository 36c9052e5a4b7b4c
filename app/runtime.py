"""Tuning for a long-running process (the server, the projector, a rebuild's workers)."""

from __future__ import annotations

import gc


def settle_heap() -> None:
    """Once the process has loaded its modules: set what it has built so far aside from the
    cyclic garbage collector, and let garbage gather longer between collections.

    Otherwise each full collection walks every module, model and pool object again, and
    young ones run every 700 allocations: 14 % of a rebuild worker's time. Not for tests,
    which build many apps in one process (frozen objects are never collected)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
