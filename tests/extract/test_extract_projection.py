"""The extract's projection (issue 17.3): ingest writes each sale document's header, lines and
payments as rows in the transaction that applies it, and the extract reads those instead of
decoding bodies. Today's path, decoding every body, stays for documents without a projection
(applied before schema 6, or ones the projection skips); both must give the same bytes."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

from headoffice.db.base import check_entries
from headoffice.extract import job, projection
from headoffice.extract.documents import DocumentError, read_rows, to_doc, unpack
from protocol.identity import LaneId
from tests.extract.extract_helpers import LATER, T0, HeadOffice, card, config, line, sale
from tests.extract.test_extract_backends import BATCHES, _bookkeeping, _day_one, _scenario
from tests.pgutil import Backend, pg_schema


@pytest.fixture(autouse=True)
def projecting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Head office projects here (it does not by default: projection.ENABLED)."""
    monkeypatch.setattr(projection, "ENABLED", True)


def _odd_ones(ho: HeadOffice) -> None:
    """Documents the projection must skip (a value its columns cannot hold as it came) or
    that the extract rejects; the extract must treat them exactly as before."""
    bad_scheme = card(500)
    bad_scheme["scheme"] = 7  # passed through by the parser: a TEXT column would make it "7"
    ho.add(sale("T80001", "C1", [line("P1", "1.000", 500)], [bad_scheme], day="2026-01-02"))
    huge = line("P2", "1.000", 100)
    huge["unit_price"] = 2**64 - 1  # beyond BIGINT
    ho.add(sale("T80002", None, [huge], day="2026-01-02"))
    nul = line("P3", "2.000", 150, description="a\x00b")
    ho.add(sale("T80003", "C2", [nul], day="2026-01-02"))
    ho.add({"kind": "sale", "register_no": "T80004", "lines": "none"})  # rejected


def _count(ho: HeadOffice, table: str) -> int:
    db = job.open_db(config(ho))
    try:
        row = db.fetchone(f"SELECT count(*) FROM {table}")
        assert row is not None
        return int(row[0])
    finally:
        db.close()


def _files(ho: HeadOffice) -> tuple[dict[str, bytes], list[Any]]:
    """Every file of the scenario's runs and the bookkeeping they left."""
    _odd_ones(ho)
    files = _scenario(ho)
    return files, _bookkeeping(config(ho))


