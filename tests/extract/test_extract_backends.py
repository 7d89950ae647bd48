"""The extract on SQLite and PostgreSQL: the same files byte for byte, one transaction per run,
and what several PostgreSQL ingest workers and hosts add (ids committed out of order, runs
from two hosts)."""

from __future__ import annotations

import threading
import time
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from headoffice.db import open_target
from headoffice.db.base import DatabaseError
from headoffice.extract import config as x_config
from headoffice.extract import job
from headoffice.extract.config import ExtractConfig, PosBatch, TaxDefinition
from headoffice.extract.job import ExtractError
from headoffice.projections import PROJECTIONS
from protocol.errors import ConfigError
from tests.extract.extract_helpers import DAY, LATER, T0, HeadOffice, card, config, line, sale
from tests.pgutil import pg_connect, pg_schema

BATCHES = {
    "pos_batches": (PosBatch("B1", "S2", "US", "CA", "W1"),),
    "tax": (TaxDefinition("US", "CA", None, Decimal("7.25"), frozenset({"VAT_ZERO"})),),
}


def _day_one(ho: HeadOffice) -> list[str]:
    """Every kind of input the jobs treat differently, over 3 stores, 2 lanes and 3 days."""
    txns = []
    for i in range(36):
        store, lane = f"S{i % 3 + 1}", f"L{i % 2 + 1}"
        lines = [
            line("P1", "1.000", 199 + i % 5, description='Tee "basic" é, size\tM'),
            line("P2", f"{i % 3}.250", 1250, ["VAT_RED", "VAT_ZERO"][i % 2]),
        ]
        total = sum(ln["amount"] for ln in lines)
        kind, extra = "sale", {}
        if i % 9 == 4:
            kind, extra = "sale_refund", {"return_type": "RETURN"}
        pays: list[dict[str, Any]] | None = None
        if i % 4 == 1:
            pays = [card(total, ["visa", "amex"][i % 2], banked=i % 8 != 1)]
        elif i % 4 == 2:
            pays = [{"tender": "account", "amount": total}]
        doc = sale(
            f"T{i:05d}",
            [None, "C1", "C2", "C3"][i % 4],
            lines,
            pays,
            kind=kind,
            store=store,
            lane=lane,
            day=f"2026-01-0{1 + i % 3}",
            **extra,
        )
        txns.append(ho.add(doc))
    txns.append(
        ho.add(
            sale(
                "T90001",
                "C1",
                [line("P7", "3.000", 100, open_qty="1.000")],
                kind="special_order",
            )
        )
    )
    ho.add({"kind": "sale", "register_no": "T90002", "lines": [{"item": "P1", "qty": 1}]})
    return txns


def _scenario(ho: HeadOffice) -> dict[str, bytes]:
    """Two runs with an ERP posting in between; every file of every run, by run/name."""
    cfg = config(ho, **BATCHES)  # type: ignore[arg-type]
    txns = _day_one(ho)
    first = job.run(cfg, now_ms=T0 + 2 * DAY + 3_600_000)  # 2026-01-03 open: pending
    assert first.run == 1
    assert first.pending.get("business day not closed")
    job.record_posting(cfg, txns[5], "INV-5", {"customer": "C9"})
    for i in range(6):
        ho.add(sale(f"T5{i:04d}", "C1", [line("P3", "1.500", 333)], day="2026-01-04"))
    second = job.run(cfg, now_ms=LATER)
    assert second.run == 2
    assert job.run(cfg, now_ms=LATER).run is None  # nothing left: nothing emitted again
    return {
        f"{d.name}/{f.name}": f.read_bytes()
        for d in sorted(cfg.output_dir.glob("run-*"))
        for f in sorted(d.iterdir())
    }


def _bookkeeping(cfg: ExtractConfig) -> list[Any]:
    db = job.open_db(cfg)
    try:
        return [
            db.fetchall("SELECT txn_id, job, run, ref FROM extract_done ORDER BY txn_id, job"),
            db.fetchall("SELECT record_id, txn_id, run, body FROM extract_purchases ORDER BY 1"),
            db.fetchall("SELECT run, purchases, rollups, postings, rejects FROM extract_runs"),
            db.fetchall("SELECT name, value FROM extract_counters ORDER BY name"),
        ]
    finally:
        db.close()


def test_sqlite_and_postgres_write_byte_identical_files(tmp_path: Path) -> None:
    results = {}
    with pg_schema() as url:
        for name, target in (("sqlite", tmp_path / "ho.db"), ("postgres", url)):
            work = tmp_path / name
            work.mkdir()
            ho = HeadOffice(target, work)
            try:
                files = _scenario(ho)
            finally:
                ho.close()
            results[name] = (files, _bookkeeping(config(ho)))
    files, books = results["sqlite"]
    assert {"run-000001/postings.csv", "run-000002/purchases.jsonl"} <= set(files)
    assert all(files[n] for n in ("run-000001/rollup.jsonl", "run-000001/rejects.jsonl"))
    pg_files, pg_books = results["postgres"]
    assert sorted(pg_files) == sorted(files)
    for name, data in files.items():
        assert pg_files[name] == data, f"{name} differs between SQLite and PostgreSQL"
    assert pg_books == books


