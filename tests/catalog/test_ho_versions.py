"""Head office's catalog versions on SQLite and PostgreSQL: loads as deltas, views, deltas and
snapshots checked against a full recompute from the rows."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from headoffice.catalog import load as loader
from headoffice.catalog import versions
from headoffice.db import Database
from headoffice.db.sql import Sql
from protocol import catalog as cat
from tests import pgutil
from tests.pgutil import Backend

backend = pgutil.backend  # the fixture, parametrised over SQLite and PostgreSQL


def csv_file(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    lines = [",".join(header)] + [",".join(str(c) for c in r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def jsonl_file(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def load(sql: Sql, dataset: str, path: Path, upsert: bool = False) -> versions.LoadResult:
    return loader.load_file(sql, dataset, path, upsert=upsert)


def recompute(sql: Sql, store: str, at: int) -> tuple[bytes, int, dict[tuple[str, str], cat.Row]]:
    """A store's view at `at` from the rows alone: what every stored hash must equal."""
    zone = None
    rows: list[tuple[str, str, str, bytes]] = [
        (d, k, s, bytes(b))
        for d, k, s, b in sql.fetchall(
            "SELECT dataset, key, scope, body FROM catalog_rows WHERE since_version <= ? "
            "AND (until_version IS NULL OR until_version > ?)",
            (at, at),
        )
    ]
    for d, k, _s, b in rows:
        if d == "stores" and k == store:
            zone = cat.row_from_bytes(cat.DATASETS["stores"], b).get("price_zone")
    scopes = cat.store_scopes(store, zone)
    view = {(d, k): cat.row_from_bytes(cat.DATASETS[d], b) for d, k, s, b in rows if s in scopes}
    digest = cat.view_hash((cat.DATASETS[d], r) for (d, _k), r in view.items())
    return digest, len(view), view


STORES_HEADER = ["id", "name", "timezone", "currency", "price_zone", "can_receive_stock", "active"]
PRICE_HEADER = ["item", "store", "zone", "valid_from", "price"]


def test_100k_prices_then_3_changed_make_a_3_row_version(backend: Backend, tmp_path: Path) -> None:
    store: Database = backend.store()
    try:
        rows = [[f"I{i:06d}", "", "", "2026-01-01", 100 + i % 900] for i in range(100_000)]
        first = load(store.sql, "prices", csv_file(tmp_path / "p1.csv", PRICE_HEADER, rows))
        assert (first.version, first.added, first.rows) == (1, 100_000, 100_000)
        for i in (5, 50_000, 99_999):
            rows[i][4] = 7777
        second = load(store.sql, "prices", csv_file(tmp_path / "p2.csv", PRICE_HEADER, rows))
        assert (second.version, second.added, second.changed, second.removed) == (2, 0, 3, 0)
        assert backend.query("SELECT count(*) FROM catalog_rows WHERE since_version = 2") == [(3,)]
        assert backend.query("SELECT count(*) FROM catalog_rows WHERE until_version IS NULL") == [
            (100_000,)
        ]
        same = load(store.sql, "prices", tmp_path / "p2.csv")
        assert same.version is None  # a load that changes nothing makes no version
        assert versions.latest_version(store.sql) == 2
        # the stored hash after the delta equals the hash of all 100,000 rows from scratch
        v = versions.view(store.sql, "S1")
        full, count, _ = recompute(store.sql, "S1", 2)
        assert (v.version, v.hash, v.rows) == (2, full, count)
        assert count == 100_000
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_one_bad_row_changes_nothing_and_names_file_row_and_column(
    backend: Backend, tmp_path: Path, kind: str
) -> None:
    store = backend.store()
    try:
        good = [["A1", "", "", "2026-01-01", 100], ["A2", "", "", "2026-01-01", 200]]
        load(store.sql, "prices", csv_file(tmp_path / "ok.csv", PRICE_HEADER, good))
        before = backend.query("SELECT dataset, key, since_version FROM catalog_rows")
        bad = [*good, ["A3", "", "", "2026-01-01", "9.98"], ["A4", "", "", "2026-01-01", 5]]
        if kind == "csv":
            path = csv_file(tmp_path / "bad.csv", PRICE_HEADER, bad)
        else:
            path = jsonl_file(
                tmp_path / "bad.jsonl",
                [{"item": r[0], "valid_from": r[3], "price": r[4]} for r in bad],
            )
        with pytest.raises(loader.LoadError) as err:
            load(store.sql, "prices", path)
        assert err.value.file == str(path)
        assert err.value.row == 3  # the third data row / line
        assert err.value.column == "price"
        assert f"{path}: row 3, column price" in str(err.value)
        assert "nothing was loaded" in str(err.value)
        assert backend.query("SELECT dataset, key, since_version FROM catalog_rows") == before
        assert versions.latest_version(store.sql) == 1
    finally:
        store.close()


