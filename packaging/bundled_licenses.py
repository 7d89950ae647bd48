"""Appends the bundled Python distributions and their declared licenses to debian/copyright.

Run with the package's own venv interpreter at build time, so the list is what the package
holds. Each distribution's license files stay in its *.dist-info directory under /opt/lanesync.
"""

from __future__ import annotations

import sys
from importlib import metadata

SITE = "opt/lanesync/lib/python3.11/site-packages"


def declared_license(dist: metadata.Distribution) -> str:
    meta = dist.metadata
    expression = meta.get("License-Expression")
    if expression:
        return str(expression)
    text = (meta.get("License") or "").strip()
    if text and "\n" not in text and len(text) <= 60:
        return text
    classifiers = [
        c.rsplit(" :: ", 1)[-1]
        for c in meta.get_all("Classifier") or []
        if c.startswith("License :: ") and c.count(" :: ") >= 2
    ]
    return " / ".join(classifiers) or "see its license files"


def main(path: str) -> int:
    dists = sorted(metadata.distributions(), key=lambda d: str(d.metadata["Name"]).lower())
    lines = [
        "",
        f"Files: {SITE}/*",
        "Copyright: the authors of each distribution listed below",
        "License: bundled-python-distributions",
        " Each distribution is under its own license, given in its metadata and in the license",
        f" files of its /{SITE}/<name>-<version>.dist-info directory:",
        " .",
    ]
    for d in dists:
        name = str(d.metadata["Name"])
        if name.lower() == "lanesync":
            continue
        lines.append(f" {name} {d.version}: {declared_license(d)}")
    with open(path, "a", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
