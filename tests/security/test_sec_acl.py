"""`lanesync headoffice acl`: the file it writes and the lane and store lists it refuses."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from headoffice.acl import AclError, AclSpec, read_lanes, read_stores, render
from headoffice.projections import PROJECTIONS
from lanesync.cli import build_parser, main
from protocol.identity import LaneId

L = LaneId
RULE = "1-32 characters of A-Z a-z 0-9 _ - (a topic segment: no '/', '+', '#' or space)"


def body(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_one_block_per_identity_sorted_and_nothing_else() -> None:
    lanes = (L("S002", "L1"), L("S001", "L2"), L("S001", "L1"))
    text = render(AclSpec(("S002",), lanes=lanes))
    # The order of the lists does not matter.
    assert text == render(AclSpec(("S002",), lanes=tuple(reversed(lanes))))
    assert body(text) == [
        "user headoffice",
        "topic read lanesync/v1/+/+/journal",
        "topic read lanesync/v1/+/+/hello",
        "topic read lanesync/v1/+/+/status",
        "topic read lanesync/v1/+/+/request",
        "topic write lanesync/v1/+/+/ack",
        "topic write lanesync/v1/+/+/reply",
        "topic write lanesync/v1/+/catalog",
        "topic write lanesync/v1/headoffice",
        # Each lane's identity: its own lane's topics only.
        "user store-S001.L1",
        "topic write lanesync/v1/S001/L1/journal",
        "topic write lanesync/v1/S001/L1/hello",
        "topic write lanesync/v1/S001/L1/status",
        "topic write lanesync/v1/S001/L1/request",
        "topic read lanesync/v1/S001/L1/ack",
        "topic read lanesync/v1/S001/L1/reply",
        "topic read lanesync/v1/S001/catalog",
        "topic read lanesync/v1/headoffice",
        "user store-S001.L2",
        "topic write lanesync/v1/S001/L2/journal",
        "topic write lanesync/v1/S001/L2/hello",
        "topic write lanesync/v1/S001/L2/status",
        "topic write lanesync/v1/S001/L2/request",
        "topic read lanesync/v1/S001/L2/ack",
        "topic read lanesync/v1/S001/L2/reply",
        "topic read lanesync/v1/S001/catalog",
        "topic read lanesync/v1/headoffice",
        # A store hub's identity: all of its store's lanes; then that store's lanes.
        "user store-S002",
        "topic write lanesync/v1/S002/+/journal",
        "topic write lanesync/v1/S002/+/hello",
        "topic write lanesync/v1/S002/+/status",
        "topic write lanesync/v1/S002/+/request",
        "topic read lanesync/v1/S002/+/ack",
        "topic read lanesync/v1/S002/+/reply",
        "topic read lanesync/v1/S002/catalog",
        "topic read lanesync/v1/headoffice",
        "user store-S002.L1",
        "topic write lanesync/v1/S002/L1/journal",
        "topic write lanesync/v1/S002/L1/hello",
        "topic write lanesync/v1/S002/L1/status",
        "topic write lanesync/v1/S002/L1/request",
        "topic read lanesync/v1/S002/L1/ack",
        "topic read lanesync/v1/S002/L1/reply",
        "topic read lanesync/v1/S002/catalog",
        "topic read lanesync/v1/headoffice",
    ]
    assert text.startswith("# Mosquitto acl_file written by `lanesync headoffice acl`")
    # Anonymous clients get nothing: no topic line comes before the first user line.
    before_users = text.split("\nuser ")[0].splitlines()
    assert [line for line in before_users if line.startswith("topic")] == []


def test_prefix_user_prefix_and_headoffice_user() -> None:
    text = render(AclSpec(("0001",), "acme/pos", "", "ho-main", lanes=(L("0001", "7"),)))
    assert "user ho-main\ntopic read acme/pos/+/+/journal" in text
    assert "user 0001\ntopic write acme/pos/0001/+/journal" in text
    assert "user 0001.7\ntopic write acme/pos/0001/7/journal" in text


def test_a_lane_user_names_one_lane_even_with_dashes_in_ids() -> None:
    """'S-1'/'L1' and 'S'/'1-L1' would both be S-1-L1 with a dash; '.' keeps them apart."""
    spec = AclSpec(lanes=(L("S-1", "L1"), L("S", "1-L1")))
    assert [spec.lane_user(lane) for lane in spec.lanes] == ["store-S-1.L1", "store-S.1-L1"]
    text = render(spec)
    assert "user store-S-1.L1\ntopic write lanesync/v1/S-1/L1/journal" in text
    assert "user store-S.1-L1\ntopic write lanesync/v1/S/1-L1/journal" in text


def test_a_chain_of_hundreds_of_lanes_from_a_file(tmp_path: Path) -> None:
    lanes = tmp_path / "lanes.csv"
    lanes.write_text(
        "# lane list exported from the ERP\n"
        + "".join(
            f"S{n:04d}/L{t},Till {t} of store {n}\n" for n in range(500, 0, -1) for t in (1, 2)
        )
        + "\n"
    )
    out = tmp_path / "etc" / "mosquitto.acl"
    argv = ["headoffice", "acl", "--lanes", str(lanes), "--output", str(out)]
    assert main(argv) == 0
    text = out.read_text()
    assert text.count("\nuser store-S") == 1000
    assert text.index("user store-S0001.L1\n") < text.index("user store-S0001.L2\n")
    assert text.index("user store-S0001.L2\n") < text.index("user store-S0500.L1\n")
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    first = out.read_bytes()
    assert main(argv) == 0
    assert out.read_bytes() == first  # same list, same bytes
    assert [p.name for p in out.parent.iterdir()] == ["mosquitto.acl"]  # no temp file left


def test_stdout_and_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["headoffice", "acl", "--stores", "S9,S1"]) == 0
    out = capsys.readouterr().out
    assert out.index("user store-S1\n") < out.index("user store-S9\n")
    assert main(["headoffice", "acl", "--lanes", "S1/L1"]) == 0  # one lane: not a file name
    assert "user store-S1.L1\n" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("S7/L1 # the new till\nS7/L2\n"))
    assert main(["headoffice", "acl", "--lanes", "-"]) == 0
    out = capsys.readouterr().out
    assert "user store-S7.L1\n" in out
    assert "user store-S7.L2\n" in out


@pytest.mark.parametrize(
    ("stores", "message"),
    [
        ("S1,S#", f"--stores item 2: 'S#' is not a valid store id: {RULE}"),
        ("S1,#", f"--stores item 2: '#' is not a valid store id: {RULE}"),
        ("S1,S1 # closed", "--stores item 2: 'S1 # closed' is not a valid store id"),
        ("S+,S1", f"--stores item 1: 'S+' is not a valid store id: {RULE}"),
        ("S1,S/2", f"--stores item 2: 'S/2' is not a valid store id: {RULE}"),
        ("S1,S 2", "--stores item 2: 'S 2' is not a valid store id"),
        ("S1,,S2", "--stores: item 2 of 'S1,,S2' is empty"),
        ("S1,S1", "--stores item 2: 'S1' is already on item 1"),
        ("/nope/stores.txt", "--stores: no such file /nope/stores.txt"),
        ("stores.txt", "--stores: no such file stores.txt"),
    ],
)
def test_bad_store_lists_name_the_item(stores: str, message: str) -> None:
    """A comma list has no comments: every '#' and '+' is part of an id, and refused."""
    with pytest.raises(AclError) as err:
        read_stores(stores)
    assert str(err.value).startswith(message), str(err.value)


@pytest.mark.parametrize(
    ("lanes", "message"),
    [
        ("S1/L1,S1/L#", f"--lanes item 2: 'S1/L#': 'L#' is not a valid lane id: {RULE}"),
        ("S1/L1,S#/L1", f"--lanes item 2: 'S#/L1': 'S#' is not a valid store id: {RULE}"),
        ("S1/+,S1/L1", f"--lanes item 1: 'S1/+': '+' is not a valid lane id: {RULE}"),
        ("S1/L1,S1/#", "--lanes item 2: 'S1/#': '#' is not a valid lane id"),
        ("S1/L1,S1", "--lanes item 2: 'S1' is not a lane: write it STORE/LANE, e.g. S001/L1"),
        ("S1/L1,S1/L1/x", "--lanes item 2: 'S1/L1/x': 'L1/x' is not a valid lane id"),
        ("S1/L1,S1/", "--lanes item 2: 'S1/': '' is not a valid lane id"),
        ("S1/L1, S1/L1", "--lanes item 2: 'S1/L1' is already on item 1"),
        ("/etc/lanes", "--lanes: no such file /etc/lanes"),
    ],
)
def test_bad_lane_lists_name_the_item(lanes: str, message: str) -> None:
    with pytest.raises(AclError) as err:
        read_lanes(lanes)
    assert str(err.value).startswith(message), str(err.value)


def test_comments_in_a_file_only_at_line_start_or_after_whitespace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "stores.txt"
    f.write_text("# stores\nS001\n  # indented comment\nS002 # flagship\nS003\t# tab\n\nS004,#5\n")
    assert read_stores(str(f)) == ["S001", "S002", "S003", "S004"]
    f.write_text("S001\n\n# closed stores follow\nS#\n")
    with pytest.raises(AclError, match=rf"^{f} line 4: 'S#' is not a valid store id: .*comment"):
        read_stores(str(f))
    f.write_text("S001\nS002#closed\n")  # no space before '#': part of the id, so refused
    with pytest.raises(AclError, match=rf"^{f} line 2: 'S002#closed' is not a valid store id"):
        read_stores(str(f))
    f.write_text("S001/L1\nS001/L#2 # a typo\n")
    with pytest.raises(AclError, match=rf"^{f} line 2: 'S001/L#2': 'L#2' is not a valid lane id"):
        read_lanes(str(f))
    out = tmp_path / "acl"
    assert main(["headoffice", "acl", "--lanes", str(f), "--output", str(out)]) == 2
    assert f"lanesync headoffice acl: {f} line 2: 'S001/L#2'" in capsys.readouterr().err
    assert not out.exists()  # nothing half-written
    f.write_text("# nothing\n   \n")
    with pytest.raises(AclError, match=rf"^{f}: no ids$"):
        read_stores(str(f))


def test_stdin_refuses_a_hash_inside_an_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("S1\nS+2\n"))
    with pytest.raises(AclError, match=r"^<stdin> line 2: 'S\+2' is not a valid store id"):
        read_stores("-")


def test_help_documents_the_comment_rule(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["headoffice", "acl", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "'#' starts a comment at the start of a line or after a space or tab" in out
    assert "comma-separated list (no comments)" in out


def test_refuses_an_unsafe_spec(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(AclError, match="--prefix: 'a/#' must be"):
        render(AclSpec(("S1",), "a/#"))
    with pytest.raises(AclError, match="would get head office's user 'headoffice'"):
        render(AclSpec(("headoffice",), user_prefix=""))
    with pytest.raises(AclError, match="--user-prefix: 'store/' is not"):
        render(AclSpec(("S1",), user_prefix="store/"))
    with pytest.raises(AclError, match=r"--user-prefix: 'store\.' is not"):
        render(AclSpec(("S1",), user_prefix="store."))
    # On the stores' listener a user is a client id: never one of head office's.
    with pytest.raises(AclError, match=r"user 'lanesync-headoffice': .* head office's client id"):
        render(AclSpec(("lanesync-headoffice",), user_prefix=""))
    with pytest.raises(AclError, match=r"user 'lanesync-S1\.L1'"):
        render(AclSpec(lanes=(L("S1", "L1"),), user_prefix="lanesync-"))
    long = L("S" * 32, "L" * 32)
    with pytest.raises(AclError, match="71 characters; a certificate's CN holds at most 64"):
        render(AclSpec(lanes=(long,)))
    # No identities is a mistyped command, not an ACL: the command refuses it. (`store remove`
    # of the last store renders head office's block alone: nobody else may connect.)
    assert main(["headoffice", "acl"]) == 2
    assert "give --lanes" in capsys.readouterr().err
    only_ho = render(AclSpec())
    assert "user headoffice" in only_ho
    assert "user store-" not in only_ho


def test_headoffice_without_subcommand_still_runs_head_office() -> None:
    args = build_parser().parse_args(["headoffice", "--config", "/etc/x.toml"])
    assert args.handler.__name__ == "cmd_headoffice"
    assert args.config == "/etc/x.toml"
    acl = build_parser().parse_args(["headoffice", "acl", "--stores", "S1"])
    assert acl.handler.__name__ == "cmd_acl"


def test_from_catalog_grants_the_active_lanes_of_the_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from headoffice.catalog import load as loader  # noqa: PLC0415
    from headoffice.db import SqliteDatabase  # noqa: PLC0415

    db = tmp_path / "ho.db"
    lanes = tmp_path / "lanes.csv"
    lanes.write_text("store,lane,active\nS001,L1,1\nS001,L2,0\nS002,L1,1\n", encoding="utf-8")
    store = SqliteDatabase(db, projections=PROJECTIONS)
    try:
        loader.load_file(store.sql, "lanes", lanes)
    finally:
        store.close()
    cfg = tmp_path / "headoffice.toml"
    cfg.write_text(f'[database]\npath = "{db}"\n', encoding="utf-8")
    assert (
        main(["headoffice", "--config", str(cfg), "acl", "--from-catalog", "--lanes", "S003/L9"])
        == 0
    )
    users = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("user ")]
    # the inactive lane S001/L2 gets no identity
    assert users == [
        "user headoffice",
        "user store-S001.L1",
        "user store-S002.L1",
        "user store-S003.L9",
    ]
    missing = tmp_path / "missing.toml"
    missing.write_text(f'[database]\npath = "{tmp_path / "none.db"}"\n', encoding="utf-8")
    assert main(["headoffice", "--config", str(missing), "acl", "--from-catalog"]) == 2
    assert "no head-office database yet" in capsys.readouterr().err