def test_file_level_refusals_name_what_is_wrong(backend: Backend, tmp_path: Path) -> None:
    store = backend.store()
    try:
        cases: list[tuple[str, str, str | None, int | None, str]] = [
            ("prices", "item,valid_from,prise\n", "prise", None, "did you mean price"),
            ("prices", "item,price\n", "valid_from", None, "missing from the header"),
            ("prices", "item,valid_from,price\nA1,2026-01-01,1\nA1,2026-01-01,2\n", None, 2,
             "same key as row 1"),
            ("prices", "item,valid_from,price\nA1,2026-01-01\n", None, 1, "2 cells"),
            ("stores", ",".join(STORES_HEADER) + "\nS1,Main,Mars/Olympus,EUR,,1,1\n",
             "timezone", 1, "not a known IANA time zone"),
            ("prizes", "item\n", "dataset", None, "did you mean prices"),
        ]  # fmt: skip
        for dataset, text, column, row, words in cases:
            path = tmp_path / "f.csv"
            path.write_text(text, encoding="utf-8")
            with pytest.raises(loader.LoadError) as err:
                load(store.sql, dataset, path)
            assert err.value.row == row, text
            if column is not None:
                assert err.value.column == column, text
            assert words in str(err.value), str(err.value)
        (tmp_path / "x.txt").write_text("x", encoding="utf-8")
        with pytest.raises(loader.LoadError, match=r"\.csv or \.jsonl"):
            load(store.sql, "items", tmp_path / "x.txt")
        (tmp_path / "b.jsonl").write_bytes(b'{"item": "A1"}\n\xff\n')
        with pytest.raises(loader.LoadError, match="not UTF-8"):
            load(store.sql, "prices", tmp_path / "b.jsonl")
        (tmp_path / "n.jsonl").write_text('{"item":"A1","valid_from":"2026-01-01","price":NaN}\n')
        with pytest.raises(loader.LoadError) as err:
            load(store.sql, "prices", tmp_path / "n.jsonl")
        assert err.value.row == 1
        assert versions.latest_version(store.sql) == 0
    finally:
        store.close()


def test_upsert_never_removes_and_full_load_does(backend: Backend, tmp_path: Path) -> None:
    store = backend.store()
    try:
        rows = [["A1", "", "", "2026-01-01", 100], ["A2", "", "", "2026-01-01", 200]]
        load(store.sql, "prices", csv_file(tmp_path / "a.csv", PRICE_HEADER, rows))
        up = load(
            store.sql,
            "prices",
            csv_file(tmp_path / "b.csv", PRICE_HEADER, [["A3", "", "", "2026-01-01", 3]]),
            upsert=True,
        )
        assert (up.added, up.removed, up.rows) == (1, 0, 3)
        full = load(store.sql, "prices", tmp_path / "b.csv")
        assert (full.added, full.removed, full.rows) == (0, 2, 1)
        hist = versions.history(store.sql)
        got = [(h["version"], h["added"], h["changed"], h["removed"], h["upsert"]) for h in hist]
        assert got == [(1, 2, 0, 0, 0), (2, 1, 0, 0, 1), (3, 0, 0, 2, 0)]
    finally:
        store.close()


def _scenario(sql: Sql, tmp: Path, rng: random.Random) -> None:
    """Versions that touch chain, store and zone scopes, move staff between stores, change a
    store's price zone and remove rows."""
    stores = [
        ["S1", "One", "Europe/Dublin", "EUR", "Z1", 1, 1],
        ["S2", "Two", "Europe/Dublin", "EUR", "Z2", 1, 1],
        ["S3", "Three", "UTC", "EUR", "", 0, 1],
    ]
    load(sql, "stores", csv_file(tmp / "s1.csv", STORES_HEADER, stores))
    prices = [[f"I{i}", "", "", "2026-01-01", 100 + i] for i in range(300)]
    prices += [[f"I{i}", "S1", "", "2026-01-01", 50 + i] for i in range(0, 300, 7)]
    prices += [[f"I{i}", "", "Z2", "2026-02-01", 70 + i] for i in range(0, 300, 5)]
    load(sql, "prices", csv_file(tmp / "p1.csv", PRICE_HEADER, prices))
    staff_h = ["id", "name", "store", "active"]
    staff = [[f"E{i}", f"Emp {i}", rng.choice(["", "S1", "S2", "S3"]), 1] for i in range(40)]
    load(sql, "staff", csv_file(tmp / "st1.csv", staff_h, staff))
    for n in range(4):
        for r in rng.sample(prices, 20):
            r[4] = rng.randint(1, 9999)
        del prices[rng.randrange(len(prices))]
        load(sql, "prices", csv_file(tmp / f"p{n + 2}.csv", PRICE_HEADER, prices))
        for r in rng.sample(staff, 5):
            r[2] = rng.choice(["", "S1", "S2", "S3"])
        load(sql, "staff", csv_file(tmp / f"st{n + 2}.csv", staff_h, staff))
    stores[2][4] = "Z2"  # S3 joins zone Z2
    load(sql, "stores", csv_file(tmp / "s2.csv", STORES_HEADER, stores))
    settings = [{"scope": "chain", "name": "PurchRecvAmountVariation", "value": "15"},
                {"scope": "store", "store": "S2", "name": "SaleTransitPromptQty", "value": "0"},
                {"scope": "lane", "store": "S1", "lane": "L1", "name": "PriceOverride",
                 "value": "refused"}]  # fmt: skip
    load(sql, "settings", jsonl_file(tmp / "set.jsonl", settings))


