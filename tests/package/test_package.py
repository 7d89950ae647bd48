"""The Debian package end to end: `./run package` builds it from this checkout, dpkg installs
it into a scratch Debian 12 root (debootstrap minbase + python3), the installed `lanesync`
answers --version and `doctor --offline`, an upgrade keeps the conffiles and the
administrator's config, remove and purge leave nothing the package made, and lintian passes
(errors and warnings fixed, or overridden with the reason in packaging/debian/).

The tests run in file order on one root: each step starts from the state the one before left.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.package.pkg_helpers import REPO, RUN, VERSION, Box, run_ok

pytestmark = pytest.mark.timeout(1200)

UNITS = (
    "lanesync-agent.service",
    "lanesync-headoffice.service",
    "lanesync-headoffice-worker@.service",
)
EXAMPLES = ("agent", "headoffice", "extract", "scanners")
CONFFILES = {f"/etc/lanesync/{name}.example.toml" for name in EXAMPLES}
# What dpkg, adduser and friends touch on any install, whatever the package: dpkg's own
# database and logs, the user database's backup copies and adduser's lock file.
SYSTEM_BOOKKEEPING = ("var/lib/dpkg/", "var/log/", "var/cache/debconf/")
USER_DB_FILES = {"etc/passwd-", "etc/group-", "etc/shadow-", "etc/gshadow-", "run/adduser"}
# tmpfiles.d: path -> (mode, owner, group) the package's postinst must leave.
DIRS = {
    "/var/lib/lanesync": ("750", "lanesync", "lanesync"),
    "/run/lanesync": ("750", "lanesync", "lanesync"),
    "/etc/lanesync": ("750", "root", "lanesync"),
    "/etc/lanesync/export-keys": ("750", "root", "lanesync"),
}


def _deb_members(deb: Path) -> dict[str, tarfile.TarInfo]:
    """The data archive's members by absolute path (dpkg-deb --fsys-tarfile, as dpkg reads it)."""
    tar = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return {m.name.removeprefix("."): m for m in t.getmembers()}


def _field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "--field", str(deb), name], capture_output=True, text=True, check=True
    ).stdout.strip()


def _left_behind(box: Box, before: set[str]) -> set[str]:
    return {
        p
        for p in box.files() - before
        if not p.startswith(SYSTEM_BOOKKEEPING) and p not in USER_DB_FILES
    }


def _check_user_and_dirs(box: Box) -> None:
    ids = box.sh("id lanesync; getent passwd lanesync").stdout
    assert "groups=" in ids, ids
    for group in ("lanesync", "input", "dialout"):
        assert f"({group})" in ids, f"lanesync is not in group {group}: {ids}"
    passwd = ids.strip().splitlines()[-1].split(":")
    assert passwd[5] == "/var/lib/lanesync", passwd
    assert passwd[6] in ("/usr/sbin/nologin", "/sbin/nologin"), passwd
    for path, want in DIRS.items():
        got = box.sh(f"stat -c '%a %U %G' {path}").stdout.split()
        assert tuple(got) == want, f"{path}: {got}, want {want}"


# --- the .deb itself ------------------------------------------------------------------------


def test_package_name_version_and_dependencies(box: Box) -> None:
    assert box.deb.name == f"lanesync_{VERSION}-1_amd64.deb"
    assert _field(box.deb, "Version") == f"{VERSION}-1"
    # Compiled wheels (msgpack, psycopg-binary, evdev, aiohttp) are in the venv: amd64.
    assert _field(box.deb, "Architecture") == "amd64"
    depends = _field(box.deb, "Depends")
    for need in ("python3 (>= 3.11)", "python3 (<< 3.12)", "systemd-sysusers | adduser", "libc6"):
        assert need in depends, f"Depends lacks {need!r}: {depends}"


