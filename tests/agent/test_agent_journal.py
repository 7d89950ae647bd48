"""The lane journal on real SQLite files: sequencing, group commit, durability settings,
idempotent submits, acks, reads that chain, schema versions, and write failures."""

from __future__ import annotations

import asyncio
import sqlite3
from importlib import resources
from pathlib import Path
from typing import Any

import msgpack
import pytest

from agent.journal import Journal, JournalConflict, JournalError
from agent.journal.journal import new_txn_id
from protocol.chain import first_break, genesis
from protocol.identity import LaneId
from protocol.runtime import migrations as schema
from protocol.runtime.clock import now_ms
from protocol.runtime.migrations import SchemaError

# The newest journal schema version (0002 added lane-local tables for open documents).
LATEST = max(schema.load(resources.files("agent.journal.schema").iterdir()))

LANE = LaneId("S001", "L01")


def doc(n: int, kind: str = "sale") -> dict[str, Any]:
    return {"kind": kind, "register_no": f"T{10000 + n}", "amount": n, "currency": "EUR"}


def rows(path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


async def test_seq_assigned_one_to_n(path: Path) -> None:
    async with Journal(path, LANE) as j:
        assert (j.last_seq, j.acked_seq, j.backlog) == (0, 0, 0)
        got = [await j.append("sale", doc(i)) for i in range(10)]
        assert [a.seq for a in got] == list(range(1, 11))
        assert all(a.epoch == j.epoch and not a.duplicate for a in got)
        assert j.last_seq == 10
        assert j.backlog == 10
        assert j.commits == 10
    stored = rows(path, "SELECT seq, kind, txn_id, body FROM entries ORDER BY seq")
    assert [r[0] for r in stored] == list(range(1, 11))
    assert [r[2] for r in stored] == [a.txn_id for a in got]
    assert msgpack.unpackb(stored[3][3]) == doc(3)


async def test_concurrent_appends_share_commits(path: Path) -> None:
    async with Journal(path, LANE) as j:
        commits: list[int] = []
        j.on_commit(lambda: commits.append(j.last_seq))
        got = await asyncio.gather(*(j.append("sale", doc(i)) for i in range(500)))
        seqs = [a.seq for a in got]
        assert sorted(seqs) == list(range(1, 501))
        assert len({a.txn_id for a in got}) == 500
        assert j.last_seq == 500
        assert 1 <= j.commits < 500
        assert len(commits) == j.commits
        assert commits[-1] == 500
    # every confirmed append is really in the file, in its seq
    by_seq = {r[0]: r[1] for r in rows(path, "SELECT seq, txn_id FROM entries")}
    assert {a.seq: a.txn_id for a in got} == by_seq


async def test_state_persists_across_reopen(path: Path) -> None:
    async with Journal(path, LANE) as j:
        for i in range(5):
            await j.append("sale", doc(i))
        await j.mark_acked(3)
        epoch = j.epoch
        assert j.acked_at is not None
    async with Journal(path, LANE) as j:
        assert (j.epoch, j.last_seq, j.acked_seq, j.backlog) == (epoch, 5, 3, 2)
        a = await j.append("sale", doc(99))
        assert a.seq == 6
        # the chain carries on from the last stored hash across the restart
        entries = await j.read_from(1, 100)
        assert first_break(genesis(LANE, epoch), entries) is None


async def test_wal_and_synchronous_full(path: Path) -> None:
    async with Journal(path, LANE) as j:
        await j.append("sale", doc(1))
        assert await j.run_write(lambda db: db.execute_fetchall("PRAGMA synchronous")) == [(2,)]
        assert await j.run_write(lambda db: db.execute_fetchall("PRAGMA journal_mode")) == [
            ("wal",)
        ]
        assert rows(path, "PRAGMA journal_mode") == [("wal",)]
        assert rows(path, "PRAGMA user_version") == [(LATEST,)]


async def test_same_txn_same_doc_is_duplicate(path: Path) -> None:
    async with Journal(path, LANE) as j:
        txn = new_txn_id()
        first = await j.append("sale", doc(1), txn_id=txn)
        await j.append("sale", doc(2))
        again = await j.append("sale", doc(1), txn_id=txn)
        assert again.duplicate
        assert (again.seq, again.txn_id, again.epoch) == (first.seq, txn, j.epoch)
        assert j.last_seq == 2
        with pytest.raises(JournalConflict) as info:
            await j.append("sale", doc(3), txn_id=txn)
        assert (info.value.txn_id, info.value.seq) == (txn, first.seq)
        assert txn in str(info.value)
        # the conflict did not poison the writer
        assert (await j.append("sale", doc(4))).seq == 3
    assert rows(path, "SELECT count(*) FROM entries WHERE txn_id = ?", (txn,)) == [(1,)]


async def test_duplicate_inside_one_group(path: Path) -> None:
    async with Journal(path, LANE) as j:
        await j.append("sale", doc(0))  # the writer is idle: the next gather is one group
        txn = new_txn_id()
        a, b, c = await asyncio.gather(
            j.append("sale", doc(1), txn_id=txn),
            j.append("sale", doc(1), txn_id=txn),
            j.append("sale", doc(2), txn_id=txn),
            return_exceptions=True,
        )
        assert not isinstance(a, BaseException)
        assert not isinstance(b, BaseException)
        assert (a.seq, a.duplicate) == (2, False)
        assert (b.seq, b.duplicate) == (2, True)
        assert isinstance(c, JournalConflict)
        assert j.last_seq == 2


async def test_mark_acked(path: Path) -> None:
    async with Journal(path, LANE) as j:
        for i in range(4):
            await j.append("sale", doc(i))
        await j.mark_acked(2)
        assert j.acked_seq == 2
        assert rows(path, "SELECT acked_seq FROM outbox") == [(2,)]
        await j.mark_acked(1)  # an older ack never moves it back
        assert j.acked_seq == 2
        with pytest.raises(JournalError, match="acked seq 9 but this journal ends at 4"):
            await j.mark_acked(9)
        assert rows(path, "SELECT acked_seq FROM outbox") == [(2,)]
        await j.mark_acked(4)
        assert j.backlog == 0
    assert rows(path, "SELECT acked_seq FROM outbox") == [(4,)]


async def test_read_from_limit_max_bytes_and_chain(path: Path) -> None:
    async with Journal(path, LANE) as j:
        for i in range(20):
            await j.append("sale", {**doc(i), "pad": "x" * 100})
        body_len = len((await j.read_from(1, 1))[0].body)

        got = await j.read_from(5, 7)
        assert [e.seq for e in got] == list(range(5, 12))
        assert first_break(await j.hash_before(5), got) is None
        assert first_break(await j.hash_before(1), await j.read_from(1, 100)) is None
        assert await j.hash_before(1) == genesis(LANE, j.epoch)

        # max_bytes counts bodies plus a per-entry overhead; the first entry always comes
        per_entry = body_len + 80
        got = await j.read_from(3, 100, max_bytes=per_entry * 3)
        assert [e.seq for e in got] == [3, 4, 5]
        assert [e.seq for e in await j.read_from(3, 100, max_bytes=1)] == [3]
        assert await j.read_from(21, 10) == []
        assert len(await j.read_from(15, 100)) == 6

        # altering one entry in the run is seen by the chain check
        run = await j.read_from(5, 5)
        run[2] = run[2]._replace(body=run[2].body + b"x")
        broken = first_break(await j.hash_before(5), run)
        assert broken is not None
        assert broken[0] == 7


async def test_new_file_gets_new_epoch(tmp_path: Path) -> None:
    epochs = set()
    for i in range(3):
        async with Journal(tmp_path / f"j{i}.db", LANE) as j:
            assert 1 <= j.epoch < 1 << 63
            epochs.add(j.epoch)
    assert len(epochs) == 3


async def test_other_lane_refused(path: Path) -> None:
    async with Journal(path, LANE) as j:
        await j.append("sale", doc(1))
    with pytest.raises(JournalError) as info:
        async with Journal(path, LaneId("S001", "L02")):
            pass
    msg = str(info.value)
    assert "S001/L01" in msg
    assert "S001/L02" in msg


async def test_empty_file_migrates(path: Path) -> None:
    path.write_bytes(b"")
    async with Journal(path, LANE) as j:
        assert j.last_seq == 0
        assert (await j.append("sale", doc(1))).seq == 1
    assert rows(path, "PRAGMA user_version") == [(LATEST,)]
    tables = {r[0] for r in rows(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"meta", "entries", "outbox"} <= tables


async def test_newer_schema_refused(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(SchemaError, match="schema version 99, newer than this lanesync knows"):
        async with Journal(path, LANE):
            pass
    assert rows(path, "PRAGMA user_version") == [(99,)]  # untouched


async def test_append_when_closed(path: Path) -> None:
    j = Journal(path, LANE)
    with pytest.raises(JournalError, match="not open"):
        await j.append("sale", doc(1))
    async with j:
        pass
    with pytest.raises(JournalError, match="not open"):
        await j.append("sale", doc(1))


async def test_write_failure_fails_whole_group_and_commits_nothing(path: Path) -> None:
    async with Journal(path, LANE) as j:
        await j.append("sale", doc(0))
        await j.append("sale", doc(1))
        db = sqlite3.connect(path)
        db.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON entries WHEN NEW.kind = 'boom' "
            "BEGIN SELECT RAISE(ABORT, 'boom'); END"
        )
        db.commit()
        db.close()
        commits = j.commits

        results = await asyncio.gather(
            j.append("sale", doc(2)),
            j.append("sale", doc(3)),
            j.append("boom", doc(4)),
            j.append("sale", doc(5)),
            j.mark_acked(1),
            return_exceptions=True,
        )
        assert all(isinstance(r, JournalError) for r in results), results
        assert all("boom" in str(r) for r in results)
        assert j.commits == commits
        assert (j.last_seq, j.acked_seq) == (2, 0)
        assert rows(path, "SELECT max(seq), count(*) FROM entries") == [(2, 2)]
        assert rows(path, "SELECT acked_seq FROM outbox") == [(0,)]

        after = await j.append("sale", doc(6))
        assert after.seq == 3
        await j.mark_acked(3)
        entries = await j.read_from(1, 10)
        assert [e.seq for e in entries] == [1, 2, 3]
        assert first_break(genesis(LANE, j.epoch), entries) is None


async def test_clock_bound_is_no_later_than_an_entry_dated_but_not_yet_committed(
    tmp_path: Path,
) -> None:
    """An entry is dated when submitted and counted in last_seq only once committed. A hello
    sent in between says sent_at = clock_bound_ms(), so head office, should it receive the
    hello late (a broker redelivering it after a restart), does not take the entry after its
    last seq, dated before plain `now`, for the sign of a journal restored from an old copy."""
    async with Journal(tmp_path / "j.db", LANE) as j:
        await j.append("sale", doc(1))
        release = asyncio.Event()

        async def hold_the_writer(_conn: Any) -> None:
            await release.wait()

        held = asyncio.create_task(j.run_write(hold_the_writer))
        await asyncio.sleep(0.05)  # the writer is inside hold_the_writer
        pending = asyncio.create_task(j.append("sale", doc(2)))
        await asyncio.sleep(0.05)
        assert j.last_seq == 1  # submitted, dated, not committed
        bound = j.clock_bound_ms()
        now = now_ms()
        release.set()
        await held
        appended = await pending
        assert (appended.seq, j.last_seq) == (2, 2)
        [(entry_ts,)] = rows(tmp_path / "j.db", "SELECT ts FROM entries WHERE seq = 2")
        assert bound == entry_ts < now  # the pending entry's date, not the later clock
        later = j.clock_bound_ms()
        assert later >= now  # nothing pending: the clock itself
