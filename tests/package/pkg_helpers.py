"""Shared by tests/package: where the checkout is, the package's version, and the scratch
root a built .deb is installed into (commands run there with chroot)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUN = str(REPO / "run")
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
# Both ways postinst applies the sysusers.d/tmpfiles.d files are exercised in one root: first
# with systemd's standalone tools (what a systemd box uses), then, with those purged, with
# adduser and mkdir (a box or container without systemd).
ROOT_EXTRAS = "adduser,systemd-standalone-sysusers,systemd-standalone-tmpfiles"
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}


def why_impossible() -> str | None:
    """Why this machine cannot build and install a .deb at all, or None (then nothing skips)."""
    if not Path("/etc/debian_version").exists() or shutil.which("dpkg") is None:
        return "not a Debian system: no dpkg to build or install a .deb with"
    if os.geteuid() != 0:
        return "needs root: debootstrap and chroot (CI runs as root, so this never skips there)"
    return None


@dataclass
class Box:
    """The built package and the scratch root it is installed into."""

    deb: Path
    root: Path
    build_s: float
    root_s: float
    lint: subprocess.Popen[str]
    # Every path in the root before the package was first installed (set by the install test).
    baseline: set[str] = field(default_factory=set)

    def sh(
        self, script: str, *, user: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Runs a shell script inside the root (as root, or as `user`)."""
        argv = ["chroot"]
        if user:
            argv.append(f"--userspec={user}:{user}")
        argv += [str(self.root), "/bin/sh", "-ec", script]
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=CHROOT_ENV, timeout=300, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"in the scratch root: {script!r} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def put(self, deb: Path) -> str:
        """Copies a .deb into the root; returns its path there."""
        dest = self.root / "tmp" / deb.name
        shutil.copy2(deb, dest)
        return f"/tmp/{deb.name}"

    def files(self) -> set[str]:
        """Every path in the root, relative, for before/after comparisons (not /proc, /dev,
        /sys or /tmp, where the tests put their .debs)."""
        found: set[str] = set()
        for top, dirs, names in os.walk(self.root):
            rel = os.path.relpath(top, self.root)
            if rel == ".":
                dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev", "tmp")]
                rel = ""
            found.update(os.path.join(rel, n) for n in (*dirs, *names))
        return found


def run_ok(argv: list[str], what: str, timeout: float) -> str:
    """Runs a command on the host; its stdout, or an AssertionError with everything it said."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{what} failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}")
    return proc.stdout
