"""The head publisher's choice of what to publish, and of who publishes when several ingest
workers share one PostgreSQL database."""

from __future__ import annotations

import time
from pathlib import Path

from headoffice.catalog import load as loader
from headoffice.catalog import versions
from headoffice.catalog.publisher import HeadPublisher
from protocol import catalog as cat
from tests import pgutil
from tests.pgutil import Backend

backend = pgutil.backend  # the fixture, parametrised over SQLite and PostgreSQL
STORES = "id,name,timezone,currency,price_zone,can_receive_stock,active\n"


def publisher(b: Backend) -> HeadPublisher:
    return HeadPublisher(b.config())


def test_one_publisher_per_database(backend: Backend, tmp_path: Path) -> None:
    store = backend.store()
    try:
        path = tmp_path / "s.csv"
        path.write_text(STORES + "S1,One,UTC,EUR,,1,1\n", encoding="utf-8")
        loader.load_file(store.sql, "stores", path)
    finally:
        store.close()
    first, second = publisher(backend), publisher(backend)
    try:
        assert first.latest_version() == 1
        if not backend.is_pg:
            return  # one process per SQLite file: it always publishes
        assert second.latest_version() is None  # standing by: the first holds the lock
        first.drop_connection()  # its process ends, or its database link breaks
        # the server frees the lock once that backend has gone, a moment after the close
        deadline = time.monotonic() + 10
        while (latest := second.latest_version()) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert latest == 1
        assert first.latest_version() is None
    finally:
        first.close()
        second.close()


def test_heads_carry_small_deltas_and_skip_unchanged_stores(
    backend: Backend, tmp_path: Path
) -> None:
    store = backend.store()
    pub = publisher(backend)
    try:
        sql = store.sql
        path = tmp_path / "s.csv"
        path.write_text(STORES + "S1,One,UTC,EUR,,1,1\nS2,Two,UTC,EUR,,1,1\n", encoding="utf-8")
        loader.load_file(sql, "stores", path)
        heads, gone = pub.changed_heads(1, True)
        assert ([h.store for h in heads], gone) == (["S1", "S2"], [])
        pub.note_published(heads)
        assert pub.changed_heads(1, False) == ([], [])  # nothing moved
        # a store price for S2: S2's head carries it inline, S1's does not move
        path = tmp_path / "p.csv"
        path.write_text("item,store,valid_from,price\nA1,S2,2026-01-01,5\n", encoding="utf-8")
        loader.load_file(sql, "prices", path)
        heads, _ = pub.changed_heads(2, False)
        assert [(h.store, h.version, h.prev) for h in heads] == [("S2", 2, 1)]
        assert heads[0].changes == [
            (
                "prices",
                "A1|S2||2026-01-01",
                {"item": "A1", "store": "S2", "valid_from": "2026-01-01", "price": 5},
            )
        ]
        assert heads[0].hash == versions.view(sql, "S2").hash
        pub.note_published(heads[:1])
        # a change too big to go inline: the head says only where the store's view is
        rows = "".join(f"I{i},2026-01-01,{i}\n" for i in range(cat.INLINE_CHANGES + 1))
        path.write_text("item,valid_from,price\n" + rows, encoding="utf-8")
        loader.load_file(sql, "prices", path)
        heads, _ = pub.changed_heads(3, False)
        assert {(h.store, h.version, h.prev, h.changes) for h in heads} == {
            ("S1", 3, None, None),
            ("S2", 3, None, None),
        }
        # S1 leaves the registry: its head is cleared
        pub.note_published(heads)
        path = tmp_path / "s2.csv"
        path.write_text(STORES + "S2,Two,UTC,EUR,,1,1\n", encoding="utf-8")
        loader.load_file(sql, "stores", path)
        heads, gone = pub.changed_heads(4, False)
        assert ([h.store for h in heads], gone) == (["S2"], ["S1"])
    finally:
        store.close()
        pub.close()
