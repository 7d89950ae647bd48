"""The proof names the exact first seq where the chains differ (issue 16.7), end to end.

A real lane (journal and replicator) and a real head office (ingest over a SQLite file) on a
real Mosquitto. The lane's journal is tampered at one seq below its acked mark (a document
rewritten and the chain after it recomputed, as a forger would), so its hello's checkpoints
only bound where the chains differ. The lane then narrows that range with head office
(OP_PROOF_NARROW) and the status page shows the exact seq. An older head office, which answers
the op with an error, leaves the range verdict, quietly, and replication goes on.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgpack

from agent.journal import Journal
from agent.replicator import Replicator
from headoffice import config as ho_config
from headoffice.ingest import Ingest
from headoffice.statuspage import collect, live_view, render_fragment
from lanesync.broker import MosquittoBroker
from protocol.chain import entry_hash, genesis
from protocol.requests import OP_PROOF_NARROW
from tests.sync.test_sync_restore import LANE, fill, lane_config, query, until

TAMPERED = 77  # the hello's checkpoints at 100 are 100, 99, 98, 96, 92, 84, 68, 36 and 0
RANGE = "identical up to seq 68; first difference between seq 69 and 84"
EXACT = f"identical up to seq {TAMPERED - 1}; differ at seq {TAMPERED}"


def tamper(journal: Path, epoch: int, seq: int) -> None:
    """Rewrite the document at `seq` and recompute the chain from it to the end."""
    db = sqlite3.connect(journal)
    try:
        with db:
            rows = db.execute(
                "SELECT seq, kind, txn_id, ts, body FROM entries WHERE seq >= ? ORDER BY seq",
                (seq,),
            ).fetchall()
            before = db.execute("SELECT hash FROM entries WHERE seq = ?", (seq - 1,)).fetchone()
            prev = bytes(before[0]) if before else genesis(LANE, epoch)
            for s, kind, txn_id, ts, body in rows:
                if s == seq:
                    body = msgpack.packb({"kind": "sale", "n": -1})  # noqa: PLW2901
                prev = entry_hash(prev, s, kind, txn_id, ts, body)
                db.execute("UPDATE entries SET body = ?, hash = ? WHERE seq = ?", (body, prev, s))
    finally:
        db.close()


def shown(ingest: Ingest, ho_db: Path) -> str:
    """The lane's verdict as the status page shows it (and `lanesync headoffice status`)."""
    data = live_view(collect(ho_db, now=None), ingest.stats)
    (lane,) = data["lanes"]
    text = lane["sync"]["text"]
    assert isinstance(text, str)
    assert text in render_fragment(data)
    return text


async def test_tampered_journal_is_shown_at_its_exact_first_differing_seq(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    ho_db, journal_path = tmp_path / "ho.db", tmp_path / "journal.db"
    cfg = lane_config(journal_path, broker.port)
    ho_cfg = ho_config.parse({"database": {"path": str(ho_db)}, "broker": {"port": broker.port}})
    async with Ingest(ho_cfg) as ingest:
        await ingest.ready.wait()
        async with Journal(journal_path, LANE) as journal, Replicator(journal, cfg) as rep:
            await fill(journal, 100)
            await until("100 acked", lambda: journal.acked_seq == 100)
            epoch = journal.epoch
        tamper(journal_path, epoch, TAMPERED)

        # An older head office: it does not know the op and answers with an error reply.
        narrow = ingest.applier.handlers.pop(OP_PROOF_NARROW)
        async with Journal(journal_path, LANE) as journal, Replicator(journal, cfg) as rep:
            await until("the range verdict", lambda: rep.stats.proof == RANGE)
            await until("narrowing given up", lambda: rep.stats.proof_not_narrowed is not None)
            assert "unknown operation 'proof_narrow'" in rep.stats.proof_not_narrowed
            assert rep.stats.proof_requests == 0
            assert rep.stats.proof == RANGE
            assert shown(ingest, ho_db) == RANGE
            assert rep.stats.refused is None
            assert rep.stats.connected

        # Today's head office: the lane narrows the range to the seq.
        ingest.applier.handlers[OP_PROOF_NARROW] = narrow
        async with Journal(journal_path, LANE) as journal, Replicator(journal, cfg) as rep:
            await until("the exact verdict", lambda: rep.stats.proof == EXACT)
            await until("shown", lambda: shown(ingest, ho_db) == EXACT)
            assert (rep.stats.proof_requests, rep.stats.proof_not_narrowed) == (1, None)
            proof = ingest.stats.proofs[(LANE.store, LANE.lane)]
            assert (proof["state"], proof["upto"], proof["hwm"]) == ("differ", TAMPERED - 1, 100)
            assert rep.stats.refused is None
    # Head office's own chain is untouched, and nothing was quarantined.
    assert query(ho_db, "SELECT count(*), max(seq) FROM journal") == [(100, 100)]
    assert query(ho_db, "SELECT count(*) FROM quarantine") == [(0,)]