def test_hashes_deltas_and_snapshots_equal_a_full_recompute(
    backend: Backend, tmp_path: Path
) -> None:
    store = backend.store()
    try:
        sql = store.sql
        _scenario(sql, tmp_path, random.Random(14))
        latest = versions.latest_version(sql)
        catalog = versions.Catalog(sql)
        for s in ("S1", "S2", "S3", "S9"):
            for at in range(1, latest + 1):
                v = versions.view(sql, s, at)
                full, count, rows = recompute(sql, s, at)
                assert (v.hash, v.rows) == (full, count), (s, at)
            # a snapshot in small chunks rebuilds the view exactly, each chunk verified
            first = cat.SnapshotReply.from_map(
                catalog.snapshot_chunk(s, cat.SnapshotRequest(0, 0, 37)).to_map()
            )
            got = list(first.changes)
            for i in range(1, first.chunks):
                chunk = catalog.snapshot_chunk(s, cat.SnapshotRequest(first.version, i, 37))
                got += cat.SnapshotReply.from_map(chunk.to_map()).changes
            full, count, rows = recompute(sql, s, first.version)
            assert {(d, k): r for d, k, r in got} == rows
            assert [(d, k) for d, k, _ in got] == sorted(rows)
            assert cat.view_hash((cat.DATASETS[d], r) for d, _k, r in got) == first.hash == full
            # a delta from every earlier version, paged, turns that view into the latest one
            for a in range(1, latest):
                if versions.store_scopes(sql, s, a) != versions.store_scopes(sql, s, latest):
                    with pytest.raises(versions.CatalogRefused) as refused:
                        catalog.delta_page(s, cat.DeltaRequest(a, latest))
                    assert refused.value.code == cat.SNAPSHOT_NEEDED
                    continue
                _h, _c, held = recompute(sql, s, a)
                after: tuple[str, str] | None = None
                while True:
                    page = catalog.delta_page(s, cat.DeltaRequest(a, latest, after))
                    page = cat.DeltaReply.from_map(page.to_map())
                    for d, k, r in page.changes:
                        if r is None:
                            del held[(d, k)]
                        else:
                            held[(d, k)] = r
                    if not page.more:
                        break
                    after = (page.changes[-1][0], page.changes[-1][1])
                assert held == rows, (s, a)
                assert page.hash == full
    finally:
        store.close()


def test_delta_pages_stop_at_the_change_limit(backend: Backend, tmp_path: Path) -> None:
    store = backend.store()
    try:
        rows = [[f"I{i:05d}", "", "", "2026-01-01", 1] for i in range(4500)]
        load(store.sql, "prices", csv_file(tmp_path / "a.csv", PRICE_HEADER, rows))
        for r in rows:
            r[4] = 2
        load(store.sql, "prices", csv_file(tmp_path / "b.csv", PRICE_HEADER, rows))
        catalog = versions.Catalog(store.sql)
        pages = []
        after = None
        while True:
            page = catalog.delta_page("S1", cat.DeltaRequest(1, 2, after))
            pages.append(len(page.changes))
            if not page.more:
                break
            after = page.changes[-1][:2]
        assert pages == [2000, 2000, 500]
        for bad in (cat.DeltaRequest(0, 2), cat.DeltaRequest(2, 1), cat.DeltaRequest(1, 3)):
            with pytest.raises(versions.CatalogRefused) as err:
                catalog.delta_page("S1", bad)
            assert err.value.code == cat.SNAPSHOT_NEEDED
        with pytest.raises(versions.CatalogRefused) as err:
            catalog.snapshot_chunk("S1", cat.SnapshotRequest(3, 0, 100))
        assert err.value.code == cat.SNAPSHOT_EXPIRED
    finally:
        store.close()


