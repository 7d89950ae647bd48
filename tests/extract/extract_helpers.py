"""Head-office fixtures for extract tests: real chained batches applied through the store of
the test's backend (SQLite file or PostgreSQL schema), as ingest applies them."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import msgpack

from headoffice.db import Database, open_target
from headoffice.extract.config import ExtractConfig
from headoffice.projections import PROJECTIONS
from protocol.chain import entry_hash, genesis
from protocol.identity import LaneId
from protocol.messages import Entry, JournalBatch

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000
LATER = T0 + 30 * DAY


class HeadOffice:
    """A head-office database that documents reach the way ingest applies them.

    `target` is a SQLite file or a postgresql:// URL; `work` is where the extract writes.
    """

    def __init__(self, target: Path | str, work: Path) -> None:
        self.target = target
        self.work = work
        self.entries: dict[LaneId, list[Entry]] = {}
        self.n = 0
        self._store: Database | None = None

    @property
    def is_pg(self) -> bool:
        return isinstance(self.target, str)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def store(self) -> Database:
        if self._store is None:
            self._store = open_target(self.target, projections=PROJECTIONS)
        return self._store

    def add(self, doc: dict[str, Any], *, ts: int | None = None) -> str:
        """Journal `doc` on its store/lane (next seq) and apply it; returns its txn_id."""
        batch, when, txn = self.prepare(doc, ts=ts)
        store = self.store()
        store.apply_batch(batch, when)
        store.commit()
        return txn

    def prepare(
        self, doc: dict[str, Any], *, ts: int | None = None
    ) -> tuple[JournalBatch, int, str]:
        """The chained one-entry batch that journals `doc` next on its lane, not yet applied
        (a test applies it through a store of its own); with its time and txn_id."""
        lane = LaneId(doc.get("store", "S1"), doc.get("lane", "L1"))
        doc = {"store": lane.store, "lane": lane.lane, "currency": "EUR", **doc}
        self.n += 1
        txn = doc.pop("txn_id", None) or str(uuid.UUID(int=self.n, version=4))
        entries = self.entries.setdefault(lane, [])
        prev = entries[-1].hash if entries else genesis(lane, 7)
        seq = len(entries) + 1
        body = msgpack.packb(doc, use_bin_type=True)
        when = T0 + self.n if ts is None else ts
        e = Entry(
            seq, doc["kind"], txn, when, body, entry_hash(prev, seq, doc["kind"], txn, when, body)
        )
        entries.append(e)
        return JournalBatch(lane, 7, prev, [e]), when, txn


def line(item: str, qty: str, price: int, tax_code: str = "VAT_STD", **kw: Any) -> dict[str, Any]:
    milli = int(qty.replace(".", ""))
    amount = (1 if milli >= 0 else -1) * ((abs(milli) * price + 500) // 1000)
    return {
        "item": item,
        "qty": qty,
        "unit_price": price,
        "tax_code": tax_code,
        "amount": amount,
        "tax": amount // 6,
        **kw,
    }


def sale(
    register_no: str,
    customer: str | None,
    lines: list[dict[str, Any]],
    payments: list[dict[str, Any]] | None = None,
    *,
    kind: str = "sale",
    store: str = "S1",
    lane: str = "L1",
    day: str = "2026-01-01",
    **kw: Any,
) -> dict[str, Any]:
    for i, ln in enumerate(lines, 1):
        ln.setdefault("line_no", i)
    total = sum(ln["amount"] for ln in lines)
    pays = payments if payments is not None else [{"tender": "cash", "amount": total}]
    return {
        "kind": kind,
        "register_no": register_no,
        "store": store,
        "lane": lane,
        "business_day": day,
        "customer": customer,
        "lines": lines,
        "payments": pays,
        "total": total,
        **kw,
    }


def card(amount: int, scheme: str = "visa", *, banked: bool = True) -> dict[str, Any]:
    return {
        "tender": "card",
        "amount": amount,
        "token": "tok_abcdefgh",
        "scheme": scheme,
        "last4": "4242",
        "banked": banked,
    }


def config(ho: HeadOffice, **kw: Any) -> ExtractConfig:
    """An extract configuration over `ho`'s database, writing into `ho.work / "out"`."""
    if isinstance(ho.target, str):
        return ExtractConfig(database_url=ho.target, output_dir=ho.work / "out", **kw)
    return ExtractConfig(database=ho.target, output_dir=ho.work / "out", **kw)
