"""packaging/apt_mirror.py: the mirror debootstrap uses is the one apt uses, read from both of
apt's source formats, skipping what apt skips."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.package.pkg_helpers import REPO

_spec = importlib.util.spec_from_file_location("apt_mirror", REPO / "packaging/apt_mirror.py")
assert _spec
assert _spec.loader
apt_mirror = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(apt_mirror)


def _apt(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_deb822_sources_with_security_and_disabled_stanzas(tmp_path: Path) -> None:
    apt = _apt(
        tmp_path,
        {
            "sources.list.d/debian.sources": (
                "Types: deb\nURIs: http://disabled.example/debian\nSuites: bookworm\n"
                "Components: main\nEnabled: no\n\n"
                "Types: deb-src deb\n# a comment\nURIs: http://mirror.example/debian\n"
                "Suites: bookworm bookworm-updates\nComponents: main contrib\n"
                "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
                "Types: deb\nURIs: http://security.example/debian-security\n"
                "Suites: bookworm-security\nComponents: main\n"
            ),
        },
    )
    assert apt_mirror.mirror_for("bookworm", apt) == "http://mirror.example/debian"
    assert apt_mirror.mirror_for("trixie", apt) is None


def test_one_line_list_with_options_and_ignored_suffixes(tmp_path: Path) -> None:
    apt = _apt(
        tmp_path,
        {
            "sources.list": "# deb http://commented.example/debian bookworm main\n",
            "sources.list.d/google.list.disabled": "deb http://other.example bookworm main\n",
            "sources.list.d/src.list": "deb-src http://src.example/debian bookworm main\n",
            "sources.list.d/main.list": (
                "deb [arch=amd64 signed-by=/k.gpg] http://list.example/debian bookworm main\n"
            ),
        },
    )
    assert apt_mirror.mirror_for("bookworm", apt) == "http://list.example/debian"


def test_no_source_is_an_error_naming_the_files(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(apt_mirror, "APT_DIR", tmp_path)
    assert apt_mirror.main(["apt_mirror.py", "bookworm"]) == 1
    err = capsys.readouterr().err
    assert "no 'deb' source for suite bookworm" in err
    assert str(tmp_path / "sources.list") in err
