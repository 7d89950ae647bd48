"""The catalog requests head office answers for lanes: `catalog_delta` and `catalog_snapshot`.

They run in ingest's writer thread with the Database's connection (headoffice.operations
registers them), so each reply costs a few index range scans: a delta is computed once per
(store, from, to) and paged from memory, a snapshot chunk walks each scope of the view from
the chunk's first key (headoffice.catalog.versions.Catalog). A reply stays under the 1 MiB
message limit: at most 2,000 changes and DELTA_PAGE_BYTES of rows a delta page, at most
MAX_SNAPSHOT_CHUNK rows a chunk.

A lane of a store the registry does not list (once the `stores` dataset holds a row) is
refused with code `unregistered`: head office publishes nothing for such a store either.
"""

from __future__ import annotations

import logging
import weakref

from headoffice.catalog import versions
from headoffice.catalog.registry import Registry
from headoffice.db import Database
from headoffice.ingest import RequestHandler
from protocol import catalog as cat
from protocol.errors import ProtocolError
from protocol.messages import Reply, Request

log = logging.getLogger(__name__)


def _refused(req: Request, code: str, reason: str, field: str | None = None) -> Reply:
    result = cat.refusal(code)
    if field is not None:
        result["field"] = field
    return Reply(req.lane, req.corr, False, result, reason)


# The store registry's one rule (headoffice/catalog/registry.py), cached per open database
# as ingest's is: a request costs one indexed read of the catalog's newest version.
_registries: weakref.WeakKeyDictionary[Database, Registry] = weakref.WeakKeyDictionary()


def _unregistered(database: Database, req: Request) -> Reply | None:
    registry = _registries.setdefault(database, Registry())
    registry.refresh(database.sql)
    reason = registry.refusal(req.lane)
    return None if reason is None else _refused(req, cat.UNREGISTERED, reason)


def delta(database: Database, req: Request, now_ms: int) -> Reply:
    try:
        args = cat.DeltaRequest.from_map(req.args)
    except ProtocolError as exc:
        return _refused(req, cat.BAD_REQUEST, str(exc), exc.field)
    refused = _unregistered(database, req)
    if refused is not None:
        return refused
    try:
        page = versions.catalog_for(database.sql).delta_page(req.lane.store, args)
    except versions.CatalogRefused as r:
        return _refused(req, r.code, str(r))
    return Reply(req.lane, req.corr, True, page.to_map())


def snapshot(database: Database, req: Request, now_ms: int) -> Reply:
    try:
        args = cat.SnapshotRequest.from_map(req.args)
    except ProtocolError as exc:
        return _refused(req, cat.BAD_REQUEST, str(exc), exc.field)
    refused = _unregistered(database, req)
    if refused is not None:
        return refused
    try:
        chunk = versions.catalog_for(database.sql).snapshot_chunk(req.lane.store, args)
    except versions.CatalogRefused as r:
        return _refused(req, r.code, str(r))
    if args.chunk == 0:
        log.info(
            "catalog snapshot of %s at version %d for %s: %d rows in %d chunks",
            req.lane.store,
            chunk.version,
            req.lane,
            chunk.rows,
            chunk.chunks,
        )
    return Reply(req.lane, req.corr, True, chunk.to_map())


def request_handlers() -> dict[str, RequestHandler]:
    return {cat.OP_DELTA: delta, cat.OP_SNAPSHOT: snapshot}
