"""Retention and the disk budget of a lane journal.

Acked entries stay `keep_acked_days` after head office acknowledged them (a restored head office
can ask for them again), then go in steps of `prune_batch` rows, each step its own short
transaction on the journal's writer, followed by `PRAGMA incremental_vacuum` so the file
shrinks. The entry at the acked mark itself is always kept: the next batch chains to its hash.
Unacked entries are never pruned.

The budget is checked on the append path (`Retention.admit`, the journal's DiskGuard): when
the journal's live pages plus the incoming documents would pass `max_journal_mb`, or the
filesystem would drop below `min_free_disk_mb`, the documents are refused with JournalFull and
nothing is dropped or overwritten. Crossing the high watermark logs a warning (and, by default,
prunes acked entries before their age, since head office already holds them); the warning
clears below the low one.

A full disk (something else filled it, or the budget was set too loose) must not stop the lane
draining, since pruning acked entries is what gives the space back. But every SQLite write
needs free pages (a WAL frame for an ack; a WAL reader even needs its -shm file to exist), so
`DiskReserve` keeps `reserve_mb` allocated beside the journal and gives it back when a write
finds the disk full, or at start when the disk has less free: acks, pruning and the status file
then have room. Documents are refused while the reserve is out; it is taken again, and
documents accepted again, as soon as the disk has room for it (the same idea as CockroachDB's
emergency ballast file). An ack that cannot be written even so is held in memory by the journal
(`Journal.held_ack`) and written by this loop when it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiosqlite

from agent.journal import Journal, JournalError
from agent.opsconfig import RetentionConfig
from protocol.runtime.tasks import Component, Loops

log = logging.getLogger(__name__)

MIB = 1024 * 1024
FULL_DISK_CHECK_S = 2.0
Level = Literal["ok", "high", "full"]


async def used_bytes(db: aiosqlite.Connection) -> int:
    """Bytes of live pages: what the journal holds, not counting free pages it may reuse."""
    out = []
    for pragma in ("page_count", "freelist_count", "page_size"):
        row = await (await db.execute(f"PRAGMA {pragma}")).fetchone()
        out.append(int(row[0]) if row else 0)
    return (out[0] - out[1]) * out[2]


def reserve_path(journal_path: Path) -> Path:
    return journal_path.with_name(journal_path.name + ".reserve")


class DiskReserve:
    """`reserve_mb` of disk held in a file beside the journal for the journal's housekeeping."""

    def __init__(self, journal_path: Path, size_mb: int) -> None:
        self.path = reserve_path(journal_path)
        self.size = size_mb * MIB

    @property
    def enabled(self) -> bool:
        return self.size > 0

    @property
    def in_place(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size
        except OSError:
            return False

    @property
    def start_part(self) -> int:
        """What a running agent keeps of its reserve: the next start may need it to open the
        journal at all (a WAL reader needs its -shm file, 32 KiB, created at open)."""
        return self.size // 4

    def release(self, why: str, keep: int = 0) -> bool:
        """Give the reserve back to the filesystem, all but `keep` bytes; True if any went."""
        try:
            had = self.path.stat().st_size
            if had <= keep:
                return False
            if keep:
                os.truncate(self.path, keep)
            else:
                self.path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.error("cannot release the disk reserve %s: %s", self.path, exc)
            return False
        log.warning(
            "%s: released %d KiB of the disk reserve %s so the journal can record acks and "
            "prune; new documents are refused until there is room for all of it again",
            why,
            (had - keep) // 1024,
            self.path,
        )
        return True

    def release_if_short(self) -> bool:
        """At start: with less free than the reserve, the journal may not even open; release."""
        if not self.enabled:
            return False
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:
            return False
        return free < self.size and self.release(f"only {free} bytes free on {self.path.parent}")

    def fits(self, free: int, floor: int) -> bool:
        """Room to take the reserve and still have as much again above the floor."""
        return free - self.size >= floor + self.size

    def take(self, free: int, floor: int) -> bool:
        """Allocate the reserve again if the disk has room for it and then some; True if done."""
        if not self.enabled or self.in_place or not self.fits(free, floor):
            return False
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)  # real blocks, not a sparse file
            finally:
                os.close(fd)
            tmp.replace(self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            log.info("disk reserve %s not taken yet: %s", self.path, exc)
            return False
        log.info("disk reserve %s of %d MiB in place", self.path, self.size // MIB)
        return True


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

    def __init__(self, cfg: RetentionConfig, path: Path, journal: Journal | None = None) -> None:
        self.cfg = cfg
        self.path = path
        self.journal = journal
        self.reserve = DiskReserve(path, cfg.reserve_mb)
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
        """None to accept `incoming` bytes of new documents, else a reason a technician can act
        on."""
        cap = self.cap_bytes
        estimate = self.state.used_bytes + self._added_since + incoming
        # Measuring costs three PRAGMAs; skip it while far from every limit (< 1 s old, < 50 %).
        fresh = time.monotonic() - self._checked_at < 1.0
        far = (not cap or estimate < cap // 2) and (
            self.state.free_disk_bytes - self._added_since - incoming
            > 2 * self.cfg.min_free_disk_mb * MIB
        )
        if not (fresh and far) or self.disk_full() is not None:
            await self.measure(db)
        reserve = self.reserve
        if reserve.enabled and not reserve.in_place:
            # Room again: the reserve goes back before any document may use that room.
            reserve.take(self.state.free_disk_bytes, self.cfg.min_free_disk_mb * MIB)
            self._disk()
        reason = self._refusal(incoming)
        if reason is None:
            self._added_since += incoming
            return None
        self.state.level = "full"
        self.state.refused += 1
        self.state.last_refusal = reason
        return reason

    def disk_full(self) -> str | None:
        """Why the disk counts as full beyond the budget: the reserve is out with no room to take
        it again, or a write found no room."""
        reserve, floor = self.reserve, self.cfg.min_free_disk_mb * MIB
        out = reserve.enabled and not reserve.in_place
        if out:
            self._disk()  # one statvfs: the space the reserve left must not go to documents
        if out and not reserve.fits(self.state.free_disk_bytes, floor):
            return (
                f"disk full: {self.state.free_disk_bytes} bytes free on the journal's filesystem "
                f"({self.path.parent}); the agent's {self.reserve.size // MIB} MiB reserve "
                "(retention.reserve_mb) is released so acks and pruning can go on"
            )
        j = self.journal
        if j is None or j.disk_full is None:
            return None
        if reserve.in_place or self.state.free_disk_bytes >= (j.disk_full_free or 0) + MIB:
            j.disk_full = None  # space came back since that write failed
            return None
        return j.disk_full

    def _refusal(self, incoming: int) -> str | None:
        st, cap = self.state, self.cap_bytes
        full = self.disk_full()
        if full is not None:
            return (
                f"{full}; the document is NOT confirmed. Confirmed documents are kept; free disk "
                "space (the agent resumes by itself) or restore the link to head office"
            )
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
        if self.disk_full() is not None:
            after: Level = "full"
        elif use >= self.cfg.high_watermark_pct:
            after = "full" if self._refusal(0) else "high"
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


class Retention(Component):
    """Async context manager: prunes in the background, and is the journal's DiskGuard once the
    daemon hands it over (`Journal.guarded_by`)."""

    def __init__(self, journal: Journal, cfg: RetentionConfig) -> None:
        self.journal = journal
        self.cfg = cfg
        self.budget = DiskBudget(cfg, journal.path, journal)
        # (acked_seq, wall time it was first seen acked): what may go once it is old enough.
        self._marks: deque[tuple[int, float]] = deque()
        super().__init__(f"retention {journal.lane}")

    @property
    def state(self) -> BudgetState:
        return self.budget.state

    async def setup(self) -> None:
        if self.journal.acked_seq:
            # After a restart we only know when the latest ack happened: conservative for all.
            at = (self.journal.acked_at or 0) / 1000 or time.time()
            self._marks.append((self.journal.acked_seq, at))
        await self.journal.run_write(self.budget.measure)
        self._settle_reserve()

    def loops(self) -> Loops:
        return [("prune", self._loop())]

    # --- the journal's DiskGuard (handed to it by the daemon: Journal.guarded_by) ------------

    async def admit(self, db: aiosqlite.Connection, incoming: int) -> str | None:
        """None to accept a group of new documents, else a reason a technician can act on."""
        return await self.budget.admit(db, incoming)

    def disk_filled(self) -> bool:
        """A journal write found no room; give the reserve back."""
        self.state.level = "full"
        reserve = self.budget.reserve
        return reserve.release("a journal write found the disk full", keep=reserve.start_part)

    def _settle_reserve(self) -> None:
        """Take the reserve when there is room, give it back when the disk is about to fill."""
        reserve, st = self.budget.reserve, self.state
        if not reserve.enabled:
            return
        if reserve.in_place:
            if st.free_disk_bytes < MIB:
                reserve.release(f"only {st.free_disk_bytes} bytes free", keep=reserve.start_part)
        elif reserve.take(st.free_disk_bytes, self.cfg.min_free_disk_mb * MIB):
            self.budget._disk()
            self.budget._update_level()

    async def _housekeeping(self) -> int:
        """One round: prune, measure, settle the reserve, write a held ack."""
        n = await self.prune_once()
        if n == 0:
            await self.journal.run_write(self.budget.measure)
        self._settle_reserve()
        if self.journal.held_ack is not None:
            await self.journal.save_held_ack()
        return n

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

        # On a full disk the pages go back to the filesystem only when the WAL is checkpointed
        # into the file and both are truncated: then at once.
        full = self.state.level == "full"
        n, self.state.oldest_kept_seq = await self.journal.prune(bound, limit, checkpoint=full)
        await self.journal.run_write(self.budget.measure)
        self.state.pruned += n
        if n:
            log.info(
                "journal %s: pruned %d acked entries up to seq %d", self.journal.path, n, bound
            )
        return n

    async def _loop(self) -> None:
        while True:
            try:
                n = await self._housekeeping()
            except JournalError as exc:
                log.error("journal %s: pruning failed: %s", self.journal.path, exc)
                n = 0
            # A full step means more is waiting: continue soon, letting appends in between. A
            # full disk is looked at every few seconds, so the lane resumes soon after space is
            # back.
            pause = self.cfg.prune_interval_s
            if self.state.level == "full":
                pause = min(pause, FULL_DISK_CHECK_S)
            await asyncio.sleep(0.05 if n >= self.cfg.prune_batch else pause)