def test_reads_from_the_projection_give_todays_bytes(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference scenario (two runs, an ERP correction between, every job, rejects) with
    the projection written at ingest, against the same with none written: today's path for
    every document. Same files byte for byte, same bookkeeping."""
    runs = {}
    with contextlib.ExitStack() as stack:
        for on in (True, False):
            monkeypatch.setattr(projection, "ENABLED", on)
            target: Path | str = backend.target
            if not on:
                target = stack.enter_context(pg_schema()) if backend.is_pg else tmp_path / "b.db"
            work = tmp_path / ("projected" if on else "bodies")
            work.mkdir()
            ho = HeadOffice(target, work)
            try:
                files, books = _files(ho)
                runs[on] = (files, books, _count(ho, "extract_docs"), _count(ho, "extract_lines"))
            finally:
                ho.close()
    files, books, docs, lines = runs[True]
    assert docs == 36 + 1 + 6  # the good documents were projected, the odd ones were not
    assert lines > docs
    assert runs[False][2:] == (0, 0)
    assert sorted(runs[False][0]) == sorted(files)
    for name, data in files.items():
        assert runs[False][0][name] == data, f"{name} differs between projection and bodies"
    assert runs[False][1] == books


def test_projected_documents_carry_their_doc_and_no_body(ho: HeadOffice) -> None:
    """What read_rows gives for a projected document: its SaleDoc, equal to the one its body
    decodes to, and no body (nor one to decode later)."""
    ho.add(sale("T1", "C1", [line("P1", "1.500", 200), line("P2", "-1.000", 90)], [card(210)]))
    ho.add({"kind": "sale", "register_no": "T2", "lines": "none"})
    db = job.open_db(config(ho))
    try:
        rows = list(read_rows(db, 0))
    finally:
        db.close()
    good, bad = rows
    assert good.doc is not None
    assert good.body is None
    assert [ln.qty for ln in good.doc.lines] == [1500, -1000]
    assert good.doc.payments[0].banked is True
    assert good.doc.ts == T0 + 1
    assert bad.doc is None
    assert bad.body is not None
    with pytest.raises(DocumentError, match=r"\$\.lines"):
        to_doc(bad)
    decoded = good._replace(doc=None, body=ho.entries[LaneId("S1", "L1")][0].body)
    assert to_doc(decoded) == good.doc


@pytest.mark.parametrize(
    "module",
    [
        "headoffice.extract.db",
        "headoffice.extract.documents",
        "headoffice.extract.projection",
        "headoffice.extract.job",
        "headoffice.db",
        "headoffice.db.base",
        "headoffice.db.sql",
        "headoffice.ingest",
    ],
)
def test_store_and_extract_import_each_other_in_any_order(module: str) -> None:
    """The store imports the projection, which reads documents.py, which the extract's db
    module (importing the store) also serves: whichever a process imports first must work."""
    proc = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_both_read_paths_give_the_same_plan(ho: HeadOffice) -> None:
    """read_rows with the projection and with bodies only (today's path, kept for the bench):
    one plan, job by job, on the reference scenario's first day and the odd documents."""
    _odd_ones(ho)
    _day_one(ho)
    cfg = config(ho, **BATCHES)  # type: ignore[arg-type]
    db = job.open_db(cfg)
    try:
        plans = [
            job.compute(
                read_rows(db, 0, projected=p), cfg, now_ms=LATER, cursors={}, erp={}, next_tc=1
            )
            for p in (True, False)
        ]
        rows = list(read_rows(db, 0))
    finally:
        db.close()
    assert sum(r.doc is not None for r in rows) == 36 + 1
    assert plans[0].rollups
    assert plans[0].postings
    assert plans[0].rejects
    assert plans[0] == plans[1]


def test_entries_without_rows_are_projected_at_flush(ho: HeadOffice) -> None:
    """A held entry released later reaches the flush without rows from check_batch: project
    makes them itself, and skips what it cannot hold."""
    good = ho.prepare(sale("T7", "C1", [line("P1", "2.000", 300)]))[0].entries[0]
    nul = ho.prepare(sale("T8", "C1", [line("P1", "1.000", 300, description="\x00")]))[0]
    store = ho.store()
    lane = LaneId("S1", "L1")
    made = projection.rows_of(lane, 7, good)
    assert made is not None
    assert projection.project(store.sql, [(lane, 7, good, False)]) == 1
    assert projection.project(store.sql, [(lane, 7, nul.entries[0], False)]) == 0
    assert projection.project(store.sql, [(lane, 7, good._replace(seq=99), None)]) == 0
    store.commit()
    assert _count(ho, "extract_docs") == 1
    assert _count(ho, "extract_lines") == len(made[1]) == 1


def test_rows_from_the_body_ingest_decoded_are_the_rows_of_the_body(ho: HeadOffice) -> None:
    """check_entries hands each projection the body it decoded once (protocol.codec.unpack);
    the extract's rows made from that value are the ones rows_of makes decoding the body
    itself, for good documents, the odd ones it skips, and bodies codec.unpack refuses."""
    docs: list[dict[str, Any]] = [
        sale("T1", "C1", [line("P1", "1.500", 200), line("P2", "-1.000", 90)], [card(210)]),
        sale("T2", None, [line("P3", "3.000", 70, description="three")], day="2026-01-03"),
        {"kind": "sale_refund", "register_no": "T3", "return_type": "RETURN", "lines": []},
        {"kind": "sale", "register_no": "T4", "lines": "none"},  # parse refuses it
    ]
    bad_scheme = card(500)
    bad_scheme["scheme"] = 7
    docs.append(sale("T5", "C1", [line("P1", "1.000", 500)], [bad_scheme]))
    docs.append(sale("T6", "C1", [line("P1", "1.000", 300, description="\x00")]))
    entries = [ho.prepare(d)[0].entries[0] for d in docs]
    ext = entries[0]._replace(seq=90, body=msgpack.packb({"lines": msgpack.ExtType(5, b"x")}))
    nil = entries[0]._replace(seq=91, body=msgpack.packb(None))
    entries += [ext, nil]
    lane = LaneId("S1", "L1")
    extract = projection.ExtractProjection()
    _held, checked, _versions = check_entries(lane, 7, entries, [extract])
    made = {seq: doc for seq, ((_i, doc),) in checked.items()}
    expected = {e.seq: r for e in entries if (r := projection.rows_of(lane, 7, e)) is not None}
    assert sorted(expected) == [1, 2, 3]  # T1, T2, T3: the others are not projected
    assert made == expected
    assert made[1].lines[1].qty == -1000
    for e in entries:  # and each entry's rows from its decoded body alone, as check gives them
        assert projection.rows_of(lane, 7, e, unpack(e.body)) == expected.get(e.seq)
