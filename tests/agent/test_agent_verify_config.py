"""`lanesync journal verify` on good and tampered journals, and agent.toml validation."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgpack
import pytest

from agent.config import load, parse
from agent.journal import Journal
from agent.verify import verify
from protocol.errors import ConfigError
from protocol.identity import LaneId

LANE = LaneId("S001", "L01")


async def make_journal(path: Path, n: int = 6, acked: int = 2) -> int:
    async with Journal(path, LANE) as j:
        for i in range(n):
            await j.append("sale", {"kind": "sale", "amount": i})
        await j.mark_acked(acked)
        return j.epoch


def tamper(path: Path, sql: str, args: tuple[Any, ...] = ()) -> None:
    db = sqlite3.connect(path)
    db.execute(sql, args)
    db.commit()
    db.close()


async def test_verify_good_journal(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    epoch = await make_journal(path)
    rep = verify(path)
    assert rep.ok, rep.problem
    assert rep.problem is None
    assert rep.integrity == "ok"
    assert (rep.store, rep.lane, rep.epoch) == ("S001", "L01", epoch)
    assert (rep.entries, rep.first_seq, rep.last_seq, rep.acked_seq) == (6, 1, 6, 2)
    assert rep.as_dict()["ok"] is True


async def test_verify_while_journal_open(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with Journal(path, LANE) as j:
        await j.append("sale", {"kind": "sale"})
        rep = verify(path)
        assert rep.ok
        assert rep.last_seq == 1


async def test_verify_tampered_body(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    await make_journal(path)
    tamper(path, "UPDATE entries SET body = ? WHERE seq = 4", (msgpack.packb({"amount": 9999}),))
    rep = verify(path)
    assert not rep.ok
    assert rep.problem is not None
    assert "hash chain broken at seq 4" in rep.problem
    assert rep.last_seq == 3  # the entries before it verified


async def test_verify_tampered_first_entry(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    await make_journal(path)
    tamper(path, "UPDATE entries SET ts = ts + 1 WHERE seq = 1")
    rep = verify(path)
    assert not rep.ok
    assert "seq 1" in (rep.problem or "")


async def test_verify_tampered_hash(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    await make_journal(path)
    tamper(path, "UPDATE entries SET hash = zeroblob(32) WHERE seq = 2")
    rep = verify(path)
    assert not rep.ok
    assert "hash chain broken at seq 2" in (rep.problem or "")


async def test_verify_missing_middle_entry(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    await make_journal(path)
    tamper(path, "DELETE FROM entries WHERE seq = 3")
    rep = verify(path)
    assert not rep.ok
    assert rep.problem == "seq 3 is missing (next entry is 4)"


def test_verify_missing_file(tmp_path: Path) -> None:
    rep = verify(tmp_path / "nope.db")
    assert not rep.ok
    assert "no such journal file" in (rep.problem or "")


def test_verify_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    rep = verify(path)
    assert not rep.ok
    assert rep.problem


# --- agent.toml ---------------------------------------------------------------------------------

BASE: dict[str, Any] = {"store": "S001", "lane": "L01"}


def conf(**tables: Any) -> dict[str, Any]:
    return {**BASE, **tables}


def test_minimal_config_defaults() -> None:
    c = parse(dict(BASE))
    assert c.lane == LANE
    assert c.broker.port == 1883
    assert c.topics.topic(LANE, c.topics.parse("lanesync/v1/S001/L01/ack")[1]) == (
        "lanesync/v1/S001/L01/ack"
    )
    assert c.api.socket == "/run/lanesync/api.sock"


SCANNER = {"name": "hand", "type": "evdev", "path": "/dev/input/by-id/x"}


def test_full_config() -> None:
    c = parse(
        conf(
            journal={"path": "/tmp/x.db"},
            broker={"host": "mq", "port": 8883, "keepalive": 5, "topic_prefix": "acme/v1"},
            replication={"window": 4, "ack_timeout_s": 2, "linger_ms": 0},
            api={"tcp": "127.0.0.1:8641", "token": "s3cret", "socket": ""},
            scanners=[SCANNER],
        )
    )
    assert str(c.journal_path) == "/tmp/x.db"
    assert (c.broker.host, c.broker.port, c.broker.topic_prefix) == ("mq", 8883, "acme/v1")
    assert c.replication.window == 4
    assert c.replication.ack_timeout_s == 2.0
    assert (c.api.socket, c.api.tcp, c.api.token) == (None, "127.0.0.1:8641", "s3cret")
    assert c.scanners == [SCANNER]  # checked at load (hardware.config), kept as given


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"lane": "L01"}, "store: required key is missing"),
        ({"store": "S/1", "lane": "L01"}, "store: "),
        ({"store": "S001", "lane": "+"}, "lane: "),
        (conf(broker={"port": "x"}), "broker.port: must be an integer 1..65535, got 'x'"),
        (conf(broker={"port": 0}), "broker.port: must be an integer 1..65535"),
        (conf(broker={"prot": 1}), "broker.prot: unknown key"),
        (conf(broker={"topic_prefix": "a/+"}), "broker.topic_prefix: "),
        (conf(broker={"topic_prefix": 5}), "broker.topic_prefix: must be a string"),
        (conf(broker=5), "broker: must be a table"),
        (conf(replication={"windw": 4}), "replication.windw: unknown key"),
        (conf(replication={"window": 0}), "replication.window: must be an integer 1..256"),
        (conf(replication={"ack_timeout_s": "10s"}), "replication.ack_timeout_s: must be a number"),
        (conf(journal={"path": 3}), "journal.path: must be a string"),
        (conf(api={"tcp": "0.0.0.0:8641", "token": "t"}), "api.tcp: must be a loopback HOST:PORT"),
        (conf(api={"tcp": "10.1.2.3:8641", "token": "t"}), "api.tcp: must be a loopback"),
        (conf(api={"tcp": "127.0.0.1", "token": "t"}), "api.tcp: must be a loopback"),
        (conf(api={"tcp": "127.0.0.1:8641"}), "api.token: required when api.tcp is set"),
        (conf(api={"socket": ""}), "api: set api.socket and/or api.tcp"),
        (conf(scanners={"a": 1}), "scanners: must be an array"),
        # hardware.config is imported only for a lane with scanners (issue 17.2): still checked
        (conf(scanners=[{**SCANNER, "type": "usb"}]), "scanners[0].type: unknown type 'usb'"),
        (conf(scanners=[{"type": "evdev", "path": "/dev/x"}]), "scanners[0].name: required"),
        (conf(scanners=["hand"]), "scanners[0]: expected a table, got str"),
        (conf(extra=1), "extra: unknown key"),
    ],
)
def test_config_errors_name_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert str(info.value).startswith(message)


def test_load_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "agent.toml"
    with pytest.raises(ConfigError, match="no such file"):
        load(p)
    p.write_text('store = "S001"\nlane = "L01"\n[replication]\nwindw = 4\n')
    with pytest.raises(ConfigError) as info:
        load(p)
    assert str(info.value) == (
        f"{p}: replication.windw: unknown key; did you mean 'window'?\n"
        f"(config {p} from --config; the default is /etc/lanesync/agent.toml)"
    )
    p.write_text("store = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(p)
    p.write_text('store = "S001"\nlane = "L01"\n[broker]\nport = 1884\n')
    assert load(p).broker.port == 1884
