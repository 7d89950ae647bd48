"""Head-office stock per location from every kind (issue 15.6, seed 001), on SQLite and
PostgreSQL: documents applied through the real store as ingest applies them, the catalog
loaded through the real loader, and the extract's postings run over the same database."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from headoffice.catalog import load as loader
from headoffice.extract import job
from headoffice.stock import report
from protocol.chain import entry_hash, genesis
from protocol.identity import LaneId
from protocol.messages import Entry, JournalBatch
from tests.extract.extract_helpers import LATER, HeadOffice, config, line, sale

LANESYNC = str(Path(sys.executable).parent / "lanesync")  # the console script, as installed
TYPES = (
    "code,name,inventory_effect\n"
    "SALE,Sale,decrease\n"
    "RETI,Return to stock,increase\n"
    "RETN,Return without stock,none\n"
    "RETW,Return written off twice,decrease\n"
)


def qty(ho: HeadOffice, location: str, item: str) -> str:
    rows = report.levels(ho.store().sql, store=location, item=item)
    return rows[0]["qty"] if rows else "0.000"


def catalog(ho: HeadOffice, tmp: Path, settings: list[dict[str, Any]]) -> int | None:
    sql = ho.store().sql
    t = tmp / "txn_types.csv"
    t.write_text(TYPES, encoding="utf-8")
    loader.load_file(sql, "txn_types", t, upsert=True)
    s = tmp / "settings.jsonl"
    s.write_text("".join(json.dumps(r) + "\n" for r in settings), encoding="utf-8")
    return loader.load_file(sql, "settings", s).version


def adjust(store: str, item: str, q: str) -> dict[str, Any]:
    return {
        "kind": "stock_adjustment",
        "store": store,
        "reason": "COUNT",
        "lines": [{"line_no": 1, "item": item, "qty": q}],
    }


def refund(no: str, store: str, item: str, q: str, **kw: Any) -> dict[str, Any]:
    return sale(no, None, [line(item, q, 500)], kind="sale_refund", store=store, **kw)


def test_sales_are_counted_five_sold_after_an_adjustment_of_ten(ho: HeadOffice) -> None:
    """The new user's report: `transits --stock` showed -5 after 5 sold and one adjustment."""
    ho.add(adjust("S1", "P1", "10.000"))
    ho.add(sale("T10001", None, [line("P1", "2.000", 500), line("P2", "1.000", 300)]))
    ho.add(sale("T10002", None, [line("P1", "3.000", 500)]))
    assert qty(ho, "S1", "P1") == "5.000"
    assert qty(ho, "S1", "P2") == "-1.000"  # sold without stock on record: negative, not hidden


def test_returns_move_by_their_return_types_inventory_effect(
    ho: HeadOffice, tmp_path: Path
) -> None:
    catalog(
        ho,
        tmp_path,
        [
            {"scope": "chain", "name": "ReturnTxnType", "value": "RETI"},
            {"scope": "store", "store": "S2", "name": "ReturnTxnType", "value": "RETN"},
            {
                "scope": "lane",
                "store": "S2",
                "lane": "L9",
                "name": "ReturnTxnType",
                "value": "RETW",
            },
        ],
    )
    for s in ("S1", "S2"):
        ho.add(adjust(s, "P1", "10.000"))
    ho.add(refund("T1", "S1", "P1", "2.000"))  # chain RETI: increase
    assert qty(ho, "S1", "P1") == "12.000"
    ho.add(refund("T2", "S2", "P1", "2.000"))  # store S2: RETN, no effect: nothing moves
    assert qty(ho, "S2", "P1") == "10.000"
    ho.add(refund("T3", "S2", "P1", "1.000", lane="L9"))  # lane override RETW: decrease
    assert qty(ho, "S2", "P1") == "9.000"
    ho.add(refund("T4", "S2", "P1", "4.000", return_type="RETI"))  # the document's own type
    assert qty(ho, "S2", "P1") == "13.000"
    # a type the catalog does not list: applied, nothing moved (logged and counted)
    ho.add(refund("T4b", "S2", "P1", "4.000", return_type="NOPE"))
    assert qty(ho, "S2", "P1") == "13.000"
    assert ho.store().sql.fetchone("SELECT count(*) FROM documents WHERE kind = 'sale_refund'") == (
        5,
    )
    # an exchange: the positive line is sold, the negative one returned by S1's type (RETI)
    ho.add(
        sale(
            "T5",
            None,
            [line("P1", "-1.000", 500), line("P2", "1.000", 500)],
            kind="sale_exchange",
        )
    )
    assert (qty(ho, "S1", "P1"), qty(ho, "S1", "P2")) == ("13.000", "-1.000")


