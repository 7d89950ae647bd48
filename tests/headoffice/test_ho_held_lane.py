"""A poison entry never stalls its lane, and an operator repairs it (issue 16 item 1), end to
end: a real lane (journal + replicator) through a real Mosquitto into head-office Ingest, on
SQLite and PostgreSQL.

The lane's 5th of 1,000 entries is a stock adjustment of an item head office's rule refuses
(a rule the lane does not know, as an older lane would not): the other 999 apply in order, the
lane's backlog drains to 0, the 5th is held. The rule is lifted and the 5th released through
`lanesync held release`: applied once (twice is a no-op). The lane's journal verifies
(`lanesync journal verify`), head office's replica chains through the released entry from
genesis to the end, and the lane's next batch, chained through the held entry, is accepted by
head office's check at ingest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent import config as agent_config
from agent.journal import Journal
from agent.replicator import Replicator
from headoffice.ingest import Ingest
from headoffice.transit import bodies
from lanesync import cli, stack
from lanesync.broker import MosquittoBroker
from protocol.chain import entry_hash, genesis
from protocol.identity import LaneId
from tests.pgutil import Backend

LANE = LaneId("S001", "L01")
ENTRIES = 1000
POISON = 5
RECALLED = "P-RECALL"


def lane_cfg(tmp_path: Path, port: int) -> agent_config.AgentConfig:
    return agent_config.parse(
        {
            "store": LANE.store,
            "lane": LANE.lane,
            "journal": {"path": str(tmp_path / "lane.db")},
            "api": {"socket": str(tmp_path / "lane.sock")},
            "broker": {"port": port, "keepalive": 5},
            "replication": {
                "linger_ms": 2,
                "batch_max_entries": 50,
                "ack_timeout_s": 2.0,
                "backoff_initial_s": 0.05,
                "backoff_max_s": 0.3,
            },
        }
    )


def doc(n: int) -> tuple[str, dict[str, Any]]:
    if n == POISON:
        item = RECALLED
        return "stock_adjustment", {
            "kind": "stock_adjustment",
            "reason": "COUNT",
            "lines": [{"item": item, "qty": "7.000"}],
        }
    return "sale", {"kind": "sale", "register_no": f"T{10000 + n}", "total": 100 + n}


async def wait_acked(journal: Journal, seq: int, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while journal.acked_seq < seq:
            await asyncio.sleep(0.02)


# `lanesync held` is registered in lanesync/cli.py by headoffice.held.cli.register; until that
# line is there, the same register() on a parser of its own (what lanesync/cli.py does).
HELD_ONLY = (
    "import argparse, sys\n"
    "from headoffice.held import cli\n"
    "p = argparse.ArgumentParser(prog='lanesync')\n"
    "cli.register(p.add_subparsers(dest='command', required=True))\n"
    "a = p.parse_args(sys.argv[1:])\n"
    "sys.exit(a.handler(a))\n"
)


def has_command(name: str) -> bool:
    return any(
        name in action.choices
        for action in cli.build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )


def lanesync(*argv: str) -> subprocess.CompletedProcess[str]:
    """`lanesync ARGV` in a process of its own."""
    entry = ["-m", "lanesync.cli"] if has_command(argv[0]) else ["-c", HELD_ONLY]
    return subprocess.run(
        [sys.executable, *entry, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def replica_chain_ok(backend: Backend, epoch: int) -> int:
    """Head office's journal of the lane, chained from genesis: the count of entries."""
    prev = genesis(LANE, epoch)
    rows = backend.query(
        "SELECT seq, kind, txn_id, ts, body, hash FROM journal WHERE store = ? AND lane = ? "
        "AND epoch = ? ORDER BY seq",
        (LANE.store, LANE.lane, epoch),
    )
    for n, (seq, kind, txn, ts, body, got) in enumerate(rows, 1):
        assert seq == n, f"head office's replica misses seq {n}"
        want = entry_hash(prev, seq, kind, txn, ts, bytes(body))
        assert want == bytes(got), f"seq {seq} does not chain"
        prev = want
    return len(rows)


