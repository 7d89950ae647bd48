"""What every benchmark command does around its run: a work directory and the JSON answer."""

from __future__ import annotations

import json
import tempfile
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
