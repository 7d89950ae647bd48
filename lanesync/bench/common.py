"""What every benchmark command does around its run: a work directory and the JSON answer."""

from __future__ import annotations

import contextlib
import json
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any


def in_workdir(
    workdir: str | None, name: str, run: Callable[[Path], dict[str, Any]]
) -> dict[str, Any]:
    """Run in `--workdir` (kept for a look afterwards) or a temporary directory (removed)."""
    if workdir:
        return run(Path(workdir))
    with tempfile.TemporaryDirectory(prefix=f"lanesync-bench-{name}-") as d:
        return run(Path(d))


def print_result(result: dict[str, Any], compact: bool) -> None:
    """One JSON line for scripts (`--json`), indented for a person."""
    print(json.dumps(result, indent=None if compact else 2))


def scrape(port: int) -> dict[str, float]:
    """Head office's /metrics on 127.0.0.1:`port` as {sample name with labels: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out
