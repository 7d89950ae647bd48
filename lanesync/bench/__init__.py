"""`lanesync bench ...`: benchmarks that print JSON and measure a baseline in the same run.

These machines are shared and noisy, so every benchmark reports a ratio against a baseline it
runs itself, alongside absolute figures.
"""

from __future__ import annotations

import argparse

from lanesync.bench import (
    api,
    catalog,
    drain,
    extract,
    fleet,
    flood,
    lookup,
    start,
    suite,
    transit,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="benchmarks (print JSON)")
    bsub = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    api.register(bsub)
    catalog.register(bsub)
    drain.register(bsub)
    extract.register(bsub)
    fleet.register(bsub)
    lookup.register(bsub)
    flood.register(bsub)
    start.register(bsub)
    transit.register(bsub)
    suite.register(bsub)