def test_a_return_checked_against_an_older_catalog_uses_that_versions_type(
    ho: HeadOffice, tmp_path: Path
) -> None:
    v1 = catalog(ho, tmp_path, [{"scope": "chain", "name": "ReturnTxnType", "value": "RETI"}])
    v2 = catalog(ho, tmp_path, [{"scope": "chain", "name": "ReturnTxnType", "value": "RETN"}])
    assert v1 is not None
    assert v2 is not None
    assert v2 > v1
    ho.add(refund("T1", "S1", "P1", "2.000", catalog_version=v1))  # the lane was offline on v1
    ho.add(refund("T2", "S1", "P1", "5.000", catalog_version=v2))
    ho.add(refund("T3", "S1", "P1", "7.000"))  # no version recorded: today's catalog (RETN)
    assert qty(ho, "S1", "P1") == "2.000"
    got = [
        r[0]
        for r in ho.store().sql.fetchall(
            "SELECT catalog_version FROM documents WHERE kind = 'sale_refund' ORDER BY ts"
        )
    ]
    assert got == [v1, v2, None]  # a document that records none (an older lane's): NULL


def test_purchases_supplier_returns_and_transits_share_one_stock_table(ho: HeadOffice) -> None:
    ho.add(
        {
            "kind": "receive_purchase_order",
            "store": "S1",
            "po_id": "PO1",
            "supplier": "SUP1",
            "lines": [
                {"line_no": 1, "item": "P1", "qty": "12.000", "unit_cost": 100},
                {"line_no": 2, "item": "P2", "counted_zero": True, "unit_cost": 100},
            ],
        }
    )
    ho.add(
        {
            "kind": "supplier_return",
            "store": "S1",
            "supplier": "SUP1",
            "lines": [{"line_no": 1, "item": "P1", "qty": "2.000"}],
        }
    )
    assert (qty(ho, "S1", "P1"), qty(ho, "S1", "P2")) == ("10.000", "0.000")
    ho.add(
        {
            "kind": "transit_inventory",
            "store": "S1",
            "register_no": "T9",
            "transit_no": "T9",
            "source_store": "S1",
            "dest_store": "S2",
            "lines": [{"line_no": 1, "item": "P1", "qty": "4.000"}],
        }
    )
    ho.add(sale("T10", None, [line("P1", "1.000", 500)]))
    assert (qty(ho, "S1", "P1"), qty(ho, "@transit", "P1")) == ("5.000", "4.000")
    # one table: `transits --stock` lists what `stock` lists
    assert [r["location"] for r in report.levels(ho.store().sql, item="P1")] == ["@transit", "S1"]


def test_redelivery_and_resubmission_move_stock_once(ho: HeadOffice) -> None:
    doc = sale(
        "T1", None, [line("P1", "2.000", 500)], txn_id="0190f0f0-0000-7000-8000-000000000001"
    )
    batch, when, _ = ho.prepare(dict(doc))
    store = ho.store()
    store.apply_batch(batch, when)
    store.commit()
    store.apply_batch(batch, when)  # redelivered
    store.commit()
    # the POS resubmits the same document into a recreated journal (a new epoch)
    lane = LaneId("S1", "L1")
    e = batch.entries[0]
    prev = genesis(lane, 8)
    h = entry_hash(prev, 1, e.kind, e.txn_id, e.ts, e.body)
    res = store.apply_batch(
        JournalBatch(lane, 8, prev, [Entry(1, e.kind, e.txn_id, e.ts, e.body, h)]), when
    )
    store.commit()
    assert res.duplicate_txn == 1, res
    assert qty(ho, "S1", "P1") == "-2.000"