def test_package_holds_every_path_its_units_name(box: Box) -> None:
    members = _deb_members(box.deb)
    assert members["/usr/bin/lanesync"].issym()
    assert members["/usr/bin/lanesync"].linkname == "/opt/lanesync/bin/lanesync"
    assert members["/opt/lanesync/bin/lanesync"].isfile()
    assert members["/opt/lanesync/bin/python3"].linkname == "/usr/bin/python3"
    for path in (
        "/usr/lib/sysusers.d/lanesync.conf",
        "/usr/lib/tmpfiles.d/lanesync.conf",
        "/lib/udev/rules.d/70-lanesync-scanners.rules",
        "/usr/share/doc/lanesync/README.md",
        "/usr/share/doc/lanesync/copyright",
        "/usr/share/doc/lanesync/changelog.Debian.gz",
        "/usr/share/doc/lanesync/examples/mosquitto-store-hub.example.conf",
        "/usr/share/man/man1/lanesync.1.gz",
        *CONFFILES,
    ):
        assert path in members, f"{path} is not in the package"
    for unit in UNITS:
        text = (REPO / "systemd" / unit).read_text()
        packaged = members[f"/lib/systemd/system/{unit}"]
        assert packaged.size == len(text.encode()), f"{unit} differs from systemd/{unit}"
        exec_start = re.search(r"^ExecStart=(\S+)", text, re.M)
        assert exec_start, unit
        assert exec_start.group(1) in members, unit
        for doc in re.findall(r"^Documentation=file://(\S+)", text, re.M):
            assert doc in members, f"{unit} names {doc}, which the package lacks"
        # The config a unit reads is the administrator's; the package ships its example.
        config = re.search(r"--config (/etc/lanesync/(\w+)\.toml)", text)
        assert config, unit
        assert config.group(1) not in members, f"{config.group(1)} must not be packaged"
        assert f"/etc/lanesync/{config.group(2)}.example.toml" in members
    # No build path, cache or compiler leftovers in the venv.
    assert not [m for m in members if "/include/" in m or m.endswith(".dist-info/direct_url.json")]


def test_man_page_is_generated_from_the_parser(box: Box) -> None:
    members = _deb_members(box.deb)
    assert "/usr/share/man/man1/lanesync.1.gz" in members
    tar = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(box.deb)], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        fh = t.extractfile("./usr/share/man/man1/lanesync.1.gz")
        assert fh is not None
        page = gzip.decompress(fh.read()).decode()
    assert page.startswith('.TH LANESYNC "1"'), page[:80]
    for text in ("lanesync doctor", "lanesync journal export", "--offline", ".SH FILES"):
        assert text in page, f"man page lacks {text!r}"
    assert VERSION in page


# --- install, run, upgrade, remove in the scratch root -----------------------------------


def test_install_creates_the_user_and_directories_and_enables_nothing(box: Box) -> None:
    box.baseline = box.files()
    inside = box.put(box.deb)
    installed = box.sh(f"dpkg -i {inside}")
    assert "creating" not in installed.stderr, installed.stderr  # systemd-tmpfiles did it
    status = box.sh("dpkg-query -W -f='${Status} ${Version}' lanesync").stdout
    assert status == f"install ok installed {VERSION}-1", status
    out = box.sh("lanesync --version").stdout
    assert out.strip() == f"lanesync {VERSION}", out
    # systemd's own tools applied the snippets (the root has the standalone ones).
    assert box.sh("command -v systemd-sysusers && command -v systemd-tmpfiles").returncode == 0
    _check_user_and_dirs(box)
    # Nothing enabled, nothing configured: the box does not come up as some other lane.
    wants = box.sh("ls /etc/systemd/system/multi-user.target.wants 2>/dev/null || true").stdout
    assert "lanesync" not in wants, wants
    assert box.sh("test ! -e /etc/lanesync/agent.toml", check=False).returncode == 0
    conffiles = box.sh("cat /var/lib/dpkg/info/lanesync.conffiles").stdout.split()
    assert set(conffiles) == CONFFILES