def test_a_failing_commit_records_nothing_and_the_rerun_emits_everything(
    ho: HeadOffice,
) -> None:
    cfg = config(ho)
    txns = [ho.add(sale(f"T1{i:04d}", "C1", [line("P1", "1.000", 100)])) for i in range(5)]
    db = job.open_db(cfg)
    try:  # a purchase row already there makes the run's insert fail inside its transaction
        db.execute(
            "INSERT INTO extract_purchases (record_id, txn_id, run, body) VALUES (?, ?, ?, ?)",
            (f"pur-{txns[3]}", "someone-else", 99, "{}"),
        )
        with pytest.raises(DatabaseError, match="nothing recorded"):
            job.run(cfg, now_ms=LATER)
        for table in ("extract_done", "extract_cursor", "extract_runs", "extract_counters"):
            assert db.fetchall(f"SELECT * FROM {table}") == [], table
        assert not (cfg.output_dir / "run-000001").exists()
        db.execute("DELETE FROM extract_purchases")
    finally:
        db.close()
    report = job.run(cfg, now_ms=LATER)
    assert (report.run, report.purchases, report.rollups) == (1, 5, 1)
    assert job.run(cfg, now_ms=LATER).run is None
    assert not list(cfg.output_dir.glob("*.tmp"))


def _waiting_on_a_lock(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE journal%'"
        ).fetchone()
    return bool(row and row[0])


def test_postgres_run_waits_for_ingest_holding_lower_ids(tmp_path: Path) -> None:
    """Worker A draws journal ids and has not committed; worker B commits later ids. A run
    that walked past B's ids now would never see A's rows; it must wait for A instead."""
    with pg_schema() as url:
        ho = HeadOffice(url, tmp_path)
        slow, fast = (
            open_target(url, projections=PROJECTIONS),
            open_target(url, projections=PROJECTIONS),
        )
        runner: threading.Thread | None = None
        try:
            ho.add(sale("T00000", "C1", [line("P1", "1.000", 100)], store="S0"))  # migrates
            batch_a, when_a, txn_a = ho.prepare(sale("T10001", "C1", [line("P1", "1.000", 100)]))
            batch_b, when_b, txn_b = ho.prepare(
                sale("T20001", "C2", [line("P2", "1.000", 200)], store="S2")
            )
            slow.apply_batch(batch_a, when_a)  # ids drawn, not committed
            fast.apply_batch(batch_b, when_b)
            fast.commit()
            cfg = config(ho, postings_enabled=False)
            outcome: list[job.RunReport | BaseException] = []

            def run() -> None:
                try:
                    outcome.append(job.run(cfg, now_ms=LATER))
                except BaseException as exc:
                    outcome.append(exc)

            runner = threading.Thread(target=run, name="extract-run")
            runner.start()
            deadline = time.monotonic() + 10
            while not _waiting_on_a_lock(url) and runner.is_alive():
                assert time.monotonic() < deadline, "the run neither waited nor finished"
                time.sleep(0.02)
            assert runner.is_alive(), f"the run did not wait for worker A: {outcome}"
            slow.commit()
            runner.join(30)
            assert not runner.is_alive()
        finally:
            slow.close()
            fast.close()
            if runner is not None:
                runner.join(30)
            ho.close()
        (first,) = outcome
        assert isinstance(first, job.RunReport), first
        assert first.purchases == 3
        emitted = (tmp_path / "out" / "run-000001" / "purchases.jsonl").read_text()
        assert txn_a in emitted
        assert txn_b in emitted
        assert job.run(cfg, now_ms=LATER).run is None


def test_postgres_runs_from_two_hosts_are_serialised(tmp_path: Path) -> None:
    """Two output directories (two hosts) over one database: the lock file cannot see the other
    run, the advisory lock does."""
    with pg_schema() as url:
        ho = HeadOffice(url, tmp_path / "host-a")
        try:
            ho.add(sale("T10001", "C1", [line("P1", "1.000", 100)]))
        finally:
            ho.close()
        with pg_connect(url) as other:
            other.execute(
                "SELECT pg_advisory_lock(hashtext('lanesync-extract:' || current_schema()))"
            )
            with pytest.raises(ExtractError, match="another extract run holds the run lock"):
                job.run(config(ho), now_ms=LATER)
        report = job.run(config(ho), now_ms=LATER)  # the lock went with the connection
        assert (report.run, report.purchases) == (1, 1)


def test_database_url_is_read_and_checked() -> None:
    url = "postgresql://lanesync@db.example/ho"
    cfg = x_config.parse(tomllib.loads(f'[database]\nurl = "{url}"\n'))
    assert (cfg.target, cfg.database_key) == (url, "database.url")
    with pytest.raises(ConfigError, match=r"database\.url: set database\.path"):
        x_config.parse(tomllib.loads(f'[database]\nurl = "{url}"\npath = "/x.db"\n'))
    with pytest.raises(ConfigError, match=r"database\.url: must be a postgresql://"):
        x_config.parse(tomllib.loads('[database]\nurl = "mysql://x/y"\n'))


def test_unreachable_postgres_names_the_key_without_the_password(tmp_path: Path) -> None:
    cfg = ExtractConfig(
        database_url="postgresql://lanesync:s3cret@127.0.0.1:1/test", output_dir=tmp_path
    )
    with pytest.raises(ExtractError, match=r"^database\.url: cannot open") as err:
        job.run(cfg, now_ms=LATER)
    assert "s3cret" not in str(err.value)
