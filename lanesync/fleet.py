"""Many simulated lanes in one process, speaking the real protocol, for scale tests and benchmarks.

Two hundred or a thousand `lanesync agent` daemons do not fit on a small test machine, so a fleet
runs each lane as the agent's own `Replicator` (hello, batches by count/bytes/linger, bounded
window, acks, resend-from, ack timeout, reconnect backoff, retained status and last will: the same
code, not a copy of its rules) over a `MemoryJournal`. The memory journal keeps what the SQLite
journal keeps for replication (entries with their real hash chain, epoch, the acked mark) but no
file: with a file per lane every append is an fsync and every lane a SQLite thread, which is
what the single-lane benchmarks measure and what 1000 lanes on two cores cannot afford. Nothing a
lane confirmed is ever forgotten while the fleet runs (the outbox mark only moves on head
office's ack), and the fleet afterwards judges head office's copy: every lane's entries 1..N
present once, in seq order, chained, each txn_id applied once.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import os
import random
import signal
import socket as socketlib
import struct
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import msgpack

from agent import config as agent_config
from agent.journal import Journal, JournalError
from agent.journal.journal import Appended, new_txn_id
from agent.replicator import Replicator
from lanesync import samples
from protocol.chain import entry_hash, first_break, genesis
from protocol.documents import encode_body
from protocol.identity import DEFAULT_PREFIX, LaneId
from protocol.messages import Entry

LANES_PER_STORE = 4
BODY_POOL = 256  # distinct sale documents the lanes draw from (bodies are shared bytes)

AckSink = Callable[[float, float], None]  # (appended at, acked at), monotonic seconds


class AckedEntries:
    """What head office has acked, out of the fleet's memory: a temporary file of msgpack
    records (lane key, entry), read back one by one for a resend from below the acked mark
    and all at once for the final judging.

    A real lane keeps acked entries on disk too (its retention), not in memory; a fleet that
    kept them in lists grew by about 450 bytes an entry, 23 MB over the 30-minute soak, which
    hid whether the replicator's own memory is flat. Each entry then costs the lane 16 bytes
    of memory: where its record is."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - open for the fleet's lifetime
        self._end = 0
        self.count = 0

    def put(self, key: int, entries: list[Entry], offsets: array[int], sizes: array[int]) -> None:
        """Write `entries` of lane `key`, appending where each went to offsets and sizes."""
        records = [msgpack.packb((key, *e)) for e in entries]
        for r in records:
            offsets.append(self._end)
            sizes.append(len(r))
            self._end += len(r)
        self._file.seek(0, io.SEEK_END)
        self._file.write(b"".join(records))
        self._file.flush()
        self.count += len(entries)

    def get(self, offset: int, size: int) -> Entry:
        _key, *fields = msgpack.unpackb(os.pread(self._file.fileno(), size, offset))
        return Entry(*fields)

    def by_key(self) -> dict[int, list[Entry]]:
        out: dict[int, list[Entry]] = {}
        self._file.seek(0)
        for key, *fields in msgpack.Unpacker(self._file):
            out.setdefault(key, []).append(Entry(*fields))
        return out

    def close(self) -> None:
        self._file.close()


