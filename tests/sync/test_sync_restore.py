"""Restores from backups end with every confirmed document at head office once (issue 16.7).

Real lanes (journal and replicator) and a real head office (ingest over a SQLite file) on a
real Mosquitto, the files copied with SQLite's online backup as a backup tool would.

- Head office restored from an older backup: it holds less than the lane had acked. Its new
  process announces itself, the lane says hello, head office asks it to resend from its own
  mark (below the lane's acked mark) and the lane does, from its retention.
- A lane restored from an old copy of its journal: it journals new documents at seqs head
  office already holds of that epoch. Head office refuses its hello with the reason, the lane
  sends nothing (no forked chain reaches head office), and after the documented recovery (the
  file moved aside: a new journal, a new epoch, the documents confirmed since the copy submitted
  again) head office holds every confirmed document once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import msgpack

from agent import config as agent_config
from agent.journal import Journal
from agent.replicator import Replicator
from headoffice import config as ho_config
from headoffice.ingest import Ingest
from lanesync.broker import MosquittoBroker
from protocol.identity import LaneId

LANE = LaneId("S9", "L2")


def lane_config(journal: Path, port: int) -> agent_config.AgentConfig:
    return agent_config.parse(
        {
            "store": LANE.store,
            "lane": LANE.lane,
            "journal": {"path": str(journal)},
            "broker": {"port": port, "keepalive": 2},
            "replication": {
                "linger_ms": 0,
                "backoff_initial_s": 0.05,
                "backoff_max_s": 0.3,
                "batch_max_entries": 10,
                "ack_timeout_s": 30.0,  # recovery must not come from the ack timeout
            },
            "api": {"socket": str(journal.parent / "api.sock")},
        }
    )


def backup(src: Path, dest: Path) -> None:
    """SQLite's online backup: a consistent copy of a database in use."""
    with sqlite3.connect(src) as a, sqlite3.connect(dest) as b:
        a.backup(b)
    a.close()
    b.close()


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


async def fill(journal: Journal, n: int) -> None:
    for i in range(n):
        await journal.append("sale", {"kind": "sale", "n": i})


