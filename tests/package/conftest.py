"""The Debian package under test: built once per session with `./run package`, linted, and a
scratch Debian 12 root (debootstrap minbase plus python3) to install it into with dpkg.

The root is built while the package builds (two commands side by side, each mostly waiting on
the network or on one core), and lintian runs while the install tests use the root. Nothing is
kept between sessions: the root, the .deb and lintian's report live in the session's tmp dir.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.package.pkg_helpers import ROOT_EXTRAS, RUN, Box, run_ok, why_impossible


@pytest.fixture(scope="session")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    why = why_impossible()
    if why:
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("package")
    root = tmp / "root"
    started = time.monotonic()
    debootstrap = subprocess.Popen(
        [RUN, "package", "root", str(root), "--include", ROOT_EXTRAS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lint: subprocess.Popen[str] | None = None
    try:
        out = run_ok([RUN, "package", "--out", str(tmp / "out")], "./run package", 900)
        deb = Path(out.strip().splitlines()[-1])
        build_s = time.monotonic() - started
        lint = subprocess.Popen(
            [RUN, "package", "lint", str(deb)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        _, err = debootstrap.communicate(timeout=900)
        if debootstrap.returncode != 0:
            raise AssertionError(f"./run package root failed:\n{err}")
        root_s = time.monotonic() - started
        # As on a real box (and as schroot does): systemd-tmpfiles needs /proc.
        subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
        # Shown with -s: where the session's time goes (README's Install section quotes it).
        print(f"\npackage: built in {build_s:.0f} s, root ready after {root_s:.0f} s")
        yield Box(deb, root, build_s, root_s, lint)
    finally:
        for proc in (debootstrap, lint):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
        proc_dir = root / "proc"
        if proc_dir.is_mount():
            subprocess.run(["umount", "--lazy", str(proc_dir)], check=True)
        shutil.rmtree(root, ignore_errors=True)
