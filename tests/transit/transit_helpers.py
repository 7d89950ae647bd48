"""Helpers for the transit tests: simulated lanes feeding a real head-office store.

A module of its own name (not conftest.py, which tests/e2e has too), so tests import it
unambiguously whichever folders pytest collects together.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgpack

from headoffice.db import Database
from protocol.chain import entry_hash, genesis
from protocol.identity import LaneId
from protocol.messages import Entry, JournalBatch, Request

SSCC1 = "357035380100000010"
SSCC2 = "357035380100000027"


def transit_doc(
    no: str = "T10001",
    sscc: str | None = SSCC1,
    source: str = "A",
    dest: str = "B",
    lines: tuple[tuple[str, str], ...] = (("P1000", "5.000"), ("P2000", "1.500")),
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "transit_inventory",
        "register_no": no,
        "transit_no": no,
        "source_store": source,
        "dest_store": dest,
        "by": {"type": "staff", "id": "E7"},
        "currency": "EUR",
        "staff": "E7",
        "lines": [
            {"line_no": i + 1, "item": item, "qty": qty} for i, (item, qty) in enumerate(lines)
        ],
    }
    if sscc is not None:
        doc["sscc"] = sscc
    return doc


class Lane:
    """One lane epoch's journal, chained like agent.journal, applied to a head-office store."""

    def __init__(self, store: str, lane: str, epoch: int = 7) -> None:
        self.lane = LaneId(store, lane)
        self.epoch = epoch
        self.entries: list[Entry] = []

    def batch(self, kind: str, doc: dict[str, Any], txn_id: str | None = None) -> JournalBatch:
        seq = len(self.entries) + 1
        prev = self.entries[-1].hash if self.entries else genesis(self.lane, self.epoch)
        body = msgpack.packb(doc, use_bin_type=True)
        txn = txn_id or str(uuid.uuid4())
        ts = 1_700_000_000_000 + seq
        e = Entry(seq, kind, txn, ts, body, entry_hash(prev, seq, kind, txn, ts, body))
        self.entries.append(e)
        return JournalBatch(self.lane, self.epoch, prev, [e])

    def journal(
        self, store: Database, kind: str, doc: dict[str, Any], txn_id: str | None = None
    ) -> str:
        b = self.batch(kind, doc, txn_id)
        res = store.apply_batch(b, 1_700_000_000_000)
        store.commit()
        assert res.applied == 1, res
        return b.entries[0].txn_id

    def request(self, op: str, **args: Any) -> Request:
        return Request(self.lane, f"c{uuid.uuid4().hex[:12]}", op, args)


def stock(store: Database, location: str, item: str) -> str:
    row = store.sql.fetchone(
        "SELECT qty FROM stock WHERE location = ? AND item = ?", (location, item)
    )
    n = int(row[0]) if row else 0
    return f"{n / 1000:.3f}"
