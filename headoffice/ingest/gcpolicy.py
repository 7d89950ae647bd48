"""The cyclic garbage collector's pace for a head-office process (`lanesync bench drain`).

Ingest allocates millions of small acyclic containers (every decoded document: its maps and
lists; every entry, row and planned write) that live from the decoder thread to the commit.
With CPython's default thresholds (700, 10, 10) the collector ran a young pass every 700 of
them and, as they survived into the old generation, full passes over everything head office
holds: measured in-process on 30,000 sales, about a third of ingest's CPU. Nothing ingest keeps
is cyclic, so collecting rarely frees the same memory later, never less of it: young passes
every GEN0 allocations, and what was loaded at start (modules, configuration) is frozen out
of every pass (gc.freeze). Cycles (exceptions with tracebacks, asyncio's) are still
collected, only less often.
"""

from __future__ import annotations

import gc

GEN0 = 50_000
GEN1 = 20
GEN2 = 100


def pace_for_ingest() -> None:
    """Call once, after start-up: freeze what is loaded, then collect at ingest's pace."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0, GEN1, GEN2)
