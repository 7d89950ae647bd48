"""The lanesync release, as lanes report it in hello and status messages.

Read from the installed distribution's metadata, so pyproject.toml's [project] version is the
one place it is written (the Debian package takes it from there too).

The `Version:` line is read straight from the first `lanesync-*.dist-info/METADATA` on
sys.path, where importlib.metadata would find it first too; importlib.metadata itself (its
email-header parser, zipfile, csv: about 1.5 MB of a lane agent's 40 MB, issue 17.2) is
imported only when there is no such directory (an egg-info, a zip).
"""

from __future__ import annotations

import os
import sys

_NAME = "lanesync"


def _from_dist_info(name: str) -> str | None:
    prefix = f"{name}-"
    for entry in sys.path:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:
            continue
        for dirname in names:
            if not (dirname.startswith(prefix) and dirname.endswith(".dist-info")):
                continue
            try:
                with open(os.path.join(entry or ".", dirname, "METADATA"), encoding="utf-8") as f:
                    for line in f:
                        if line.startswith("Version:"):
                            return line.partition(":")[2].strip()
                        if not line.strip():
                            break  # the headers end at the first blank line
            except OSError:
                continue
    return None


def _version(name: str) -> str:
    found = _from_dist_info(name)
    if found is not None:
        return found
    from importlib.metadata import version  # noqa: PLC0415 - only when the fast path fails

    return version(name)


VERSION = _version(_NAME)