class MemoryJournal(Journal):
    """A lane journal in memory with the interface the replicator uses.

    Appends are synchronous (there is no disk to wait for); `mark_acked` refuses a mark beyond
    the last entry exactly as the file journal does. What head office acked moves to `acked`
    when one is given (the fleet's), as a real journal's retention holds it on disk, and is
    read back from there when the replicator resends from below its acked mark (an ack from
    one worker that another overtook). Without one (a single lane in a test) every entry stays
    in memory.
    """

    def __init__(
        self, lane: LaneId, epoch: int, *, acked: AckedEntries | None = None, key: int = 0
    ) -> None:
        super().__init__(Path(f"memory-{lane.store}-{lane.lane}"), lane)
        self.epoch = epoch
        self._last_hash = genesis(lane, epoch)
        self._acked_store, self._key = acked, key
        self._kept: list[Entry] = []  # acked entries, when there is no `acked` store
        self._offsets: array[int] = array("q")  # where acked seq 1, 2 ... are in `acked`
        self._sizes: array[int] = array("q")
        self._acked_hash = self._last_hash  # chain hash of the entry at acked_seq
        self._held: list[Entry] = []  # seq acked_seq + 1 .. last_seq
        self._appended_at: list[float] = []  # monotonic time each held entry was confirmed
        self.on_acked: AckSink | None = None  # told when each entry was appended and acked

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def add(self, kind: str, body: bytes, *, now: float | None = None) -> Entry:
        """Journal one entry and wake the replicator: what a confirmed sale does."""
        seq = self.last_seq + 1
        txn_id, ts = new_txn_id(), time.time_ns() // 1_000_000
        h = entry_hash(self._last_hash, seq, kind, txn_id, ts, body)
        e = Entry(seq, kind, txn_id, ts, body, h)
        self._held.append(e)
        self._appended_at.append(time.monotonic() if now is None else now)
        self.last_seq, self._last_hash = seq, h
        self.commits += 1
        for listener in self._listeners:
            listener()
        return e

    async def append(
        self, kind: str, doc: dict[str, Any], *, txn_id: str | None = None, ts: int | None = None
    ) -> Appended:
        if txn_id is not None or ts is not None:
            raise JournalError("the memory journal assigns txn_id and time itself")
        e = self.add(kind, encode_body(doc))
        return Appended(e.seq, e.txn_id, self.epoch)

    async def mark_acked(self, hwm: int) -> None:
        if hwm <= self.acked_seq:
            return
        if hwm > self.last_seq:
            raise JournalError(
                f"head office acked seq {hwm} but this journal ends at {self.last_seq} "
                f"(epoch {self.epoch})"
            )
        n = hwm - self.acked_seq
        sink = self.on_acked
        if sink is not None:
            now = time.monotonic()
            for t in self._appended_at[:n]:
                sink(t, now)
        done = self._held[:n]
        del self._held[:n], self._appended_at[:n]
        if self._acked_store is None:
            self._kept += done
        else:
            self._acked_store.put(self._key, done, self._offsets, self._sizes)
        self._acked_hash = done[-1].hash
        self.acked_seq, self.acked_at = hwm, time.time_ns() // 1_000_000

    def confirmed_entries(self, acked: list[Entry] | None = None) -> list[Entry]:
        """Every entry this lane confirmed, in seq order (`acked`: what the fleet's store
        read back for this lane)."""
        return [*(self._kept if acked is None else acked), *self._held]

    def _acked_entry(self, seq: int) -> Entry:
        if self._acked_store is None:
            return self._kept[seq - 1]
        return self._acked_store.get(self._offsets[seq - 1], self._sizes[seq - 1])

    async def read_from(self, seq: int, limit: int, max_bytes: int | None = None) -> list[Entry]:
        first = self.acked_seq + 1
        seq = max(seq, 1)
        below = [self._acked_entry(s) for s in range(seq, min(first, seq + limit))]
        start = max(seq, first) - first
        window = below + self._held[start : start + limit - len(below)]
        out: list[Entry] = []
        size = 0
        for e in window:
            size += len(e.body) + 80
            if out and max_bytes is not None and size > max_bytes:
                break
            out.append(e)
        return out

    async def hash_before(self, seq: int) -> bytes:
        if seq <= 1:
            return genesis(self.lane, self.epoch)
        at = seq - 1
        if at > self.acked_seq:
            return self._held[at - self.acked_seq - 1].hash
        if at == self.acked_seq:
            return self._acked_hash
        return self._acked_entry(at).hash


@dataclass(slots=True)
class Lags:
    """When every entry was appended and when head office's ack covered it (monotonic)."""

    # Arrays of doubles, 8 bytes a time instead of a float object and a list slot (32): over
    # the soak's hundred thousand entries the difference is the harness's own memory growth.
    appended: array[float] = field(default_factory=lambda: array("d"))
    acked: array[float] = field(default_factory=lambda: array("d"))

    def sink(self, appended_at: float, acked_at: float) -> None:
        self.appended.append(appended_at)
        self.acked.append(acked_at)

    def acked_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.acked if start <= t < end)

    def rate_windows(self, start: float, end: float, width: float = 1.0) -> list[int]:
        """Entries acked in each `width`-second window of [start, end)."""
        counts = [0] * max(1, math.ceil((end - start) / width))
        for t in self.acked:
            if start <= t < end:
                counts[min(len(counts) - 1, int((t - start) / width))] += 1
        return counts

    def summary(self, start: float, end: float) -> dict[str, float | int]:
        """Append-to-ack lag of the entries appended in [start, end)."""
        xs = sorted(
            b - a for a, b in zip(self.appended, self.acked, strict=True) if start <= a < end
        )
        if not xs:
            return {"entries": 0}

        def pct(p: float) -> float:
            return round(xs[min(len(xs) - 1, math.ceil(p * len(xs)) - 1)] * 1000, 1)

        return {"entries": len(xs), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0)}


