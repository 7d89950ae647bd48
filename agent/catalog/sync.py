"""Brings the lane's catalog to its store's head: inline delta, delta pages, or a snapshot.

Head office keeps a retained head on the store's catalog topic (protocol/CATALOG.md), so the
replicator hands one over at every (re)connect and whenever it moves. `on_head` only notes it;
the sync task then works towards it, with the replicator's request/reply:

- the head's inline delta when its `prev` is the version held (no round trip);
- otherwise `catalog_delta` pages from the version held, staged as they come and applied in
  one transaction when the last arrives;
- a snapshot in chunks (a few requests in flight, each chunk checked by its sha256 when
  parsed, staged) when the lane holds nothing, head office answers `snapshot_needed`, or a
  version's hash did not match head office's (that version is rolled back first).

Whatever was staged when the agent was killed or the link cut is resumed, not fetched again.
Offline the lane keeps the last complete version (the store never holds a half one); a failed
attempt is retried with a capped backoff, or at once when a new head arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agent import malloc
from agent.catalog.store import CatalogStore, CatalogStoreError, HashMismatch, Held, Transfer
from agent.config import CatalogConfig
from protocol import catalog as contract
from protocol.errors import LanesyncError, ProtocolError
from protocol.messages import Reply
from protocol.runtime.tasks import Component, Loops

log = logging.getLogger(__name__)

RequestFn = Callable[[str, dict[str, Any], float], Awaitable[Reply]]


class Refused(LanesyncError):
    """Head office refused a catalog request; `code` says why (snapshot_needed, ...)."""

    code = "refused"

    def __init__(self, op: str, code: str | None, error: str | None) -> None:
        why = ": ".join(x for x in (code, error) if x) or "no reason given"
        super().__init__(f"head office refused {op}: {why}", code=code)


@dataclass(slots=True)
class SyncStats:
    heads: int = 0  # heads received
    refused_heads: int = 0  # heads that did not parse or named another store
    inline: int = 0  # versions applied from a head's inline delta
    deltas: int = 0  # versions applied from catalog_delta pages
    snapshots: int = 0  # versions applied from a snapshot
    chunks: int = 0  # snapshot chunks fetched and staged
    mismatches: int = 0  # versions whose hash did not match head office's (rolled back)
    failures: int = 0  # attempts that failed (link down, refused, bad reply)
    last_error: str | None = None


class CatalogSync(Component):
    """Async context manager running the sync task; the replicator calls `on_head`."""

    def __init__(self, store: CatalogStore, config: CatalogConfig) -> None:
        self.store = store
        self.config = config
        self.stats = SyncStats()
        self._head: contract.CatalogHead | None = None
        self._request: RequestFn | None = None
        self._wake = asyncio.Event()
        super().__init__(f"catalog-sync {store.store}")
        self.caught_up = asyncio.Event()  # set while the version held is the newest head's

    @property
    def version(self) -> int:
        """The complete version the lane holds (hello and status say it)."""
        return self.store.held.version

    @property
    def head_version(self) -> int:
        return self._head.version if self._head is not None else self.store.head_version

    def loops(self) -> Loops:
        return [("follow-head", self._run())]

    # --- from the replicator --------------------------------------------------------------

    def on_head(self, payload: bytes, request: RequestFn) -> None:
        """A retained head arrived on the store's catalog topic; `request` asks head office."""
        self.stats.heads += 1
        if not payload:
            # Head office cleared the retained head: the store left the registry. The lane
            # keeps trading on what it holds; a new head (the store listed again) resumes.
            log.warning(
                "catalog: head office withdrew store %s's catalog head; keeping version %d",
                self.store.store,
                self.version,
            )
            return
        try:
            head = contract.decode_head(payload)
        except ProtocolError as exc:
            self.stats.refused_heads += 1
            log.error("catalog: refused a head on %s's topic: %s", self.store.store, exc)
            return
        if head.store != self.store.store:
            self.stats.refused_heads += 1
            log.error(
                "catalog: a head for store %s arrived on store %s's topic; ignored",
                head.store,
                self.store.store,
            )
            return
        self._head, self._request = head, request
        self._wake.set()

    # --- the task -------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.config.retry_initial_s
        while True:
            await self._wake.wait()
            self._wake.clear()
            head, request = self._head, self._request
            if head is None or request is None:
                continue
            try:
                await self._catch_up(head, request)
            except Exception as exc:
                # RequestTimeout (link down, head office slow), a refusal, a bad reply, or the
                # catalog file failing: keep the version held and try again later. Anything
                # else is a defect, logged with its traceback, and must not stop the agent.
                self.stats.failures += 1
                self.stats.last_error = str(exc)
                if not isinstance(exc, LanesyncError | ProtocolError):
                    log.exception("catalog: unexpected failure bringing the catalog up to date")
                log.warning(
                    "catalog: store %s holds version %d, head is %d: %s; retrying in %.1fs",
                    self.store.store,
                    self.version,
                    head.version,
                    exc,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()  # a new head (a reconnect) retries at once
                self._wake.set()
                delay = min(delay * 2, self.config.retry_max_s)
                continue
            delay = self.config.retry_initial_s
            self.stats.last_error = None

    async def _catch_up(self, head: contract.CatalogHead, request: RequestFn) -> None:
        await self.store.note_head(head.version, head.at)
        snapshot_taken = False
        while True:
            if self._head is not None and self._head.version > head.version:
                head = self._head  # a newer head came meanwhile: aim for it
                await self.store.note_head(head.version, head.at)
            held = self.store.held
            staged = await self.store.transfer()
            if staged is not None and staged.kind == "snapshot":
                await self._snapshot(request, staged)
                snapshot_taken = True
                continue
            if staged is not None and staged.base != held.version:
                await self.store.drop()  # a delta from a version no longer held
                staged = None
            if held.version == head.version:
                if (held.hash, held.rows) == (head.hash, head.rows):
                    self.caught_up.set()
                    return
                self._mismatch(
                    f"version {held.version} is held with hash {held.hash.hex()[:16]}..., "
                    f"head office's is {head.hash.hex()[:16]}..."
                )
                if snapshot_taken:
                    raise CatalogStoreError(
                        f"a fresh snapshot of version {held.version} still differs from the head"
                    )
                await self._snapshot(request, None)
                snapshot_taken = True
                continue
            self.caught_up.clear()
            if held.version > head.version:
                # Head office went back (restored from an older copy): it owns the data.
                log.warning(
                    "catalog: store %s holds version %d but head office's head is %d; "
                    "taking a snapshot",
                    self.store.store,
                    held.version,
                    head.version,
                )
                if snapshot_taken:
                    raise CatalogStoreError("the head is older than a snapshot just taken")
                await self._snapshot(request, None)
                snapshot_taken = True
                continue
            if held.version == 0:
                await self._snapshot(request, None)
                snapshot_taken = True
                continue
            try:
                if staged is None and head.prev == held.version and head.changes is not None:
                    await self.store.apply_delta(
                        held.version, head.version, head.changes, head.hash, head.rows
                    )
                    self.stats.inline += 1
                    self._applied("inline delta", held)
                else:
                    await self._delta(request, held, head.version, staged)
            except HashMismatch as exc:
                self._mismatch(str(exc))
                await self._snapshot(request, None)
                snapshot_taken = True
            except Refused as exc:
                if exc.code != contract.SNAPSHOT_NEEDED:
                    raise
                log.info("catalog: head office has no delta from %d: snapshot", held.version)
                await self.store.drop()
                await self._snapshot(request, None)
                snapshot_taken = True

    def _mismatch(self, why: str) -> None:
        self.stats.mismatches += 1
        log.error("catalog: store %s: %s; asking for a snapshot", self.store.store, why)

    def _applied(self, how: str, before: Held) -> None:
        now = self.store.held
        log.info(
            "catalog: store %s at version %d (%d rows) from %d by %s",
            self.store.store,
            now.version,
            now.rows,
            before.version,
            how,
        )

    async def _ask(self, request: RequestFn, op: str, args: dict[str, Any]) -> dict[str, Any]:
        reply = await request(op, args, self.config.request_timeout_s)
        if not reply.ok:
            code = reply.result.get("code")
            raise Refused(op, code if isinstance(code, str) else None, reply.error)
        return reply.result

    # --- delta pages ----------------------------------------------------------------------

    async def _delta(
        self, request: RequestFn, held: Held, target: int, staged: Transfer | None
    ) -> None:
        part = 0
        after: Any = None
        if staged is not None:
            target = staged.target
            part = max(staged.parts, default=-1) + 1
            after = staged.after
        while True:
            args = contract.DeltaRequest(
                held.version, target, None if after is None else (after[0], after[1])
            ).to_map()
            page = contract.DeltaReply.from_map(await self._ask(request, contract.OP_DELTA, args))
            if page.from_ != held.version:
                raise CatalogStoreError(
                    f"asked for a delta from {held.version}, head office sent one from {page.from_}"
                )
            if staged is None:
                await self.store.begin("delta", held.version, page.to, page.hash, page.rows)
                staged = Transfer(
                    "delta",
                    held.version,
                    page.to,
                    page.hash,
                    page.rows,
                    None,
                    None,
                    None,
                    frozenset(),
                )
            elif (page.to, page.hash, page.rows) != (staged.target, staged.hash, staged.rows):
                await self.store.drop()
                raise CatalogStoreError(
                    f"delta pages to version {staged.target} changed under way; starting over"
                )
            last = contract.sort_key(page.changes[-1]) if page.changes else after
            await self.store.stage(part, page.changes, after=last)
            part += 1
            after = last
            if not page.more:
                break
        await self.store.finish()
        self.stats.deltas += 1
        self._applied(f"{part} delta page(s)", held)

    # --- snapshot -------------------------------------------------------------------------

    async def _snapshot(self, request: RequestFn, staged: Transfer | None) -> None:
        with malloc.heap_for_burst():  # a run of large buffers: see agent.malloc
            await self._take_snapshot(request, staged)

    async def _take_snapshot(self, request: RequestFn, staged: Transfer | None) -> None:
        before = self.store.held
        size = self.config.chunk_rows
        for _attempt in range(2):
            try:
                if staged is None:
                    first = await self._chunk(request, 0, 0, size)
                    await self.store.begin(
                        "snapshot",
                        before.version,
                        first.version,
                        first.hash,
                        first.rows,
                        chunks=first.chunks,
                        size=size,
                    )
                    await self.store.stage(0, first.changes)
                    self.stats.chunks += 1
                    staged = await self.store.transfer()
                    assert staged is not None
                await self._fetch_chunks(request, staged)
                break
            except Refused as exc:
                if exc.code != contract.SNAPSHOT_EXPIRED:
                    raise
                log.info("catalog: snapshot version expired at head office; starting over")
                await self.store.drop()
                staged = None
        else:
            raise CatalogStoreError("head office expired two snapshots in a row")
        await self.store.finish()
        self.stats.snapshots += 1
        self._applied(f"snapshot of {staged.chunks} chunk(s)", before)

    async def _fetch_chunks(self, request: RequestFn, staged: Transfer) -> None:
        assert staged.chunks is not None
        assert staged.size is not None
        missing = [i for i in range(staged.chunks) if i not in staged.parts]
        if staged.parts:
            log.info(
                "catalog: resuming the snapshot of version %d: %d of %d chunks staged",
                staged.target,
                len(staged.parts),
                staged.chunks,
            )
        queue = iter(missing)

        async def worker() -> None:
            for i in queue:  # shared iterator: each chunk fetched once, `window` at a time
                chunk = await self._chunk(request, staged.target, i, staged.size or 1)
                if (chunk.version, chunk.hash, chunk.rows, chunk.chunks) != (
                    staged.target,
                    staged.hash,
                    staged.rows,
                    staged.chunks,
                ):
                    raise CatalogStoreError(
                        f"chunk {i} is of another snapshot (version {chunk.version}, "
                        f"{chunk.chunks} chunks) than the one staged ({staged.target})"
                    )
                await self.store.stage(i, chunk.changes)
                self.stats.chunks += 1

        try:
            async with asyncio.TaskGroup() as tg:
                for n in range(min(self.config.window, len(missing))):
                    tg.create_task(worker(), name=f"catalog-chunk-{n}")
        except ExceptionGroup as eg:
            # The first failure says why (the others were cancelled by it, or fail alike).
            first: BaseException = eg
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None

    async def _chunk(
        self, request: RequestFn, version: int, chunk: int, size: int
    ) -> contract.SnapshotReply:
        args = contract.SnapshotRequest(version, chunk, size).to_map()
        result = await self._ask(request, contract.OP_SNAPSHOT, args)
        # Checking 2,000 rows and their sha256 takes tens of ms: off the loop that sells.
        reply = await asyncio.to_thread(contract.SnapshotReply.from_map, result)
        if reply.chunk != chunk:
            raise CatalogStoreError(f"asked for chunk {chunk}, head office sent {reply.chunk}")
        return reply