def test_extract_postings_agree_with_stock(ho: HeadOffice, tmp_path: Path) -> None:
    catalog(
        ho,
        tmp_path,
        [
            {"scope": "chain", "name": "ReturnTxnType", "value": "RETI"},
            {"scope": "store", "store": "S2", "name": "ReturnTxnType", "value": "RETN"},
        ],
    )
    ho.add(sale("T1", None, [line("P1", "2.000", 500), line("P2", "1.500", 200)]))
    ho.add(sale("T2", None, [line("P1", "1.000", 500)], store="S2"))
    ho.add(refund("T3", "S1", "P1", "1.000"))
    ho.add(refund("T4", "S2", "P1", "1.000", return_type="RETN"))
    ho.add(refund("T5", "S2", "P2", "3.000", return_type="RETW"))
    ho.add(
        sale(
            "T6",
            "C1",
            [line("P1", "4.000", 500, open_qty="1.000")],
            [{"tender": "cash", "amount": 2000}],
            kind="layaway",
        )
    )
    cfg = config(
        ho,
        default_return_type="RETI",
        return_types={"RETI": 1, "RETN": 0, "RETW": -1},
    )
    # the extract's return types are configured per chain; S2's store-level setting is RETN,
    # so its refunds name their type on the document (as a lane checked against the catalog
    # does), and the two must then agree line for line
    rep = job.run(cfg, now_ms=LATER)
    assert rep.dir is not None, rep
    rows = [json.loads(x) for x in (Path(rep.dir) / "postings.jsonl").read_text().splitlines()]
    posted: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        if r["type"] == "line":
            posted[(r["warehouse"], r["item"])] += int(r["stock_qty"].replace(".", ""))
    held = {
        (r["location"], r["item"]): int(r["qty"].replace(".", ""))
        for r in report.levels(ho.store().sql)
    }
    assert {k: v for k, v in posted.items() if v} == {k: v for k, v in held.items() if v}
    assert held[("S1", "P1")] == -2000 + 1000 - 3000  # 2 sold, 1 back, layaway: 3 of 4 taken
    assert held[("S2", "P2")] == -3000  # RETW: decrease


def test_lanesync_stock_command(ho: HeadOffice, tmp_path: Path) -> None:
    ho.add(adjust("S1", "P1", "10.000"))
    ho.add(sale("T1", None, [line("P1", "5.000", 500)]))
    ho.add(adjust("S2", "P9", "1.000"))
    ho.close()
    cfg = tmp_path / "ho.toml"
    if ho.is_pg:
        cfg.write_text(f'[database]\nurl = "{ho.target}"\n', encoding="utf-8")
    else:
        cfg.write_text(f'[database]\npath = "{ho.target}"\n', encoding="utf-8")
    run = [LANESYNC, "stock", "--config", str(cfg), "--json"]
    out = subprocess.run([*run, "--store", "S1"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["stock"] == [
        {"location": "S1", "item": "P1", "qty": "5.000", "in_transit": False}
    ]
    tr = subprocess.run(
        [LANESYNC, "transits", "--config", str(cfg), "--stock", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert tr.returncode == 0, tr.stderr
    assert {(s["location"], s["item"], s["qty"]) for s in json.loads(tr.stdout)["stock"]} == {
        ("S1", "P1", "5.000"),
        ("S2", "P9", "1.000"),
    }
    missing = subprocess.run(
        [*run[:-3], "--config", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2
    assert "nope.toml" in missing.stderr
