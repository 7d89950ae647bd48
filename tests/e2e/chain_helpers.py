"""Helpers for the chain end-to-end test (test_chain_end_to_end.py): a chain's lane config, the
documents a till posts, and read-only views of a head office on PostgreSQL.

A chain's lane keeps identity, connection, paths and numbering only (systemd/agent.example.toml):
no tax, item or setting, and `[catalog] trade_without = false`, so it refuses documents until
head office's master data has arrived. Everything it trades on comes from the catalog loaded at
head office. The waits reuse tests/e2e's `wait_until` and lane journal reader; what they compare
against is head office's PostgreSQL schema instead of a SQLite file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from lanesync import samples, stack
from lanesync.posclient import PosClient
from lanesync.stack import Component
from protocol.identity import LaneId
from tests.e2e.e2e_helpers import FAST_REPLICATION, read_lane_journal, wait_until
from tests.pgutil import Backend

GS1_COMPANY_PREFIX = "5703538"


def chain_lane(workdir: Path, lane: LaneId, broker_port: int, sscc_lane_prefix: str) -> Component:
    """A lane configured as a chain runs it: identity, broker, paths and SSCC numbering only."""
    name = f"agent-{lane.store}-{lane.lane}"
    cfg = stack.write_toml(
        workdir / f"{name}.toml",
        {
            "store": lane.store,
            "lane": lane.lane,
            "journal": {"path": str(stack.journal_path(workdir, lane))},
            "broker": {"host": "127.0.0.1", "port": broker_port, "keepalive": 2},
            "replication": dict(FAST_REPLICATION),
            "api": {"socket": str(stack.api_socket_path(workdir, lane))},
            "catalog": {"trade_without": False},
            "transit": {
                "gs1_company_prefix": GS1_COMPANY_PREFIX,
                "sscc_lane_prefix": sscc_lane_prefix,
                "receive_timeout_s": 5.0,
            },
        },
    )
    return Component(name, ["agent", "--config", str(cfg)], workdir)


def lane_toml(workdir: Path, lane: LaneId) -> str:
    return (workdir / f"agent-{lane.store}-{lane.lane}.toml").read_text(encoding="utf-8")


# --- what a till sends ------------------------------------------------------------------------


def tax_in(amount: int, tax_code: str) -> int:
    """Tax contained in a tax-inclusive amount, half up in minor units (samples' rates)."""
    bp = samples.TAX_RATE_BP[tax_code]
    return (amount * bp + (10000 + bp) // 2) // (10000 + bp)


TAX_CODE = {code: tax for code, _, _, tax in samples.ITEMS}


def sale(lines: list[tuple[str, int, int]], *, price_reason: str | None = None) -> dict[str, Any]:
    """A cash sale of (item, whole quantity, unit price) lines; no currency, tax rate or store
    data of its own: the lane takes those from its catalog and checks the rest against it."""
    out = []
    for n, (item, qty, price) in enumerate(lines, 1):
        amount = qty * price
        line: dict[str, Any] = {
            "line_no": n,
            "item": item,
            "qty": f"{qty}.000",
            "unit_price": price,
            "tax_code": TAX_CODE[item],
            "amount": amount,
            "tax": tax_in(amount, TAX_CODE[item]),
        }
        if price_reason is not None:
            line["price_reason"] = price_reason
        out.append(line)
    total = sum(x["amount"] for x in out)
    return {
        "kind": "sale",
        "customer": None,
        "lines": out,
        "payments": [{"tender": "cash", "amount": total}],
        "total": total,
    }


def purchase_receive(po_id: str, lines: list[tuple[str, int, int]]) -> dict[str, Any]:
    """A purchase order received: (item, whole quantity, unit cost) lines from SUP1."""
    return {
        "kind": "receive_purchase_order",
        "po_id": po_id,
        "supplier": "SUP1",
        "document": f"INV-{po_id}",
        "lines": [
            {"item": item, "qty": f"{qty}.000", "unit_cost": cost, "tax_code": TAX_CODE[item]}
            for item, qty, cost in lines
        ],
    }


def call(socket_path: Path, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    client = PosClient(str(socket_path), timeout=15)
    try:
        return client.request(method, path, body)
    finally:
        client.close()


def make_transit(socket_path: Path, dest: str, lines: list[tuple[str, int]]) -> tuple[str, str]:
    """A transit sale (mode 8) to `dest`, carried by staff E7; returns its txn_id (the open
    sale's id) and the parcel's SSCC."""
    st, open_sale = call(socket_path, "POST", "/v1/sales", {"mode": 8, "staff": "E7"})
    assert st == 201, open_sale
    for item, qty in lines:
        body = {"item": item, "qty": f"{qty}.000"}
        st, out = call(socket_path, "POST", f"/v1/sales/{open_sale['id']}/lines", body)
        assert st == 201, out
    pay = {
        "tender": "cash",
        "amount": 0,
        "transit": {"dest_store": dest, "by": {"type": "staff", "id": "E7"}},
    }
    st, done = call(socket_path, "POST", f"/v1/sales/{open_sale['id']}/payments", pay)
    assert st == 201, done
    return str(open_sale["id"]), str(done["sscc"])


def receive_transit(socket_path: Path, sscc: str) -> str:
    """Scan the parcel at the destination and accept it; returns the accept's txn_id."""
    st, session = call(socket_path, "POST", "/v1/transit/receive", {"sscc": sscc})
    assert st == 200, session
    st, done = call(socket_path, "POST", f"/v1/transit/receive/{session['id']}/accept", {})
    assert st == 201, done
    return str(done["txn_id"])


# --- head office on PostgreSQL ----------------------------------------------------------------


def ho_rows(ho: Backend, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of a query at head office (started, so its schema is there)."""
    return ho.query(sql, args)


def ho_hwm(ho: Backend, lane: LaneId, epoch: int) -> int:
    rows = ho_rows(
        ho,
        "SELECT hwm FROM lanes WHERE store = ? AND lane = ? AND epoch = ?",
        lane.store,
        lane.lane,
        epoch,
    )
    return int(rows[0][0]) if rows else 0


def wait_drained(ho: Backend, journal: Path, lane: LaneId, diag: Any, timeout: float = 30) -> None:
    """Head office committed every entry the lane journaled, and the lane knows it (acked)."""

    def done() -> bool:
        j = read_lane_journal(journal)
        return j.acked_seq == j.last_seq and ho_hwm(ho, lane, j.epoch) == j.last_seq

    wait_until(done, timeout, f"lane {lane} drained to head office", diag)


def leased_epochs(ho: Backend, lane: LaneId) -> set[int]:
    rows = ho_rows(
        ho, "SELECT epoch FROM sscc_leases WHERE store = ? AND lane = ?", lane.store, lane.lane
    )
    return {int(r[0]) for r in rows}


@dataclass(frozen=True, slots=True)
class HeldDocument:
    store: str
    lane: str
    kind: str
    catalog_version: int | None
    body: dict[str, Any]


def ho_documents(ho: Backend) -> tuple[dict[str, HeldDocument], Counter[str]]:
    """Head office's documents by txn_id (with the journaled body), and how often each txn_id
    is in `documents` and among applied journal entries (exactly once is 2 per txn_id)."""
    docs = ho_rows(ho, "SELECT txn_id, store, lane, kind, catalog_version FROM documents")
    bodies = {
        str(t): msgpack.unpackb(bytes(b), raw=False)
        for t, b in ho_rows(ho, "SELECT txn_id, body FROM journal WHERE applied = 1")
    }
    seen: Counter[str] = Counter(str(r[0]) for r in docs)
    seen.update(str(t) for (t,) in ho_rows(ho, "SELECT txn_id FROM journal WHERE applied = 1"))
    held = {
        str(t): HeldDocument(s, ln, k, None if v is None else int(v), bodies.get(str(t), {}))
        for t, s, ln, k, v in docs
    }
    return held, seen


def lanesync_json(*argv: str) -> Any:
    """Run a `lanesync` command as an operator does; its --json output."""
    done = subprocess.run(  # our own interpreter and module, argv built here
        [sys.executable, "-m", "lanesync.cli", *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, f"lanesync {' '.join(argv)}: {done.stderr}"
    return json.loads(done.stdout)