async def test_a_refused_entry_of_1000_never_stalls_its_lane_and_is_released_once(
    backend: Backend,
    broker: MosquittoBroker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_parse = bodies.parse
    rule = [True]

    def parse(kind: str, body: bytes, store: str) -> bodies.Parsed:
        parsed = real_parse(kind, body, store)
        recalled = isinstance(parsed, bodies.Adjustment) and any(
            line.item == RECALLED for line in parsed.lines
        )
        if rule[0] and recalled:
            raise bodies.BodyError("$.lines[0].item", "item is recalled")
        return parsed

    monkeypatch.setattr(bodies, "parse", parse)
    ho_cfg = backend.config(broker={"port": broker.port, "keepalive": 5})
    ho_toml = stack.write_toml(tmp_path / "headoffice.toml", {"database": backend.database_table()})
    cfg = lane_cfg(tmp_path, broker.port)
    async with Ingest(ho_cfg) as ingest:
        await asyncio.wait_for(ingest.ready.wait(), 10)
        async with Journal(cfg.journal_path, LANE) as journal, Replicator(journal, cfg):
            for n in range(1, ENTRIES + 1):
                kind, body = doc(n)
                await journal.append(kind, body)
            await wait_acked(journal, ENTRIES)
            assert journal.backlog == 0
            epoch = journal.epoch
            seqs = backend.query(
                "SELECT seq FROM journal WHERE store = ? AND lane = ? ORDER BY seq",
                (LANE.store, LANE.lane),
            )
            assert [s for (s,) in seqs] == [n for n in range(1, ENTRIES + 1) if n != POISON]
            assert backend.query("SELECT count(*) FROM documents") == [(ENTRIES - 1,)]
            [(hid, seq, code, reason, hashed)] = backend.query(
                "SELECT id, seq, code, reason, hash FROM held WHERE state = 'held'"
            )
            assert (seq, code) == (POISON, "invalid_body")
            assert "item is recalled" in reason
            assert backend.query("SELECT count(*) FROM stock") == [(0,)]

            # the rule is fixed; the operator releases the entry, twice
            rule[0] = False
            first = await asyncio.to_thread(
                lanesync, "held", "release", str(hid), "--config", str(ho_toml), "--json"
            )
            assert first.returncode == 0, first.stderr
            assert json.loads(first.stdout)[0] == {
                "id": hid,
                "action": "release",
                "state": "released",
                "changed": True,
                "refused": None,
                "code": "invalid_body",
                "applied": 1,
            }
            again = await asyncio.to_thread(
                lanesync, "held", "release", str(hid), "--config", str(ho_toml)
            )
            assert again.returncode == 0, again.stderr
            assert "nothing changed" in again.stdout
            assert backend.query("SELECT count(*) FROM documents") == [(ENTRIES,)]
            assert backend.query("SELECT location, item, qty FROM stock") == [
                ("S001", RECALLED, 7000)
            ]

            # the next sale chains through the held entry; head office checks it at ingest
            await journal.append("sale", {"kind": "sale", "register_no": "T99999", "total": 1})
            await wait_acked(journal, ENTRIES + 1)
            assert journal.backlog == 0
    assert ingest.stats.entries_held == 1
    assert ingest.stats.quarantined == 0  # no chain break was seen anywhere
    verified = await asyncio.to_thread(
        lanesync, "journal", "verify", "--path", str(cfg.journal_path), "--json"
    )
    assert verified.returncode == 0, verified.stderr
    rep = json.loads(verified.stdout)
    assert (rep["ok"], rep["entries"], rep["acked_seq"]) == (True, ENTRIES + 1, ENTRIES + 1)
    # head office's replica now equals the lane's journal and chains from genesis
    assert replica_chain_ok(backend, epoch) == ENTRIES + 1
    lane_rows = lane_journal(cfg.journal_path)
    ho_rows = backend.query(
        "SELECT seq, txn_id, hash FROM journal WHERE store = ? AND lane = ? ORDER BY seq",
        (LANE.store, LANE.lane),
    )
    assert [(s, t, bytes(h)) for s, t, h in ho_rows] == lane_rows
    assert bytes(hashed) == lane_rows[POISON - 1][2]
    assert backend.query("SELECT hwm, last_hash FROM lanes") == [(ENTRIES + 1, lane_rows[-1][2])]
    assert backend.query("SELECT count(*) FROM documents") == [(ENTRIES + 1,)]


def lane_journal(path: Path) -> list[tuple[int, str, bytes]]:
    import sqlite3  # noqa: PLC0415

    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [
            (s, t, bytes(h))
            for s, t, h in db.execute("SELECT seq, txn_id, hash FROM entries ORDER BY seq")
        ]
    finally:
        db.close()