def test_prune_keeps_every_view_from_the_horizon_and_refuses_older(
    backend: Backend, tmp_path: Path
) -> None:
    store = backend.store()
    try:
        sql = store.sql
        _scenario(sql, tmp_path, random.Random(3))
        latest = versions.latest_version(sql)
        before = {
            (s, at): recompute(sql, s, at)[:2]
            for s in ("S1", "S2", "S3")
            for at in range(1, latest + 1)
        }
        heads = {s: versions.view(sql, s).version for s in ("S1", "S2", "S3")}
        horizon = latest - 3
        res = versions.prune(sql, horizon)
        assert res.versions == horizon - 1
        assert res.rows > 0  # prices and staff rows replaced before the horizon
        assert versions.oldest_version(sql) == horizon
        assert versions.prune(sql, horizon).versions == 0  # nothing more to drop
        assert backend.query(
            "SELECT count(*) FROM catalog_rows WHERE until_version <= ?", (horizon,)
        ) == [(0,)]
        catalog = versions.Catalog(sql)
        for s in ("S1", "S2", "S3"):
            for at in range(horizon, latest + 1):
                v = versions.view(sql, s, at)
                assert (v.hash, v.rows) == before[(s, at)], (s, at)
            assert versions.view(sql, s).version == heads[s]
            full_hash = before[(s, latest)][0]
            snap = catalog.snapshot_chunk(s, cat.SnapshotRequest(0, 0, 500))
            assert snap.hash == full_hash
            assert len(snap.changes) == snap.rows
            if versions.store_scopes(sql, s, horizon) == versions.store_scopes(sql, s, latest):
                page = catalog.delta_page(s, cat.DeltaRequest(horizon, latest))
                assert page.hash == full_hash
            else:  # S3 joined a price zone after the horizon
                with pytest.raises(versions.CatalogRefused, match="price zone"):
                    catalog.delta_page(s, cat.DeltaRequest(horizon, latest))
            with pytest.raises(versions.CatalogRefused) as err:
                catalog.delta_page(s, cat.DeltaRequest(1, latest))
            assert err.value.code == cat.SNAPSHOT_NEEDED
            with pytest.raises(versions.CatalogRefused) as err:
                catalog.snapshot_chunk(s, cat.SnapshotRequest(1, 0, 500))
            assert err.value.code == cat.SNAPSHOT_EXPIRED
        # a version whose store view did not change up to the horizon stands for it
        path = tmp_path / "lone.csv"
        path.write_text("item,store,valid_from,price\nA1,S3,2026-01-01,1\n", encoding="utf-8")
        load(sql, "prices", path, upsert=True)  # touches S3 only
        last = versions.latest_version(sql)
        versions.prune(sql, last)
        s1 = versions.view(sql, "S1").version
        assert s1 < last  # S1's head is from before the new horizon
        page = catalog.delta_page("S1", cat.DeltaRequest(s1, s1))
        assert (page.changes, page.hash) == ([], versions.view(sql, "S1").hash)
        snap = catalog.snapshot_chunk("S1", cat.SnapshotRequest(s1, 0, 500))
        assert (snap.version, snap.hash) == (s1, versions.view(sql, "S1").hash)
    finally:
        store.close()


def test_a_return_txn_type_setting_names_a_loaded_txn_type(
    backend: Backend, tmp_path: Path
) -> None:
    store = backend.store()
    try:
        sql = store.sql
        setting = [{"scope": "chain", "name": "ReturnTxnType", "value": "RET"}]
        with pytest.raises(loader.LoadError) as err:
            load(sql, "settings", jsonl_file(tmp_path / "s.jsonl", setting))
        assert (err.value.row, err.value.column) == (1, "value")
        assert "ReturnTxnType RET is not a txn_types code (none loaded yet)" in str(err.value)
        types = tmp_path / "t.csv"
        types.write_text(
            "code,name,inventory_effect\nSALE,Sale,decrease\nRET,Return no stock,none\n",
            encoding="utf-8",
        )
        load(sql, "txn_types", types)
        assert load(sql, "settings", tmp_path / "s.jsonl").version == 2
        # a txn_types load that drops RET is refused while the setting names it...
        types.write_text("code,name,inventory_effect\nSALE,Sale,decrease\n", encoding="utf-8")
        with pytest.raises(loader.LoadError, match="ReturnTxnType setting of chain"):
            load(sql, "txn_types", types)
        # ...an upsert keeps RET, so it may
        assert load(sql, "txn_types", types, upsert=True).version is None
        assert versions.latest_version(sql) == 2
    finally:
        store.close()
