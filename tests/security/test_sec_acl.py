"""`lanesync headoffice acl`: the file it writes and the store lists it refuses."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from headoffice.acl import AclError, AclSpec, read_stores, render
from lanesync.cli import build_parser, main


def test_one_block_per_store_sorted_and_nothing_else() -> None:
    text = render(AclSpec(("S002", "S001")))
    assert text == render(AclSpec(("S001", "S002")))  # order of the list does not matter
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert body == [
        "user headoffice",
        "topic read lanesync/v1/+/+/journal",
        "topic read lanesync/v1/+/+/hello",
        "topic read lanesync/v1/+/+/status",
        "topic read lanesync/v1/+/+/request",
        "topic write lanesync/v1/+/+/ack",
        "topic write lanesync/v1/+/+/reply",
        "user store-S001",
        "topic write lanesync/v1/S001/+/journal",
        "topic write lanesync/v1/S001/+/hello",
        "topic write lanesync/v1/S001/+/status",
        "topic write lanesync/v1/S001/+/request",
        "topic read lanesync/v1/S001/+/ack",
        "topic read lanesync/v1/S001/+/reply",
        "user store-S002",
        "topic write lanesync/v1/S002/+/journal",
        "topic write lanesync/v1/S002/+/hello",
        "topic write lanesync/v1/S002/+/status",
        "topic write lanesync/v1/S002/+/request",
        "topic read lanesync/v1/S002/+/ack",
        "topic read lanesync/v1/S002/+/reply",
    ]
    assert text.startswith("# Mosquitto acl_file written by `lanesync headoffice acl`")
    # Anonymous clients get nothing: no topic line comes before the first user line.
    before_users = text.split("\nuser ")[0].splitlines()
    assert [line for line in before_users if line.startswith("topic")] == []


def test_prefix_user_prefix_and_headoffice_user() -> None:
    text = render(AclSpec(("0001",), "acme/pos", "", "ho-main"))
    assert "user ho-main\ntopic read acme/pos/+/+/journal" in text
    assert "user 0001\ntopic write acme/pos/0001/+/journal" in text


def test_a_chain_of_hundreds_of_stores_from_a_file(tmp_path: Path) -> None:
    stores = tmp_path / "stores.csv"
    stores.write_text(
        "# store list exported from the ERP\n"
        + "".join(f"S{n:04d},Store number {n}\n" for n in range(500, 0, -1))
        + "\n"
    )
    out = tmp_path / "etc" / "mosquitto.acl"
    argv = ["headoffice", "acl", "--stores", str(stores), "--output", str(out)]
    assert main(argv) == 0
    text = out.read_text()
    assert text.count("\nuser store-S") == 500
    assert text.index("user store-S0001\n") < text.index("user store-S0500\n")
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
    monkeypatch.setattr("sys.stdin", io.StringIO("S7\n"))
    assert main(["headoffice", "acl", "--stores", "-"]) == 0
    assert "user store-S7\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("stores", "message"),
    [
        ("S1,S/2", "--stores item 2: store: 'S/2' is not 1-32 characters"),
        ("S1,,S2", "--stores: item 2 of 'S1,,S2' is empty"),
        ("S1,S1", "--stores item 2: store 'S1' is already on item 1"),
        ("S1,S+", "--stores item 2: store: 'S+' is not 1-32 characters"),
        ("/nope/stores.txt", "--stores: no such file /nope/stores.txt"),
    ],
)
def test_bad_store_lists_name_the_item(stores: str, message: str) -> None:
    with pytest.raises(AclError) as err:
        read_stores(stores)
    assert str(err.value).startswith(message), str(err.value)


def test_bad_line_in_a_file_names_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "stores.txt"
    f.write_text("S001\n\n# closed stores follow\nS 02\n")
    with pytest.raises(AclError, match=rf"^{f} line 4: store: 'S 02' is not"):
        read_stores(str(f))
    out = tmp_path / "acl"
    assert main(["headoffice", "acl", "--stores", str(f), "--output", str(out)]) == 2
    assert f"lanesync headoffice acl: {f} line 4: store: 'S 02'" in capsys.readouterr().err
    assert not out.exists()  # nothing half-written
    f.write_text("# nothing\n")
    with pytest.raises(AclError, match=rf"^{f}: no store ids$"):
        read_stores(str(f))


def test_refuses_an_unsafe_spec() -> None:
    with pytest.raises(AclError, match="--prefix: 'a/#' must be"):
        render(AclSpec(("S1",), "a/#"))
    with pytest.raises(AclError, match="would get head office's user 'headoffice'"):
        render(AclSpec(("headoffice",), user_prefix=""))
    with pytest.raises(AclError, match="--user-prefix: 'store/' is not"):
        render(AclSpec(("S1",), user_prefix="store/"))


def test_headoffice_without_subcommand_still_runs_head_office() -> None:
    args = build_parser().parse_args(["headoffice", "--config", "/etc/x.toml"])
    assert args.handler.__name__ == "cmd_headoffice"
    assert args.config == "/etc/x.toml"
    acl = build_parser().parse_args(["headoffice", "acl", "--stores", "S1"])
    assert acl.handler.__name__ == "cmd_acl"
