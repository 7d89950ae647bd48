"""Backlog export to a signed file, import at head office, and MQTT dedupe after it (item 3)."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import pytest

from agent.export import ExportError, export, load_key
from agent.journal import Journal
from agent.replicator import Replicator
from headoffice import config as ho_config
from headoffice.importer import ImportFailed, apply
from headoffice.ingest import Ingest
from lanesync.broker import MosquittoBroker
from lanesync.cli import main
from tests.ops.ops_helpers import LANE, fill, lane_config, query


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """The store's key file and head office's key directory holding the same key."""
    key = secrets.token_hex(32)
    lane_key = tmp_path / "export.key"
    lane_key.write_text(key + "\n")
    key_dir = tmp_path / "export-keys"
    key_dir.mkdir()
    (key_dir / f"{LANE.store}.key").write_text(key)
    return lane_key, key_dir


async def _journal_with_backlog(path: Path, n: int, acked: int) -> None:
    async with Journal(path, LANE) as journal:
        await fill(journal, n)
        await journal.mark_acked(acked)


async def test_export_import_is_exactly_once_and_mqtt_redelivery_is_dropped(
    tmp_path: Path, keys: tuple[Path, Path], broker: MosquittoBroker
) -> None:
    lane_key, key_dir = keys
    cfg = lane_config(
        tmp_path,
        broker={"port": broker.port, "keepalive": 2},
        replication={"linger_ms": 0, "backoff_initial_s": 0.05, "backoff_max_s": 0.3},
        export={"key_file": str(lane_key)},
    )
    await _journal_with_backlog(cfg.journal_path, 30, 0)
    out = tmp_path / "usb" / "backlog.export"
    out.parent.mkdir()
    res = export(cfg.journal_path, LANE, load_key(lane_key), out)
    assert (res.entries, res.first_seq, res.last_seq) == (30, 1, 30)
    header = json.loads(out.read_bytes().split(b"\n")[0])
    assert (header["store"], header["lane"], header["first_seq"]) == ("S042", "L1", 1)
    assert len(header["entries"][0]) == 6  # seq, kind, txn_id, ts, body, chain hash

    ho_db = tmp_path / "ho.db"
    first = apply(out, ho_db, key_dir)
    assert (first.applied, first.redelivered, first.hwm) == (30, 0, 30)
    again = apply(out, ho_db, key_dir)
    assert (again.applied, again.redelivered, again.hwm) == (0, 30, 30)
    assert query(ho_db, "SELECT count(*) FROM documents") == [(30,)]

    # The lane reconnects and sends the same 30 entries (and 5 new ones) over MQTT.
    ho_cfg = ho_config.parse(
        {"database": {"path": str(ho_db)}, "broker": {"port": broker.port, "keepalive": 2}}
    )
    async with Journal(cfg.journal_path, LANE) as journal:
        await fill(journal, 5)
        async with Ingest(ho_cfg) as ingest, Replicator(journal, cfg):
            async with asyncio.timeout(20):
                while journal.acked_seq < 35:
                    await asyncio.sleep(0.05)
            # What MQTT brought again was dropped by the same dedupe that import used.
            assert ingest.stats.entries_applied == 5
    assert query(ho_db, "SELECT count(*) FROM documents") == [(35,)]
    assert query(ho_db, "SELECT count(*), max(seq) FROM journal") == [(35, 35)]


async def test_import_refuses_tampering_wrong_keys_and_gaps(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    lane_key, key_dir = keys
    journal = tmp_path / "journal.db"
    await _journal_with_backlog(journal, 10, 4)
    out = tmp_path / "b.export"
    res = export(journal, LANE, load_key(lane_key), out)
    assert (res.first_seq, res.last_seq) == (5, 10)  # only the unacked backlog
    ho_db = tmp_path / "ho.db"

    # Head office holds nothing of this epoch: seqs 1..4 are missing; nothing is applied.
    with pytest.raises(ImportFailed, match=r"seqs 1\.\.4 are missing"):
        apply(out, ho_db, key_dir)

    raw = out.read_bytes()
    tampered = tmp_path / "t.export"
    line = raw.split(b"\n")
    doc = json.loads(line[0])
    doc["entries"][0][3] += 1  # change a timestamp
    tampered.write_bytes(json.dumps(doc).encode() + b"\n" + line[1] + b"\n")
    with pytest.raises(ImportFailed, match="signature does not verify: the file was altered"):
        apply(tampered, ho_db, key_dir)

    other = tmp_path / "other-keys"
    other.mkdir()
    (other / f"{LANE.store}.key").write_text(secrets.token_hex(32))
    with pytest.raises(ImportFailed, match="signed with key"):
        apply(out, ho_db, key_dir=other)
    with pytest.raises(ImportFailed, match="no key for store S042"):
        apply(out, ho_db, key_dir=tmp_path)
    assert not ho_db.exists() or query(ho_db, "SELECT count(*) FROM documents") == [(0,)]

    bad = tmp_path / "short.key"
    bad.write_text("abcd")
    with pytest.raises(ExportError, match="at least 32"):
        load_key(bad)


async def test_cli_export_status_and_import(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    lane_key, key_dir = keys
    agent_toml = tmp_path / "agent.toml"
    agent_toml.write_text(
        f'store = "{LANE.store}"\nlane = "{LANE.lane}"\n'
        f'[journal]\npath = "{tmp_path / "journal.db"}"\n'
        f'[api]\nsocket = "{tmp_path / "api.sock"}"\n'
        f'[export]\nkey_file = "{lane_key}"\n'
        "[broker]\nport = 1\n"
    )
    ho_toml = tmp_path / "ho.toml"
    ho_toml.write_text(
        f'[database]\npath = "{tmp_path / "ho.db"}"\n[import]\nkey_dir = "{key_dir}"\n'
    )
    await _journal_with_backlog(tmp_path / "journal.db", 12, 0)

    # Status with the agent stopped: read from the journal, read-only.
    assert main(["status", "--config", str(agent_toml), "--json"]) == 3  # the agent: not running
    st = json.loads(capsys.readouterr().out)
    assert st["running"] is False
    j = st["journal"]
    assert (j["epoch"] > 0, j["last_seq"], j["backlog"], j["acked_seq"]) == (True, 12, 12, 0)
    assert j["backlog_bytes"] > 0
    assert j["size_bytes"] > 0
    assert j["free_disk_bytes"] > 0
    assert st["oldest_unacked_age_s"] is not None
    assert main(["status", "--config", str(agent_toml)]) == 3
    text = capsys.readouterr().out
    assert "agent NOT RUNNING" in text
    assert "backlog     12 entries" in text

    usb = tmp_path / "usb"
    usb.mkdir()
    assert main(["journal", "export", "--config", str(agent_toml), "--out", str(usb)]) == 0
    said = capsys.readouterr().out
    assert "12 unacked entries" in said
    assert "lanesync import" in said
    (file,) = usb.iterdir()
    assert main(["import", str(file), "--config", str(ho_toml), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["applied"] == 12
    assert main(["import", str(file), "--config", str(ho_toml)]) == 0
    assert "0 applied, 12 already held" in capsys.readouterr().out