async def until(what: str, cond: Any, timeout: float = 15.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def confirmed(journal: Path) -> list[str]:
    return [r[0] for r in query(journal, "SELECT txn_id FROM entries ORDER BY seq")]


def at_head_office(ho_db: Path) -> list[str]:
    return [r[0] for r in query(ho_db, "SELECT txn_id FROM documents")]


async def test_headoffice_restored_from_older_backup_gets_back_what_it_lost(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    ho_db, journal_path = tmp_path / "ho.db", tmp_path / "journal.db"
    cfg = lane_config(journal_path, broker.port)
    ho_cfg = ho_config.parse({"database": {"path": str(ho_db)}, "broker": {"port": broker.port}})
    async with Journal(journal_path, LANE) as journal:
        first = Ingest(ho_cfg)
        await first.__aenter__()
        try:
            await first.ready.wait()
            async with Replicator(journal, cfg) as rep:
                await fill(journal, 30)
                await until("30 acked", lambda: journal.acked_seq == 30)
                backup(ho_db, tmp_path / "ho-backup.db")  # last night's backup
                await fill(journal, 30)
                await until("60 acked", lambda: journal.acked_seq == 60)
                await first.__aexit__(None, None, None)  # the server dies
                # ... and is restored from the backup: it holds seq 30 of 60 acked.
                for leftover in tmp_path.glob("ho.db*"):
                    leftover.unlink()
                (tmp_path / "ho-backup.db").rename(ho_db)
                assert query(ho_db, "SELECT max(hwm) FROM lanes") == [(30,)]
                restored = Ingest(ho_cfg)
                async with restored:
                    await until(
                        "head office back at 60",
                        lambda: query(ho_db, "SELECT max(hwm) FROM lanes") == [(60,)],
                    )
                    assert restored.stats.restores_detected >= 1
                    assert restored.stats.entries_applied == 30  # what the backup lacked
                    proof = restored.stats.proofs[(LANE.store, LANE.lane)]
                    assert proof["state"] == "restored"
                    await fill(journal, 5)  # and the lane goes on
                    await until("65 acked", lambda: journal.acked_seq == 65)
                assert rep.stats.restores_seen >= 1
                assert rep.stats.refused is None
        finally:
            if first.session is not None and not first.session.done():
                await first.__aexit__(None, None, None)
    lane_docs = confirmed(journal_path)
    ho_docs = at_head_office(ho_db)
    assert len(lane_docs) == 65
    assert sorted(ho_docs) == sorted(lane_docs)  # every confirmed document, once
    assert query(ho_db, "SELECT count(*), count(DISTINCT seq), max(seq) FROM journal") == [
        (65, 65, 65)
    ]
    assert query(ho_db, "SELECT count(*) FROM quarantine") == [(0,)]


async def test_lane_restored_from_old_journal_copy_is_refused_not_forked(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    ho_db, journal_path = tmp_path / "ho.db", tmp_path / "journal.db"
    cfg = lane_config(journal_path, broker.port)
    ho_cfg = ho_config.parse({"database": {"path": str(ho_db)}, "broker": {"port": broker.port}})
    async with Ingest(ho_cfg) as ingest:
        await ingest.ready.wait()
        async with Journal(journal_path, LANE) as journal, Replicator(journal, cfg):
            await fill(journal, 30)
            await until("30 acked", lambda: journal.acked_seq == 30)
            backup(journal_path, tmp_path / "journal-copy.db")  # the till's old copy
            await fill(journal, 20)
            await until("50 acked", lambda: journal.acked_seq == 50)
            epoch = journal.epoch
        sent_before = confirmed(journal_path)
        # The till's disk is replaced and the old copy put back: same epoch, 30 entries.
        for f in tmp_path.glob("journal.db*"):
            f.rename(tmp_path / ("failed-" + f.name))
        (tmp_path / "journal-copy.db").rename(journal_path)
        async with Journal(journal_path, LANE) as journal:
            assert (journal.epoch, journal.last_seq) == (epoch, 30)
            await fill(journal, 5)  # sold after the restore: seqs 31-35 again, other documents
            async with Replicator(journal, cfg) as rep:
                await until("the refusal", lambda: rep.stats.refused is not None)
                refused = rep.stats.refused
                assert refused is not None
                assert "restored from an old copy" in refused
                assert "ends at seq 35 but head office already holds seq 50" in refused
                sent = rep.stats.batches_sent  # at most what left before the answer came
                await fill(journal, 2)
                await asyncio.sleep(0.5)  # a moment in which a forking lane would send them
                assert rep.stats.batches_sent == sent
                assert journal.acked_seq == 30  # nothing of the fork left the outbox
            proof = ingest.stats.proofs[(LANE.store, LANE.lane)]
            assert proof["state"] == "refused"
            unsent = await journal.read_from(31, 100)
        # Head office kept its chain: nothing forked applied, nothing quarantined.
        assert query(ho_db, "SELECT count(*), max(seq) FROM journal") == [(50, 50)]
        assert query(ho_db, "SELECT count(*) FROM quarantine") == [(0,)]
        assert sorted(at_head_office(ho_db)) == sorted(sent_before)

        # Recovery: the restored file moved aside, a new journal (new epoch), and the seven
        # documents confirmed since the restore submitted again with their txn_ids.
        journal_path.rename(tmp_path / "restored-journal.db")
        async with Journal(journal_path, LANE) as journal, Replicator(journal, cfg) as rep:
            assert journal.epoch != epoch
            for e in unsent:
                await journal.append(e.kind, msgpack.unpackb(e.body), txn_id=e.txn_id, ts=e.ts)
            await until("the resubmitted seven acked", lambda: journal.acked_seq == 7)
            assert rep.stats.refused is None
    everything = sent_before + [e.txn_id for e in unsent]
    assert len(everything) == 57
    assert sorted(at_head_office(ho_db)) == sorted(everything)  # every one, once