def lane_ids(n: int) -> list[LaneId]:
    """n lanes, four to a store: S0001/L1 .. S0250/L4 for 1000."""
    return [
        LaneId(f"S{i // LANES_PER_STORE + 1:04d}", f"L{i % LANES_PER_STORE + 1}") for i in range(n)
    ]


def lane_config(
    lane: LaneId, host: str, port: int, replication: dict[str, Any]
) -> agent_config.AgentConfig:
    """The agent configuration a real lane would have; the journal and API paths go unused."""
    return agent_config.parse(
        {
            "store": lane.store,
            "lane": lane.lane,
            "journal": {"path": f"/nonexistent/{lane.store}-{lane.lane}.db"},
            "broker": {"host": host, "port": port, "keepalive": 10, "topic_prefix": DEFAULT_PREFIX},
            "replication": replication,
            "api": {"socket": f"/nonexistent/{lane.store}-{lane.lane}.sock"},
        }
    )


class Fleet:
    """Async context manager: `lanes` lanes replicating to the broker at host:port."""

    def __init__(
        self,
        lanes: int,
        port: int,
        *,
        host: str = "127.0.0.1",
        replication: dict[str, Any] | None = None,
        seed: int = 1,
        first_lane: int = 0,
    ) -> None:
        self.rng = random.Random(seed)
        rng = random.Random(seed + 1)
        self.bodies = [
            encode_body(samples.sale(rng, "S0001", "L1", i + 1)) for i in range(BODY_POOL)
        ]
        self.lags = Lags()
        self.acked_entries = AckedEntries()
        self.journals: list[MemoryJournal] = []
        self.replicators: list[Replicator] = []
        for key, lane in enumerate(lane_ids(first_lane + lanes)[first_lane:]):
            journal = MemoryJournal(
                lane, self.rng.randrange(1, 1 << 62), acked=self.acked_entries, key=key
            )
            journal.on_acked = self.lags.sink
            self.journals.append(journal)
            self.replicators.append(
                Replicator(journal, lane_config(lane, host, port, replication or {}))
            )
        self._stack: contextlib.AsyncExitStack | None = None
        # Each lane's sales start at a phase of its own. With every credit at 0 a thousand lanes
        # at 0.25 sales a second all sold in the same 100 ms every 4 s (bursts of a thousand
        # entries, nothing like independent tills), and the first sale came 4 s in.
        self._credit = [self.rng.random() for _ in range(lanes)]

    async def __aenter__(self) -> Self:
        # Lanes started in one instant keep their periodic work in step (aiomqtt's once-a-second
        # housekeeping, the 15 s status): a thousand of them at once stalled the loop for 100+
        # ms every second. Spread over a second, as lanes that boot independently are.
        gap = 1.0 / max(1, len(self.replicators))
        async with contextlib.AsyncExitStack() as stack:
            for rep in self.replicators:
                await stack.enter_async_context(rep)
                await asyncio.sleep(gap)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._stack is not None:
                await self._stack.aclose()
        finally:
            self.acked_entries.close()

    # --- driving ----------------------------------------------------------------------------

    def append_tick(self, rate: float, dt: float) -> int:
        """Each lane confirms what `rate` sales a second make over `dt` seconds (with jitter)."""
        now = time.monotonic()
        n = 0
        bodies, rnd = self.bodies, self.rng.random
        for i, journal in enumerate(self.journals):
            credit = self._credit[i] + rate * dt * 2 * rnd()
            k = int(credit)
            self._credit[i] = credit - k
            for _ in range(k):
                journal.add("sale", bodies[int(rnd() * len(bodies))], now=now)
            n += k
        return n

    async def trickle(self, rate: float, seconds: float, tick: float = 0.05) -> int:
        """Append at `rate` per lane per second for `seconds`; returns entries appended."""
        n = 0
        start = time.monotonic()
        next_at = start
        last = start
        while (now := time.monotonic()) - start < seconds:
            n += self.append_tick(rate, now - last)
            last = now
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        return n

    @property
    def appended(self) -> int:
        return sum(j.last_seq for j in self.journals)

    @property
    def acked(self) -> int:
        return sum(j.acked_seq for j in self.journals)

    @property
    def connected(self) -> int:
        return sum(1 for r in self.replicators if r.stats.connected)

    async def wait_connected(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while self.connected < len(self.replicators):  # noqa: ASYNC110 - many lanes' states
                await asyncio.sleep(0.05)

    def marks(self) -> list[int]:
        """Every lane's last seq now: a target for `wait_drained`."""
        return [j.last_seq for j in self.journals]

    async def wait_drained(self, timeout: float, marks: list[int] | None = None) -> float:
        """Until head office acked every entry every lane holds (or up to `marks`); returns
        when (monotonic)."""
        async with asyncio.timeout(timeout):
            while True:
                targets = marks or self.marks()
                if all(j.acked_seq >= m for j, m in zip(self.journals, targets, strict=True)):
                    return time.monotonic()
                await asyncio.sleep(0.01)

    def stats(self) -> dict[str, int]:
        reps = [r.stats for r in self.replicators]
        return {
            "batches_sent": sum(s.batches_sent for s in reps),
            "entries_sent": sum(s.entries_sent for s in reps),
            "rewinds": sum(s.rewinds for s in reps),
            "stale_acks": sum(s.stale_acks for s in reps),
            "reconnects": sum(s.reconnects for s in reps),
            "session_renewals": sum(s.session_renewals for s in reps),
        }

    def confirmed(self) -> Iterator[tuple[LaneId, int, list[Entry]]]:
        acked = self.acked_entries.by_key()
        for key, j in enumerate(self.journals):
            yield j.lane, j.epoch, j.confirmed_entries(acked.get(key, []))


# --- judging head office's copy -------------------------------------------------------------

# store, lane, epoch, seq, kind, txn_id, ts, body, hash: one head-office journal row
JournalRow = tuple[str, str, int, int, str, str, int, bytes, bytes]
_JOURNAL_SQL = (
    "SELECT store, lane, epoch, seq, kind, txn_id, ts, body, hash FROM journal ORDER BY {order}"
)


def read_sqlite(path: Path) -> tuple[list[JournalRow], list[str]]:
    """Head office's journal rows in commit order (rowid) and its documents' txn_ids."""
    import sqlite3  # noqa: PLC0415 - only the judging needs it

    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = [tuple(r) for r in db.execute(_JOURNAL_SQL.format(order="rowid"))]
        docs = [r[0] for r in db.execute("SELECT txn_id FROM documents")]
    finally:
        db.close()
    return rows, docs


def read_postgres(url: str) -> tuple[list[JournalRow], list[str]]:
    """The same from PostgreSQL: `id` is the order rows were inserted in."""
    import psycopg  # noqa: PLC0415 - only PostgreSQL runs need it

    with psycopg.connect(url) as conn:
        rows = [
            (r[0], r[1], r[2], r[3], r[4], r[5], r[6], bytes(r[7]), bytes(r[8]))
            for r in conn.execute(_JOURNAL_SQL.format(order="id"))
        ]
        docs = [r[0] for r in conn.execute("SELECT txn_id FROM documents")]
    return rows, docs


@dataclass(frozen=True, slots=True)
class Verdict:
    lanes: int
    confirmed: int  # entries the lanes confirmed
    at_head_office: int  # journal rows head office holds for them
    documents: int  # documents rows for their txn_ids
    lost: int  # confirmed but missing from head office's journal or documents
    duplicated: int  # journal rows or documents beyond one per entry
    out_of_order_lanes: int  # lanes whose rows, in commit order, are not seq 1, 2, 3, ...
    chain_broken_lanes: int  # lanes whose stored entries do not chain from the genesis
    mismatched: int  # rows that differ from what the lane journaled, or that it never sent

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.duplicated == 0
            and self.out_of_order_lanes == 0
            and self.chain_broken_lanes == 0
            and self.mismatched == 0
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


def verify(
    confirmed: Iterable[tuple[LaneId, int, list[Entry]]],
    journal_rows: Iterable[JournalRow],
    document_ids: Iterable[str],
) -> Verdict:
    """Compare what the lanes confirmed with head office's journal rows (in commit order) and
    its documents' txn_ids."""
    rows: dict[tuple[str, str, int], list[JournalRow]] = {}
    for r in journal_rows:
        rows.setdefault((r[0], r[1], r[2]), []).append(r)
    docs: dict[str, int] = {}
    for txn_id in document_ids:
        docs[txn_id] = docs.get(txn_id, 0) + 1
    n_lanes = n_conf = n_rows = n_docs = lost = dup = disorder = broken = mismatched = 0
    for lane, epoch, entries in confirmed:
        n_lanes += 1
        n_conf += len(entries)
        held = rows.get((lane.store, lane.lane, epoch), [])
        n_rows += len(held)
        seqs = [r[3] for r in held]
        if seqs != list(range(1, len(seqs) + 1)):
            disorder += 1
        dup += len(seqs) - len(set(seqs))
        by_seq = {r[3]: r for r in held}
        for e in entries:
            n = docs.get(e.txn_id, 0)
            n_docs += n
            dup += max(0, n - 1)
            row = by_seq.get(e.seq)
            if row is None or n == 0:
                lost += 1
            elif (row[4], row[5], row[6], bytes(row[7]), bytes(row[8])) != e[1:]:
                mismatched += 1
        mismatched += sum(1 for s in by_seq if s > len(entries))
        chain = [
            (r[3], r[4], r[5], r[6], bytes(r[7]), bytes(r[8]))
            for r in sorted(held, key=lambda r: r[3])
        ]
        if first_break(genesis(lane, epoch), chain) is not None:
            broken += 1
    return Verdict(n_lanes, n_conf, n_rows, n_docs, lost, dup, disorder, broken, mismatched)


# --- head office's link, as a process of its own ------------------------------------------------

_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, not FIN


def _reset(transport: asyncio.BaseTransport | None) -> None:
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_LINGER, _RST)
    transport.abort()  # type: ignore[attr-defined]  # every stream transport has it


