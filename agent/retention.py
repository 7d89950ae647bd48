"""Retention and the disk budget of a lane journal.

Acked entries stay `keep_acked_days` after head office acknowledged them (a restored head office
can ask for them again), then go in steps of `prune_batch` rows, each step its own short
transaction on the journal's writer, followed by `PRAGMA incremental_vacuum` so the file
shrinks. The entry at the acked mark itself is always kept: the next batch chains to its hash.
Unacked entries are never pruned.

The budget is checked on the append path (`Journal.admit`): when the journal's live pages plus
the incoming documents would pass `max_journal_mb`, or the filesystem would drop below
`min_free_disk_mb`, the documents are refused with JournalFull and nothing is dropped or
overwritten. Crossing the high watermark logs a warning (and, by default, prunes acked entries
before their age, since head office already holds them); the warning clears below the low one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import aiosqlite

from agent.journal import Journal, JournalError
from agent.opsconfig import RetentionConfig

log = logging.getLogger(__name__)

MIB = 1024 * 1024
Level = Literal["ok", "high", "full"]


async def used_bytes(db: aiosqlite.Connection) -> int:
    """Bytes of live pages: what the journal holds, not counting free pages it may reuse."""
    out = []
    for pragma in ("page_count", "freelist_count", "page_size"):
        row = await (await db.execute(f"PRAGMA {pragma}")).fetchone()
        out.append(int(row[0]) if row else 0)
    return (out[0] - out[1]) * out[2]


@dataclass(slots=True)
class BudgetState:
    used_bytes: int = 0
    free_disk_bytes: int = 0
    total_disk_bytes: int = 0
    level: Level = "ok"
    refused: int = 0  # documents refused because the journal was full
    last_refusal: str | None = None
    pruned: int = 0  # entries pruned since start
    oldest_kept_seq: int | None = None

    @property
    def ratio(self) -> float:
        return (
            0.0 if not self.total_disk_bytes else 1 - self.free_disk_bytes / self.total_disk_bytes
        )


class DiskBudget:
    """Decides whether a group of new documents fits; tracks the watermark level."""

    def __init__(self, cfg: RetentionConfig, path: Path) -> None:
        self.cfg = cfg
        self.path = path
        self.state = BudgetState()
        self._checked_at = 0.0
        self._added_since = 0

    @property
    def cap_bytes(self) -> int:
        return self.cfg.max_journal_mb * MIB

    def usage(self) -> float:
        """Share of the budget in use: the journal against its cap, else the filesystem."""
        if self.cap_bytes:
            return self.state.used_bytes / self.cap_bytes
        return self.state.ratio

    def _disk(self) -> None:
        du = shutil.disk_usage(self.path.parent)
        self.state.free_disk_bytes, self.state.total_disk_bytes = du.free, du.total

    async def measure(self, db: aiosqlite.Connection) -> None:
        self.state.used_bytes = await used_bytes(db)
        self._disk()
        self._checked_at = time.monotonic()
        self._added_since = 0
        self._update_level()

    async def admit(self, db: aiosqlite.Connection, incoming: int) -> str | None:
        """Journal.admit hook: None to accept, else a reason a technician can act on."""
        cap = self.cap_bytes
        estimate = self.state.used_bytes + self._added_since + incoming
        # Measuring costs three PRAGMAs; skip it while far from every limit (< 1 s old, < 50 %).
        fresh = time.monotonic() - self._checked_at < 1.0
        far = (not cap or estimate < cap // 2) and (
            self.state.free_disk_bytes - self._added_since - incoming
            > 2 * self.cfg.min_free_disk_mb * MIB
        )
        if not (fresh and far):
            await self.measure(db)
        reason = self._refusal(incoming)
        if reason is None:
            self._added_since += incoming
            return None
        self.state.level = "full"
        self.state.refused += 1
        self.state.last_refusal = reason
        return reason

    def _refusal(self, incoming: int) -> str | None:
        st, cap = self.state, self.cap_bytes
        if cap and st.used_bytes + incoming > cap:
            return (
                f"journal full: {st.used_bytes / MIB:.1f} MiB of the {cap // MIB} MiB budget "
                f"(retention.max_journal_mb) is in use; the document is NOT confirmed. Confirmed "
                "documents are kept until head office acknowledges them: restore the link to "
                "head office, or carry the backlog over with `lanesync journal export`"
            )
        floor = self.cfg.min_free_disk_mb * MIB
        if st.free_disk_bytes - incoming < floor:
            return (
                f"disk nearly full: {st.free_disk_bytes / MIB:.1f} MiB free on the journal's "
                f"filesystem ({self.path.parent}), below retention.min_free_disk_mb = "
                f"{self.cfg.min_free_disk_mb}; the document is NOT confirmed. Free disk space "
                "or restore the link to head office"
            )
        return None

    def _update_level(self) -> None:
        use = self.usage() * 100
        before = self.state.level
        if use >= self.cfg.high_watermark_pct:
            after: Level = "full" if self._refusal(0) else "high"
        elif use < self.cfg.low_watermark_pct or before == "full":
            after = "ok" if self._refusal(0) is None else "full"
        else:
            after = before  # between the marks: keep the level (hysteresis)
        if after == before:
            return
        self.state.level = after
        if after != "ok":
            log.warning(
                "journal %s: disk budget %s: %.0f%% used (high watermark %d%%)%s",
                self.path,
                after,
                use,
                self.cfg.high_watermark_pct,
                "; pruning acked entries early" if self.cfg.prune_early_when_high else "",
            )
        else:
            log.info("journal %s: disk use back to %.0f%%, below the low watermark", self.path, use)


class Retention:
    """Async context manager: installs the budget on the journal and prunes in the background."""

    def __init__(self, journal: Journal, cfg: RetentionConfig) -> None:
        self.journal = journal
        self.cfg = cfg
        self.budget = DiskBudget(cfg, journal.path)
        # (acked_seq, wall time it was first seen acked): what may go once it is old enough.
        self._marks: deque[tuple[int, float]] = deque()
        self._tasks: asyncio.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def state(self) -> BudgetState:
        return self.budget.state

    async def __aenter__(self) -> Self:
        if self.journal.acked_seq:
            # After a restart we only know when the latest ack happened: conservative for all.
            at = (self.journal.acked_at or 0) / 1000 or time.time()
            self._marks.append((self.journal.acked_seq, at))
        await self.journal.run_write(self.budget.measure)
        self.journal.admit = self.budget.admit
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._task = self._tasks.create_task(self._loop(), name=f"retention {self.journal.lane}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.journal.admit = None
        if self._task is not None:
            self._task.cancel()
        if self._tasks is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._tasks.__aexit__(None, None, None)

    def prune_bound(self, now: float | None = None) -> int:
        """Highest seq that may be deleted now (0: none)."""
        now = time.time() if now is None else now
        acked = self.journal.acked_seq
        if not self._marks or self._marks[-1][0] != acked:
            self._marks.append((acked, now))
        cutoff = now - self.cfg.keep_acked_days * 86_400
        old = 0
        while self._marks and self._marks[0][1] <= cutoff:
            old = max(old, self._marks.popleft()[0])
        if old:
            self._marks.appendleft((old, cutoff))  # still true next time; keeps the deque short
        if self.cfg.prune_early_when_high and self.budget.state.level != "ok":
            old = acked
        return max(0, min(old, acked - 1))

    async def prune_once(self, now: float | None = None) -> int:
        """Delete up to prune_batch old acked entries and give their pages back; returns count."""
        bound = self.prune_bound(now)
        if bound <= 0:
            return 0
        limit = self.cfg.prune_batch

        async def step(db: aiosqlite.Connection) -> int:
            await db.execute("BEGIN IMMEDIATE")
            cur = await db.execute(
                "DELETE FROM entries WHERE seq IN "
                "(SELECT seq FROM entries WHERE seq <= ? ORDER BY seq LIMIT ?)",
                (bound, limit),
            )
            await db.execute("COMMIT")
            n = cur.rowcount
            if n:
                # Gives freed pages back to the filesystem (auto_vacuum=INCREMENTAL journals).
                # executescript steps the pragma to the end; execute() frees only one page.
                await db.executescript(f"PRAGMA incremental_vacuum({4 * limit});")
            row = await (await db.execute("SELECT min(seq) FROM entries")).fetchone()
            self.state.oldest_kept_seq = int(row[0]) if row and row[0] is not None else None
            await self.budget.measure(db)
            return int(n)

        n = await self.journal.run_write(step)
        self.state.pruned += n
        if n:
            log.info(
                "journal %s: pruned %d acked entries up to seq %d", self.journal.path, n, bound
            )
        return n

    async def _loop(self) -> None:
        while True:
            try:
                n = await self.prune_once()
                if n == 0:
                    await self.journal.run_write(self.budget.measure)
            except JournalError as exc:
                log.error("journal %s: pruning failed: %s", self.journal.path, exc)
                n = 0
            # A full step means more is waiting: continue soon, letting appends in between.
            await asyncio.sleep(0.05 if n >= self.cfg.prune_batch else self.cfg.prune_interval_s)
