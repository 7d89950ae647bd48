"""How the technician's commands on both sides end: one exit-code rule and one error line.

`lanesync status`, `doctor`, `journal export` on a lane and `lanesync import` at head office
print plain text for people (or `--json` for scripts) and exit with `Exit`: scripts and
monitoring tell "found a problem" from "could not even look" the same way on both sides.
"""

from __future__ import annotations

import sys
from enum import IntEnum


class Exit(IntEnum):
    OK = 0  # healthy, or done
    PROBLEM = 1  # the command ran and found a problem (or refused what it was given)
    CANNOT_RUN = 2  # the command could not run (config, files, arguments)


def fail(command: str, exc: BaseException, code: Exit) -> int:
    """Say on stderr why `lanesync <command>` stopped, and return its exit code."""
    print(f"lanesync {command}: {exc}", file=sys.stderr)
    return int(code)