def test_doctor_offline_names_the_missing_config_then_passes_once_it_is_written(
    box: Box,
) -> None:
    missing = box.sh("lanesync doctor --offline", check=False)
    assert missing.returncode == 1, missing
    assert "/etc/lanesync/agent.toml" in missing.stdout, missing.stdout
    assert "[FAIL] config" in missing.stdout, missing.stdout

    box.sh(
        'sed \'s/^store = "S001"/store = "S042"/\' /etc/lanesync/agent.example.toml'
        " > /etc/lanesync/agent.toml"
        " && chown root:lanesync /etc/lanesync/agent.toml && chmod 0640 /etc/lanesync/agent.toml"
    )
    # As the service user, the way the unit runs: config readable, journal directory writable.
    proc = box.sh("lanesync doctor --offline --json", user="lanesync", check=False)
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert checks["config"]["outcome"] == "ok", checks["config"]
    assert "lane S042/L1" in checks["config"]["found"]
    assert checks["service user"]["outcome"] == "ok", checks["service user"]
    assert checks["disk"]["outcome"] == "ok", checks["disk"]
    assert "journal directory" not in checks, checks.get("journal directory")
    assert checks["agent"]["outcome"] == "warn"  # not running: nothing started it
    assert not [c for c in checks.values() if c["outcome"] == "fail"], checks

    human = box.sh("lanesync doctor --offline").stdout
    assert "[OK  ] config: /etc/lanesync/agent.toml: lane S042/L1, valid" in human, human


def test_running_lanesync_writes_nothing_under_opt(box: Box) -> None:
    """Byte-compiled at build time: a run as root leaves no __pycache__ dpkg does not know."""
    box.sh("lanesync --help >/dev/null; lanesync doctor --offline >/dev/null || true")
    owned = set(box.sh("dpkg -L lanesync").stdout.split())
    present = set(box.sh("find /opt/lanesync").stdout.split())
    assert present - owned == set(), sorted(present - owned)[:10]


def test_upgrade_keeps_conffiles_config_and_directories(box: Box, tmp_path: Path) -> None:
    """A version-bumped package over the installed one: dpkg's real upgrade path."""
    box.sh("echo '# local note: keep me' >> /etc/lanesync/agent.example.toml")
    before = box.sh(
        "md5sum /etc/lanesync/agent.example.toml /etc/lanesync/agent.toml"
        " /etc/lanesync/headoffice.example.toml"
    ).stdout
    bumped = _rebuild_with_version(box.deb, f"{VERSION}-1.1", tmp_path)
    log = box.sh(f"dpkg -i {box.put(bumped)}").stdout
    assert f"Unpacking lanesync ({VERSION}-1.1) over ({VERSION}-1)" in log, log
    status = box.sh("dpkg-query -W -f='${Status} ${Version}' lanesync").stdout
    assert status == f"install ok installed {VERSION}-1.1", status
    after = box.sh(
        "md5sum /etc/lanesync/agent.example.toml /etc/lanesync/agent.toml"
        " /etc/lanesync/headoffice.example.toml"
    ).stdout
    assert after == before
    assert "keep me" in box.sh("cat /etc/lanesync/agent.example.toml").stdout
    _check_user_and_dirs(box)
    assert box.sh("lanesync --version").stdout.strip() == f"lanesync {VERSION}"
    assert box.sh("lanesync doctor --offline", user="lanesync", check=False).returncode == 0


@pytest.mark.soak
def test_upgrade_to_a_real_rebuild(box: Box, tmp_path: Path) -> None:
    """Soak: a second `./run package --revision 2` build (about a minute), installed over."""
    out = run_ok([RUN, "package", "--revision", "2", "--out", str(tmp_path)], "rebuild", 900)
    deb = Path(out.strip().splitlines()[-1])
    assert deb.name == f"lanesync_{VERSION}-2_amd64.deb"
    box.sh(f"dpkg -i {box.put(deb)}")
    changelog = box.sh("zcat /usr/share/doc/lanesync/changelog.Debian.gz").stdout
    assert changelog.startswith(f"lanesync ({VERSION}-2) bookworm"), changelog
    assert "keep me" in box.sh("cat /etc/lanesync/agent.example.toml").stdout
    assert box.sh("lanesync doctor --offline", user="lanesync", check=False).returncode == 0


