"""What a till asks of the lane's catalog, shaped as the local API answers it (agent.api).

Built on agent.catalog.view, which holds the rules (price store > zone > chain by the store's
local date, tax rate by date, settings lane > store > chain > default). Every answer is read in
one SQLite read transaction, so the rows it shows and the `catalog_version` it names are the
same complete version even while a new one is being applied (WAL). A lookup is a handful of
primary-key reads: an item by code is its row, the store's row, the item's prices (a key range)
and its tax code's rates (a key range), plus the version; no scan of a dataset.

Money is integer minor units with the currency (the `Currency` setting, else the store's own).
A lane that holds no version yet answers `NoCatalog` (the API's 503), never an empty list.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.catalog.store import decode_row
from agent.catalog.view import CatalogView, Price
from protocol import catalog as contract
from protocol.errors import LanesyncError
from protocol.identity import LaneId

Row = dict[str, Any]

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
SHOWN = 64  # characters of a caller's value echoed back in a refusal

# The datasets a till reads one row of by its key, by the name the API gives them.
BY_KEY = {
    "items": "item",
    "staff": "staff member",
    "customers": "customer",
    "suppliers": "supplier",
    "couriers": "courier",
    "stores": "store",
    "txn_types": "transaction type",
}


class LookupRefused(LanesyncError):
    """A lookup refused: its `code` (not_found, invalid_parameter, catalog_unreadable,
    setting_unreadable, no_catalog), the field at fault and the catalog version looked in."""

    def __init__(self, code: str, detail: str, field: str | None, version: int | None) -> None:
        super().__init__(detail, code=code)
        self.detail, self.field, self.version = detail, field, version


class NoCatalog(LookupRefused):
    """The lane holds no complete catalog version yet (first start, never reached head office)."""

    def __init__(self, detail: str) -> None:
        super().__init__("no_catalog", detail, None, 0)


def not_found(what: str, value: str, field: str, version: int) -> LookupRefused:
    return LookupRefused(
        "not_found", f"no {what} {_shown(value)} in catalog version {version}", field, version
    )


def bad_query(field: str, reason: str, version: int | None = None) -> LookupRefused:
    return LookupRefused("invalid_parameter", reason, field, version)


def _shown(value: str) -> str:
    return repr(value if len(value) <= SHOWN else value[:SHOWN] + "...")


class _OneRead(CatalogView):
    """The view, with its reads nesting into one transaction opened by `snapshot`.

    CatalogView opens a read transaction per call; inside `snapshot` every call joins the one
    already open, so a whole answer sees one version. (Relies on CatalogView running each call
    in `_read`; tests/api/test_api_lookup.py shows an answer stays on its version while a new
    one is committed.)
    """

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        if self._db.in_transaction:
            yield self._db
            return
        with super()._read() as db:
            yield db

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        with self._read() as db:
            yield db


class Lookup:
    """The API's reads of the lane's catalog file; opens it once it exists."""

    def __init__(self, path: str | Path | None, lane: LaneId) -> None:
        self.path = None if path is None else Path(path)
        self.lane = lane
        self._view: _OneRead | None = None

    def close(self) -> None:
        if self._view is not None:
            self._view.close()
            self._view = None

    # --- one version per answer -----------------------------------------------------------

    def open_view(self) -> _OneRead:
        """The catalog file's reader, opened on first use and kept (NoCatalog until the file
        exists); every answer reads one version through its snapshot()."""
        if self._view is not None:
            return self._view
        if self.path is None or not self.path.exists():
            raise NoCatalog(
                "the lane holds no catalog version yet: it has not received its store's master "
                "data from head office since it was installed"
            )
        try:
            self._view = _OneRead(self.path, self.lane)
        except sqlite3.Error as exc:
            raise NoCatalog(f"cannot read the catalog {self.path}: {exc}") from exc
        return self._view

    @contextmanager
    def _snapshot(self) -> Iterator[tuple[_OneRead, sqlite3.Connection, int]]:
        view = self.open_view()
        try:
            with view.snapshot() as db:
                version = view.version
                if version == 0:
                    raise NoCatalog(
                        "the lane holds no catalog version yet: the first one from head office "
                        "has not arrived whole"
                    )
                yield view, db, version
        except sqlite3.Error as exc:
            if "no such table" in str(exc):  # the file exists, its schema not written yet
                raise NoCatalog(f"the catalog {self.path} is not set up yet") from exc
            # A damaged or unreadable file: the till is told, the agent keeps taking documents.
            raise LookupRefused(
                "catalog_unreadable", f"catalog {self.path}: {exc}", None, None
            ) from exc

    # --- items ----------------------------------------------------------------------------

    def item(self, code: str, at: datetime | None = None) -> Row:
        """An item by its code, with its price and tax rate at `at` (now)."""
        with self._snapshot() as (view, _db, version):
            row = view.item(code)
            if row is None:
                raise not_found("item", code, "code", version)
            return {"catalog_version": version, **self._priced(view, [row], at)[0]}

    def items_by_gtin(self, gtin: str, at: datetime | None = None) -> Row:
        """The items a scanned or keyed GTIN names: GTIN-8/12/13/14 match whatever length the
        catalog wrote them in (a GS1 AI (01) is always 14 digits, a UPC-A label 12)."""
        if not contract.is_gtin(gtin):
            raise bad_query("gtin", "must be a GTIN-8, -12, -13 or -14 with a valid check digit")
        with self._snapshot() as (view, db, version):
            rows = _by_gtin(db, gtin)
            if not rows:
                raise not_found("item with GTIN", gtin, "gtin", version)
            return {"catalog_version": version, "items": self._priced(view, rows, at)}

    def items(self, prefix: str, after: str | None, limit: int, at: datetime | None = None) -> Row:
        """Items whose code starts with `prefix`, by code, `limit` at most after `after`."""
        with self._snapshot() as (view, db, version):
            rows, more = _range(db, "items", prefix, after, limit)
            return {
                "catalog_version": version,
                "items": self._priced(view, rows, at),
                "next": rows[-1]["code"] if more else None,
            }

    def scan(self, gtin: str) -> Row:
        """What a scan event says of its GTIN: the item (priced now), unknown, or no catalog."""
        try:
            found = self.items_by_gtin(gtin)
        except NoCatalog:
            return {"item_status": "no_catalog", "catalog_version": 0, "item": None}
        except LookupRefused as exc:
            if exc.code != "not_found":
                return {"item_status": "unavailable", "catalog_version": exc.version, "item": None}
            return {"item_status": "unknown", "catalog_version": exc.version, "item": None}
        return {
            "item_status": "found",
            "catalog_version": found["catalog_version"],
            "item": found["items"][0],
        }

    def _priced(self, view: CatalogView, rows: list[Row], at: datetime | None) -> list[Row]:
        at = at or datetime.now(UTC)
        store = view.store()
        day = view.local_date(at, store)
        currency = view.setting("Currency")
        out = []
        for row in rows:
            price: Price | None = view.price(row["code"], at)
            rate = view.tax_rate(row["tax_code"], day)
            out.append(
                {
                    **row,
                    "gtins": row.get("gtins", []),
                    "on": day.isoformat(),
                    "price": None
                    if price is None
                    else {
                        "amount": price.price,
                        "currency": currency,
                        "valid_from": price.valid_from,
                        "scope": price.scope,
                    },
                    "tax": {"code": row["tax_code"], "rate_bp": rate},
                }
            )
        return out

    # --- people, parties, stores, transaction types ---------------------------------------

    def one(self, dataset: str, key: str) -> Row:
        """One row of a dataset by its key (staff id, customer code, ...), active or not."""
        with self._snapshot() as (view, db, version):
            found = _by_key(db, dataset, key)
            if found is None:
                raise not_found(BY_KEY[dataset], key, _key_field(dataset), version)
            return {"catalog_version": version, **self._shape(view, dataset, found)}

    def rows(
        self,
        dataset: str,
        prefix: str,
        after: str | None,
        limit: int,
        *,
        active_only: bool = False,
    ) -> Row:
        """A page of a dataset by key; `next` is the `after` of the following page."""
        if active_only and "active" not in contract.DATASETS[dataset].column_names:
            raise bad_query("active", f"{dataset} have no active column")
        keep: Callable[[Row], bool] | None = (lambda r: bool(r["active"])) if active_only else None
        with self._snapshot() as (view, db, version):
            rows, more = _range(db, dataset, prefix, after, limit, keep)
            return {
                "catalog_version": version,
                dataset: [self._shape(view, dataset, r) for r in rows],
                "next": contract.DATASETS[dataset].key_of(rows[-1]) if more else None,
            }

    def receiving_stores(self) -> Row:
        """The transit store selector: active stores that can receive stock (this one marked)."""
        with self._snapshot() as (view, _db, version):
            rows = view.stores_receiving_stock()
            return {
                "catalog_version": version,
                "stores": [self._shape(view, "stores", r) for r in rows],
                "next": None,
            }

    def _shape(self, view: CatalogView, dataset: str, row: Row) -> Row:
        if dataset == "stores":
            return {**row, "this_store": row["id"] == self.lane.store}
        return row

    # --- settings and the version held ----------------------------------------------------

    def settings(self) -> Row:
        """Every declared setting as this lane resolves it (lane > store > chain > default)."""
        with self._snapshot() as (view, _db, version):
            values: dict[str, Any] = {}
            errors: dict[str, str] = {}
            for name in contract.SETTINGS:
                try:
                    values[name] = view.setting(name)
                except contract.CatalogError as exc:
                    values[name] = None  # a value this lane cannot read
                    errors[name] = exc.reason
            out: Row = {
                "catalog_version": version,
                "store": self.lane.store,
                "lane": self.lane.lane,
                "settings": values,
            }
            if errors:
                out["errors"] = errors
            return out

    def setting(self, name: str) -> Row:
        with self._snapshot() as (view, _db, version):
            try:
                contract.setting(name)
            except contract.CatalogError as exc:
                raise LookupRefused("not_found", exc.reason, "name", version) from None
            try:
                value = view.setting(name)
            except contract.CatalogError as exc:
                raise LookupRefused(
                    "setting_unreadable", f"{name}: {exc.reason}", "name", version
                ) from None
            return {"catalog_version": version, "name": name, "value": value}

    def catalog(self) -> Row:
        """What the lane holds: version, row count, view hash, when it was applied."""
        with self._snapshot() as (_view, db, version):
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            held = db.execute("SELECT dataset, count(*) FROM rows GROUP BY dataset").fetchall()
        return {
            "catalog_version": version,
            "store": self.lane.store,
            "rows": int(meta.get("rows", 0)),
            "hash": bytes(meta["hash"]).hex() if "hash" in meta else None,
            "applied_at": meta.get("applied_at"),
            "head_version": int(meta.get("head_version", 0)),
            "datasets": {str(d): int(n) for d, n in held},
        }


# --- reads the view does not have, over the catalog file's tables (agent.catalog.store) -----


def _key_field(dataset: str) -> str:
    return contract.DATASETS[dataset].key[0]


def _by_key(db: sqlite3.Connection, dataset: str, key: str) -> Row | None:
    found = db.execute(
        "SELECT body FROM rows WHERE dataset = ? AND key = ?", (dataset, key)
    ).fetchone()
    return None if found is None else decode_row(dataset, bytes(found[0]))


def gtin_forms(gtin: str) -> list[str]:
    """The same GTIN at every length it can be written in (zero padding keeps the check digit)."""
    core = gtin.lstrip("0")
    return sorted({core.zfill(n) for n in contract.GTIN_LENGTHS if len(core) <= n})


def _by_gtin(db: sqlite3.Connection, gtin: str) -> list[Row]:
    refs = [f"gtin:{g}" for g in gtin_forms(gtin)]
    refs += refs[-1:] * (len(contract.GTIN_LENGTHS) - len(refs))  # one statement, four forms
    found = db.execute(
        "SELECT DISTINCT r.key, r.body FROM refs f JOIN rows r"
        " ON r.dataset = f.dataset AND r.key = f.key"
        " WHERE f.dataset = 'items' AND f.ref IN (?, ?, ?, ?) ORDER BY r.key",
        refs,
    ).fetchall()
    return [decode_row("items", bytes(b)) for _k, b in found]


def _range(
    db: sqlite3.Connection,
    dataset: str,
    prefix: str,
    after: str | None,
    limit: int,
    keep: Callable[[Row], bool] | None = None,
) -> tuple[list[Row], bool]:
    """Up to `limit` rows whose key starts with `prefix` (after `after`), in key order, and
    whether there are more. A key range of the primary key, read lazily."""
    lo = prefix if after is None or after < prefix else after
    sql = "SELECT key, body FROM rows WHERE dataset = ? AND key >= ?"
    args: list[Any] = [dataset, lo]
    if after is not None and after >= prefix:
        sql += " AND key > ?"
        args.append(after)
    if prefix:
        sql += " AND key < ?"
        args.append(prefix[:-1] + chr(ord(prefix[-1]) + 1))
    out: list[Row] = []
    for _key, body in db.execute(sql + " ORDER BY key", args):
        row = decode_row(dataset, bytes(body))
        if keep is not None and not keep(row):
            continue
        if len(out) == limit:
            return out, True
        out.append(row)
    return out, False
