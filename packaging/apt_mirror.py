"""The Debian mirror this machine's apt uses for a suite, for debootstrap.

Reads /etc/apt/sources.list and sources.list.d/ in both of apt's formats (one-line `.list` and
deb822 `.sources`, sources.list(5)) and prints the first `deb` URI that serves the suite's main
component. Files apt ignores (other suffixes, `Enabled: no`) are ignored here too.
"""

from __future__ import annotations

import sys
from pathlib import Path

APT_DIR = Path("/etc/apt")


def one_line_entries(text: str) -> list[tuple[list[str], list[str], list[str], list[str]]]:
    """(types, uris, suites, components) of each `deb URI SUITE COMP...` line."""
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        kind, rest = words[0], words[1:]
        if rest and rest[0].startswith("["):  # [arch=amd64 signed-by=...] options
            while rest and not rest[0].endswith("]"):
                rest = rest[1:]
            rest = rest[1:]
        if len(rest) >= 2:
            entries.append(([kind], [rest[0]], [rest[1]], rest[2:]))
    return entries


def deb822_entries(text: str) -> list[tuple[list[str], list[str], list[str], list[str]]]:
    """(types, uris, suites, components) of each enabled stanza of a `.sources` file."""
    entries = []
    stanzas: list[dict[str, str]] = [{}]
    key = ""
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            stanzas.append({})
            continue
        if raw[0] in " \t" and key:
            stanzas[-1][key] += " " + raw.strip()
            continue
        key, _, value = raw.partition(":")
        key = key.strip().lower()
        stanzas[-1][key] = value.strip()
    for s in stanzas:
        if not s or s.get("enabled", "yes").lower() == "no":
            continue
        entries.append(
            (
                s.get("types", "").split(),
                s.get("uris", "").split(),
                s.get("suites", "").split(),
                s.get("components", "").split(),
            )
        )
    return entries


def mirror_for(suite: str, apt_dir: Path = APT_DIR) -> str | None:
    files = [apt_dir / "sources.list"]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        parse = deb822_entries if path.suffix == ".sources" else one_line_entries
        for types, uris, suites, components in parse(text):
            if "deb" in types and suite in suites and "main" in components and uris:
                return uris[0]
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: apt_mirror.py SUITE", file=sys.stderr)
        return 2
    uri = mirror_for(argv[1], APT_DIR)
    if uri is None:
        print(
            f"apt_mirror: no 'deb' source for suite {argv[1]} (component main) in "
            f"{APT_DIR}/sources.list or {APT_DIR}/sources.list.d/*.list|*.sources",
            file=sys.stderr,
        )
        return 1
    print(uri)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