def test_remove_keeps_conffiles_and_purge_leaves_only_what_the_admin_wrote(box: Box) -> None:
    box.sh("dpkg -r lanesync")
    status = box.sh("dpkg-query -W -f='${Status}' lanesync").stdout
    assert status == "deinstall ok config-files", status
    for gone in ("/opt/lanesync", "/usr/bin/lanesync", f"/lib/systemd/system/{UNITS[0]}"):
        assert box.sh(f"test ! -e {gone}", check=False).returncode == 0, f"{gone} survived remove"
    assert box.sh("test -f /etc/lanesync/agent.example.toml", check=False).returncode == 0

    purge = box.sh("dpkg -P lanesync")
    assert "kept /etc/lanesync" in purge.stderr, purge.stderr
    left = _left_behind(box, box.baseline)
    # The administrator's agent.toml (and so its directory) stays; so does the user (Debian
    # keeps system users: files may still be owned by its uid).
    assert left == {"etc/lanesync", "etc/lanesync/agent.toml"}, sorted(left)
    assert box.sh("getent passwd lanesync", check=False).returncode == 0

    box.sh("rm -r /etc/lanesync")
    assert _left_behind(box, box.baseline) == set()


def test_without_systemd_tools_postinst_uses_adduser_and_purge_leaves_nothing(box: Box) -> None:
    """A box without systemd (a container): the same sysusers/tmpfiles lines, applied by hand."""
    box.sh(
        "dpkg -P systemd-standalone-sysusers systemd-standalone-tmpfiles"
        " && userdel lanesync && groupdel input"
    )
    assert box.sh("command -v systemd-sysusers", check=False).returncode != 0
    baseline = box.files()
    box.sh(f"dpkg -i {box.put(box.deb)}")
    _check_user_and_dirs(box)
    assert box.sh("lanesync --version").stdout.strip() == f"lanesync {VERSION}"
    box.sh("dpkg -P lanesync")
    assert _left_behind(box, baseline) == set()


# --- lintian -------------------------------------------------------------------------------


def test_lintian_passes_and_every_override_gives_its_reason(box: Box) -> None:
    report, _ = box.lint.communicate(timeout=600)
    flagged = [line for line in report.splitlines() if re.match(r"[EW]: ", line)]
    assert not flagged, report[-4000:]
    assert box.lint.returncode == 0, report[-4000:]
    overrides = (REPO / "packaging/debian/lanesync.lintian-overrides").read_text()
    # Each block of overrides (lines up to a blank one) starts with its reason as a comment.
    for block in overrides.split("\n\n"):
        lines = [line for line in block.splitlines() if line.strip()]
        tags = [line for line in lines if not line.startswith("#")]
        assert not tags or lines[0].startswith("#"), f"no reason given for {tags}"
    # An override whose tag no longer fires is reported (unused-override, info level), one
    # whose context stopped matching is a warning (mismatched-override): none may be stale.
    assert "unused-override" not in report, report[-4000:]
    assert "I: lanesync:" in report  # info tags are shown: the absence above means something


def _rebuild_with_version(deb: Path, version: str, tmp: Path) -> Path:
    """The same package under a higher version: the control file's Version field changed."""
    tree = tmp / "tree"
    subprocess.run(["dpkg-deb", "--raw-extract", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    text = re.sub(r"^Version: .*$", f"Version: {version}", control.read_text(), flags=re.M)
    control.write_text(text)
    out = tmp / f"lanesync_{version}_amd64.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(tree), str(out)],
        check=True,
        capture_output=True,
    )
    return out
