"""The garbage collector's settings for carebank's long-running processes and batch jobs.

Ingest and reconciliation allocate hundreds of thousands of short-lived objects a batch (asyncpg
records, the rules' values, wire structs), nearly all freed by reference counting the moment they
are dropped. With CPython's default thresholds (700, 10, 10) the cycle collector still runs a young
collection every 700 allocations and walks the older generations every 7,000 and 70,000: over a
batch of 5,000 visits that was 10 to 14 % of the reconciling process's CPU (decision 115). Most of
a batch's objects live until the batch ends (about 120,000 tracked at its peak: records, structs,
lists), and every collection walks those still alive in the generations it collects: collections
every 10,000 allocations still cost about 6 µs of CPU a reconciled visit, half of it in the middle
generation. Every 100,000 allocations, about one young collection runs a batch (decision 139), and
cycles are still collected within seconds. Whatever exists when a process is ready (modules, routes,
the app) is frozen out of reach, so full collections walk only what the work allocates.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 100_000


def settle() -> None:
    """Call once a process is built and before it starts its work."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
