"""The journal file read-only: for the tools that look at it from outside the agent, and the
two reads the lane's open-document store makes on its own connection.

`lanesync journal verify | tail | export` and `lanesync status` read the file with the stdlib
sqlite3 module in read-only mode, so they work while the agent writes (WAL) and when it is
stopped, without touching the agent's writer. They read through `JournalFile` and never with
SQL of their own, so the journal's tables stay the journal's (agent.journal).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiosqlite
import msgpack

from protocol.messages import Entry


async def journaled(db: aiosqlite.Connection, txn_id: str) -> tuple[int, Any] | None:
    """(seq, decoded document) of a journaled txn_id, or None: agent.open_docs.store asks this
    on the connection it keeps to the journal file."""
    rows = list(
        await db.execute_fetchall("SELECT seq, body FROM entries WHERE txn_id = ?", (txn_id,))
    )
    if not rows:
        return None
    return int(rows[0][0]), msgpack.unpackb(bytes(rows[0][1]), raw=False)


async def documents_after(db: aiosqlite.Connection, seq: int) -> AsyncIterator[Any]:
    """Each document journaled after `seq`, decoded, in seq order, streamed (a lane may hold
    many since its last checkpoint)."""
    async with db.execute("SELECT body FROM entries WHERE seq > ? ORDER BY seq", (seq,)) as cur:
        async for (body,) in cur:
            yield msgpack.unpackb(bytes(body), raw=False)


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """A read-only connection to an SQLite file of the lane (the journal, or its catalog)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such journal file")
    return sqlite3.connect(f"file:{p}?mode=ro", uri=True)


class JournalFile:
    """A journal file opened read-only; a context manager that closes it.

    Raises FileNotFoundError when there is no file and sqlite3.Error when it cannot be read.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = open_readonly(self.path)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def integrity(self) -> str:
        """SQLite's quick_check: "ok", or what it found damaged."""
        return str(self._db.execute("PRAGMA quick_check").fetchone()[0])

    def meta(self) -> dict[str, str]:
        """The journal's identity: store, lane and epoch (absent before an agent opened it)."""
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def acked(self) -> tuple[int, int | None]:
        """Head office's ack mark as saved, and when it was saved (ms since the epoch)."""
        seq, at = self._db.execute("SELECT acked_seq, acked_at FROM outbox").fetchone()
        return int(seq), at

    def seq_range(self) -> tuple[int | None, int | None]:
        """The first and last seq the file holds (None, None when it holds none)."""
        first, last = self._db.execute("SELECT min(seq), max(seq) FROM entries").fetchone()
        return first, last

    def entries(self, after: int = 0) -> Iterator[Entry]:
        """Every entry past seq `after`, in seq order."""
        rows = self._db.execute(
            "SELECT seq, kind, txn_id, ts, body, hash FROM entries WHERE seq > ? ORDER BY seq",
            (after,),
        )
        for seq, kind, txn_id, ts, body, hash_ in rows:
            yield Entry(seq, kind, txn_id, ts, bytes(body), bytes(hash_))

    def latest(self, n: int) -> list[Entry]:
        """The last `n` entries, in seq order."""
        rows = self._db.execute(
            "SELECT seq, kind, txn_id, ts, body, hash FROM entries ORDER BY seq DESC LIMIT ?", (n,)
        ).fetchall()
        return [Entry(r[0], r[1], r[2], r[3], bytes(r[4]), bytes(r[5])) for r in reversed(rows)]

    def entry_hash(self, seq: int) -> bytes | None:
        """The chain hash of entry `seq`, None when the file does not hold it."""
        row = self._db.execute("SELECT hash FROM entries WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else bytes(row[0])

    def unacked(self, acked_seq: int) -> tuple[int, int | None]:
        """Body bytes of the entries past `acked_seq`, and the time of the oldest (ms)."""
        size, oldest = self._db.execute(
            "SELECT coalesce(sum(length(body)), 0), min(ts) FROM entries WHERE seq > ?",
            (acked_seq,),
        ).fetchone()
        return int(size), oldest

    def quarantined(self) -> int | None:
        """Rows of the quarantine table; None when the journal's schema has none."""
        tables = {
            r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if "quarantine" not in tables:
            return None
        return int(self._db.execute("SELECT count(*) FROM quarantine").fetchone()[0])
