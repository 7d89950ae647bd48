"""A scripted head office for the lane's catalog tests, made of protocol.catalog's builders.

It keeps each version of one store's view as a dict and answers `catalog_delta` and
`catalog_snapshot` the way CATALOG.md says, through the real payload classes (so every reply
is parsed by the lane exactly as a real one), plus the retained head's bytes. It is the seam
the sync tests script (refusals, lost replies, changed hashes); the end-to-end tests use the
real head office instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from protocol import catalog as c
from protocol.identity import LaneId
from protocol.messages import Reply

Key = tuple[str, str]
View = dict[Key, dict[str, Any]]

LANE = LaneId("S1", "L1")
GTINS = ["4006381333931", "96385074", "036000291452"]  # valid GS1 check digits


def item(code: str, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "code": code,
        "description": f"Item {code}",
        "tax_code": "STD",
        "variant": False,
        "active": True,
    }
    row.update(kw)
    return c.check_row(c.DATASETS["items"], row)


def row(dataset: str, **values: Any) -> tuple[Key, dict[str, Any]]:
    ds = c.DATASETS[dataset]
    checked = c.check_row(ds, values)
    return (dataset, ds.key_of(checked)), checked


def items_view(n: int) -> View:
    return {("items", f"I{i:06d}"): item(f"I{i:06d}") for i in range(n)}


def view_hash(view: View) -> bytes:
    return c.view_hash((c.DATASETS[d], r) for (d, _k), r in view.items())


class ScriptedHeadOffice:
    """Versions of one store's view; answers requests like head office's handlers."""

    def __init__(self, store: str = LANE.store) -> None:
        self.store = store
        self.versions: dict[int, View] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.expired: set[int] = set()  # versions whose snapshot rows are "gone"
        self.no_delta_from: set[int] = set()  # deltas from these answer snapshot_needed
        self.page_size = c.MAX_DELTA_CHANGES
        # Called before each answer; raising makes the request fail as a lost reply would.
        self.before: Callable[[str, dict[str, Any]], None] | None = None
        self.corrupt: set[int] = set()  # versions whose advertised hash is wrong
        self._corr = itertools.count(1)

    @property
    def latest(self) -> int:
        return max(self.versions, default=0)

    def publish(self, view: View) -> int:
        version = self.latest + 1
        self.versions[version] = dict(view)
        return version

    def hash_of(self, version: int) -> bytes:
        h = view_hash(self.versions[version])
        if version in self.corrupt:
            return c.hash_add(h, bytes(31) + b"\x01")
        return h

    def changes(self, frm: int, to: int) -> list[c.Change]:
        old, new = self.versions.get(frm, {}), self.versions[to]
        return [
            (key[0], key[1], new.get(key))
            for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key)
        ]

    def head(self, version: int | None = None, *, inline: bool = True) -> bytes:
        version = version or self.latest
        prev = version - 1 if version - 1 in self.versions else None
        changes = self.changes(prev, version) if prev is not None else None
        if not inline or changes is None or len(changes) > c.INLINE_CHANGES:
            prev = changes = None
        h = c.CatalogHead(
            self.store,
            version,
            self.hash_of(version),
            len(self.versions[version]),
            1_700_000_000_000,
            prev,
            changes,
        )
        return c.encode_head(h)

    async def request(self, op: str, args: dict[str, Any], timeout: float) -> Reply:
        self.requests.append((op, dict(args)))
        if self.before is not None:
            self.before(op, args)
        corr = f"c{next(self._corr)}"
        if op == c.OP_DELTA:
            return self._delta(corr, c.DeltaRequest.from_map(args))
        if op == c.OP_SNAPSHOT:
            return self._snapshot(corr, c.SnapshotRequest.from_map(args))
        return Reply(LANE, corr, False, {}, f"unknown op {op}")

    def _refuse(self, corr: str, code: str) -> Reply:
        return Reply(LANE, corr, False, c.refusal(code), code)

    def _delta(self, corr: str, req: c.DeltaRequest) -> Reply:
        if req.from_ not in self.versions or req.to not in self.versions or req.from_ > req.to:
            return self._refuse(corr, c.SNAPSHOT_NEEDED)
        if req.from_ in self.no_delta_from:
            return self._refuse(corr, c.SNAPSHOT_NEEDED)
        changes = self.changes(req.from_, req.to)
        if req.after is not None:
            changes = [ch for ch in changes if c.sort_key(ch) > req.after]
        page = changes[: self.page_size]
        more = len(changes) > self.page_size
        rep = c.DeltaReply(
            req.from_, req.to, self.hash_of(req.to), len(self.versions[req.to]), page, more
        )
        return Reply(LANE, corr, True, rep.to_map())

    def _snapshot(self, corr: str, req: c.SnapshotRequest) -> Reply:
        version = req.version or self.latest
        if version not in self.versions or version in self.expired:
            return self._refuse(corr, c.SNAPSHOT_EXPIRED)
        view = self.versions[version]
        rows: list[c.Change] = [(d, k, view[(d, k)]) for d, k in sorted(view)]
        chunks = c.chunk_count(len(rows), req.size)
        part = rows[req.chunk * req.size : (req.chunk + 1) * req.size]
        rep = c.SnapshotReply(
            version,
            self.hash_of(version),
            len(rows),
            chunks,
            req.chunk,
            c.chunk_sha256(part),
            part,
        )
        return Reply(LANE, corr, True, rep.to_map())
