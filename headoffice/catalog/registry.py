"""The store registry: which stores and lanes head office knows (issue 14 item 4).

Read from the catalog's current rows (`catalog_rows` with `until_version` NULL) of the
`stores` and `lanes` datasets, by key only: a store's key is its id, a lane's `store|lane`
(protocol.catalog.KEY_SEP). Any current row makes a store or lane known, an inactive one too
(a closed store's last sales still belong to the chain).

The rule (protocol/CATALOG.md, "The store registry"): once the `stores` dataset holds a row, a
journal batch from a store not in it, or from a lane not in `lanes` when its store has lanes
listed, is held entry by entry (ingest, code `unregistered`); before any `stores` row exists,
every store is accepted, as before the catalog.

Ingest asks for every batch, so the answer comes from memory: `refresh` reads the catalog's
newest version (one indexed read, at most every 100 ms in an ingest group's transaction) and
reads the rows again only when a load of `stores` or `lanes` made a newer one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from protocol.catalog import KEY_SEP  # joins a lane row's key columns (store|lane)
from protocol.identity import LaneId

if TYPE_CHECKING:  # the store imports this module (a release checks the registry)
    from headoffice.db.sql import Sql


@dataclass(slots=True)
class Registry:
    """The stores and lanes of one catalog version, cached."""

    version: int | None = None  # of the last load of stores or lanes (None: not read yet)
    stores: frozenset[str] = frozenset()
    lanes: dict[str, frozenset[str]] = field(default_factory=dict)  # by store: its listed lanes
    has_catalog: bool | None = None  # the database has the catalog's tables (schema 5)
    seen: int | None = None  # the catalog's newest version when last read

    @property
    def enforced(self) -> bool:
        """Whether the registry refuses anything: the `stores` dataset holds a row."""
        return bool(self.stores)

    def refusal(self, lane: LaneId) -> str | None:
        """Why a batch of `lane` is held (`unregistered store S01`), or None: accepted."""
        if not self.stores:
            return None
        if lane.store not in self.stores:
            return f"unregistered store {lane.store}"
        listed = self.lanes.get(lane.store)
        if listed and lane.lane not in listed:
            return f"unregistered lane {lane}"
        return None

    def refresh(self, sql: Sql) -> bool:
        """Read the catalog's version; when it moved (or on the first call), the rows again.
        Returns whether the registry changed version."""
        if self.has_catalog is None:
            self.has_catalog = _has_catalog(sql)
        if not self.has_catalog:  # a database before schema 5 (importer tests, old files)
            changed, self.version = self.version is None, 0
            return changed
        row = sql.fetchone("SELECT max(version) FROM catalog_versions")  # the primary key
        latest = int(row[0]) if row is not None and row[0] is not None else 0
        if latest == self.seen:
            return False
        self.seen = latest
        # The catalog moved; the registry only if a load of stores or lanes moved it (a scan
        # of the versions table, one row per load, only when a load happened).
        row = sql.fetchone(
            "SELECT max(version) FROM catalog_versions WHERE dataset IN ('stores', 'lanes')"
        )
        version = int(row[0]) if row is not None and row[0] is not None else 0
        if version == self.version:
            return False
        stores: set[str] = set()
        lanes: dict[str, set[str]] = {}
        for dataset, key in sql.fetchall(
            "SELECT dataset, key FROM catalog_rows "
            "WHERE dataset IN ('stores', 'lanes') AND until_version IS NULL"
        ):
            if dataset == "stores":
                stores.add(str(key))
            else:
                store, _, name = str(key).partition(KEY_SEP)
                lanes.setdefault(store, set()).add(name)
        self.version = version
        self.stores = frozenset(stores)
        self.lanes = {s: frozenset(names) for s, names in lanes.items()}
        return True

    def describe(self) -> str:
        if not self.enforced:
            return f"catalog version {self.version}: no stores listed, every store is accepted"
        return (
            f"catalog version {self.version}: {len(self.stores)} stores, "
            f"{sum(len(v) for v in self.lanes.values())} lanes listed"
        )


def _has_catalog(sql: Sql) -> bool:
    if sql.dialect == "postgres":
        row = sql.fetchone("SELECT to_regclass('catalog_rows') IS NOT NULL")
    else:
        row = sql.fetchone(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'catalog_rows'"
        )
    return bool(row and row[0])
