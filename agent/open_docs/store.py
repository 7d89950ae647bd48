"""Lane-local tables next to the journal: open documents and counters (schema 0002).

A second connection to the journal file (the journal's single writer stays the only writer of
`entries`; this one only writes `open_docs` and `counters`). WAL with synchronous=FULL, so a
change is on disk when a call returns; SQLite's write lock and busy_timeout serialize the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiosqlite

from agent.documents import sscc
from agent.journal import JournalError
from agent.journal import file as journal_file
from protocol.runtime.clock import now_ms


@dataclass(slots=True)
class OpenRow:
    id: str
    kind: str
    mode: int
    state: str
    body: dict[str, Any]
    version: int


class LaneStore:
    """Async context manager over the lane-local tables; open it after the Journal."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        try:
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=FULL")
            await self._db.execute("PRAGMA busy_timeout=5000")
            # 256 KiB of page cache, not 2 MiB: a lane holds a handful of open sales (17.2).
            await self._db.execute("PRAGMA cache_size=-256")
        except BaseException as exc:
            await self.__aexit__(None, None, None)
            if isinstance(exc, sqlite3.Error):
                raise JournalError(f"cannot open lane tables in {self.path}: {exc}") from exc
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise JournalError("lane tables are not open")
        return self._db

    async def _write(self, statements: list[tuple[str, tuple[Any, ...]]]) -> list[list[Any]]:
        """Run statements in one committed transaction; returns each one's rows."""
        async with self._lock:
            db = self.db
            out: list[list[Any]] = []
            try:
                await db.execute("BEGIN IMMEDIATE")
                for sql, args in statements:
                    out.append(list(await db.execute_fetchall(sql, args)))
                await db.execute("COMMIT")
            except BaseException as exc:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        await db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise JournalError(
                        f"lane tables: write failed, nothing changed: {exc}"
                    ) from exc
                raise
            return out

    # --- open documents -------------------------------------------------------------------

    async def load_open(self) -> list[OpenRow]:
        rows = await self.db.execute_fetchall(
            "SELECT id, kind, mode, state, body, version FROM open_docs ORDER BY created_at"
        )
        return [
            OpenRow(str(r[0]), str(r[1]), int(r[2]), str(r[3]), json.loads(r[4]), int(r[5]))
            for r in rows
        ]

    async def insert_open(self, row: OpenRow) -> None:
        now = now_ms()
        await self._write(
            [
                (
                    "INSERT INTO open_docs (id, kind, mode, state, body, version, created_at, "
                    "updated_at) VALUES (?,?,?,?,?,?,?,?)",
                    (
                        row.id,
                        row.kind,
                        row.mode,
                        row.state,
                        json.dumps(row.body),
                        row.version,
                        now,
                        now,
                    ),
                )
            ]
        )

    async def save_open(self, row: OpenRow, *, sscc_serial: bool = False) -> int | None:
        """Persist a changed open document; with sscc_serial, also take the next SSCC serial
        in the same transaction and return it (the caller stores it in the body next)."""
        stmts: list[tuple[str, tuple[Any, ...]]] = []
        if sscc_serial:
            stmts += self._next_serial_stmts()
        stmts.append(
            (
                "UPDATE open_docs SET kind=?, mode=?, state=?, body=?, version=?, updated_at=? "
                "WHERE id=?",
                (
                    row.kind,
                    row.mode,
                    row.state,
                    json.dumps(row.body),
                    row.version,
                    now_ms(),
                    row.id,
                ),
            )
        )
        out = await self._write(stmts)
        return sscc.taken_serial(out[1]) if sscc_serial else None

    async def delete_open(self, doc_id: str) -> None:
        await self._write([("DELETE FROM open_docs WHERE id=?", (doc_id,))])

    # --- counters -------------------------------------------------------------------------

    @staticmethod
    def _next_serial_stmts() -> list[tuple[str, tuple[Any, ...]]]:
        return list(sscc.TAKE_SERIAL)  # from the blocks leased from head office (issue 15.5)

    async def next_sscc_serial(self) -> int:
        """The next SSCC serial, committed before it is returned: never handed out twice."""
        out = await self._write(self._next_serial_stmts())
        return sscc.taken_serial(out[1])

    async def register_checkpoint(self, name: str) -> tuple[int, int]:
        rows = list(
            await self.db.execute_fetchall(
                "SELECT value, at_seq FROM counters WHERE name = ?", (name,)
            )
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    async def set_register_checkpoint(self, name: str, value: int, at_seq: int) -> None:
        await self._write(
            [
                (
                    "INSERT INTO counters (name, value, at_seq) VALUES (?,?,?) ON CONFLICT(name) "
                    "DO UPDATE SET value = max(value, excluded.value), at_seq = excluded.at_seq",
                    (name, value, at_seq),
                )
            ]
        )

    # --- reading the journal --------------------------------------------------------------

    async def journaled(self, txn_id: str) -> tuple[int, dict[str, Any]] | None:
        """(seq, document) of a journaled txn_id, or None."""
        found = await journal_file.journaled(self.db, txn_id)
        if found is None:
            return None
        seq, doc = found
        return seq, doc

    async def max_register_after(self, seq: int, number: Callable[[str], int | None]) -> int:
        """Highest register number in the entries after `seq` (the counter's recovery scan).

        Streams: a lane that journaled many documents since its last checkpoint (a crash, or
        documents appended by a tool) must not hold them all in memory to find one number.
        """
        best = 0
        async for doc in journal_file.documents_after(self.db, seq):
            reg = doc.get("register_no") if isinstance(doc, dict) else None
            n = number(reg) if isinstance(reg, str) else None
            if n is not None and n > best:
                best = n
        return best
