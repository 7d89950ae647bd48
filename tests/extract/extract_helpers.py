"""Head-office fixtures for extract tests: real chained batches applied through SqliteStore."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import msgpack

from headoffice.extract.config import ExtractConfig
from headoffice.store.sqlite import SqliteStore
from protocol.chain import entry_hash, genesis
from protocol.identity import LaneId
from protocol.messages import Entry, JournalBatch

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000
LATER = T0 + 30 * DAY


class HeadOffice:
    """A head-office database that documents reach the way ingest applies them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[LaneId, list[Entry]] = {}
        self.n = 0

    def add(self, doc: dict[str, Any], *, ts: int | None = None) -> str:
        """Journal `doc` on its store/lane (next seq) and apply it; returns its txn_id."""
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
        store = SqliteStore(self.path)
        try:
            store.apply_batch(JournalBatch(lane, 7, prev, [e]), when)
            store.commit()
        finally:
            store.close()
        return txn


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


def config(tmp: Path, **kw: Any) -> ExtractConfig:
    return ExtractConfig(database=tmp / "ho.db", output_dir=tmp / "out", **kw)