class _Side(asyncio.Protocol):
    """One end of a relayed connection: what it receives goes to its peer's transport."""

    def __init__(self, link: Link, *, accepted: bool) -> None:
        self.link = link
        self.accepted = accepted  # the lane's end (accepted by the link), not the broker's
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.pending: list[bytes] = []  # client bytes that came before the upstream was up

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socketlib.IPPROTO_TCP, socketlib.TCP_NODELAY, 1)
        if self.accepted:
            # Only now: the transport exists, so a cut link can reset it (a reset decided in
            # the protocol factory found no transport and left the lane waiting for CONNACK).
            self.link.connect_upstream(self)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.pending.append(data)
        else:
            peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.sides.discard(self)
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.transport.is_closing():
            if exc is None:
                peer.transport.close()
            else:
                _reset(peer.transport)


class Link:
    """Head office's internet link for a fleet: relays lane connections to the broker with
    asyncio protocols (a copy per chunk, no per-read reader registration), accepts a whole fleet
    reconnecting at once (listen backlog 4096), and `cut()` resets every connection, and every
    new one until `resume()`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.cut_off = False
        self.sides: set[_Side] = set()
        self._connecting: set[asyncio.Task[None]] = set()  # upstream connects under way
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accepted, "127.0.0.1", 0, backlog=4096)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def _accepted(self) -> _Side:
        side = _Side(self, accepted=True)
        self.sides.add(side)
        return side

    def connect_upstream(self, client: _Side) -> None:
        if self.cut_off:
            _reset(client.transport)
            return
        task = asyncio.get_running_loop().create_task(self._upstream(client))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _upstream(self, client: _Side) -> None:
        loop = asyncio.get_running_loop()
        up = _Side(self, accepted=False)
        try:
            await loop.create_connection(lambda: up, "127.0.0.1", self.upstream_port)
        except OSError:
            _reset(client.transport)
            return
        if self.cut_off or client.transport is None or client.transport.is_closing():
            _reset(up.transport)
            _reset(client.transport)
            return
        self.sides.add(up)
        up.peer, client.peer = client, up
        assert up.transport is not None
        for data in client.pending:
            up.transport.write(data)
        client.pending.clear()

    def cut(self) -> None:
        self.cut_off = True
        for side in list(self.sides):
            _reset(side.transport)

    def resume(self) -> None:
        self.cut_off = False

    def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


async def serve_link(upstream_port: int) -> None:
    """A Link to the broker that prints its port, cuts on SIGUSR1 and resumes on SIGUSR2
    (printing its state once switched), and ends on SIGTERM. Run by `lanesync bench fleet` as
    `python -m lanesync.fleet link PORT`, so relaying every lane's bytes uses a process of its
    own instead of the lanes' interpreter."""
    link = Link(upstream_port)
    port = await link.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def switch(fn: Callable[[], None]) -> None:
        fn()
        print("cut" if link.cut_off else "pass", flush=True)

    loop.add_signal_handler(signal.SIGUSR1, switch, link.cut)
    loop.add_signal_handler(signal.SIGUSR2, switch, link.resume)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(port, flush=True)
    try:
        await stop.wait()
    finally:
        link.close()


if __name__ == "__main__" and sys.argv[1:2] == ["link"] and len(sys.argv) == 3:
    asyncio.run(serve_link(int(sys.argv[2])))
