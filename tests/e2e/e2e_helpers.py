"""Shared parts of the end-to-end fault tests: POS tills, waits, and the exactly-once check.

Everything here talks to the real processes the way an operator would: the local API over the
agent's Unix socket, and the lane journal and head-office database read-only with sqlite3.
"""

from __future__ import annotations

import http.client
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uuid6

from lanesync import samples
from lanesync.posclient import PosClient
from protocol.identity import LaneId

# Replication tuned for tests: a silent head office is noticed in 1 s, reconnects back off to at
# most 0.5 s, and a short linger. Individual tests override what they exercise.
FAST_REPLICATION: dict[str, float | int] = {
    "ack_timeout_s": 1.0,
    "publish_timeout_s": 3.0,
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.5,
    "linger_ms": 5,
}


@dataclass(frozen=True, slots=True)
class Confirmation:
    """What the API answered the till: the document is durable as `seq` of `epoch`."""

    txn_id: str
    seq: int
    epoch: int
    status: int  # 201 new, 200 the same document already journaled (a retried submit)


# --- a POS till -----------------------------------------------------------------------------


@dataclass
class Till:
    """A POS application selling on one lane from its own thread.

    Each sale gets its txn_id from the till, so a submit whose answer was lost (the agent was
    killed mid-request) is retried as the SAME sale until the agent answers: 201 if it was not
    journaled yet, 200 with the original seq if it was. Only answered submits are recorded.
    """

    lane: LaneId
    socket_path: Path
    seed: int = 1
    rate: float | None = None  # sales per second; None: as fast as the agent answers
    limit: int | None = None  # stop after this many confirmations
    confirmed: list[Confirmation] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    failed_attempts: int = 0  # submits that got no answer (agent down) and were retried
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Till:
        self._thread = threading.Thread(
            target=self._run, name=f"e2e-till-{self.lane}-{self.seed}", daemon=False
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 20.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise AssertionError(f"till {self.lane} did not stop within {timeout}s")

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.confirmed)

    def wait_confirmed(self, n: int, timeout: float, what: str = "") -> None:
        """Block until at least `n` sales are confirmed (counting from the start)."""
        deadline = time.monotonic() + timeout
        while self.count < n:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"till {self.lane}: only {self.count}/{n} sales confirmed within {timeout}s "
                    f"{what}; refused: {self.refused[-3:]}"
                )
            if self._thread is not None and not self._thread.is_alive():
                raise AssertionError(f"till {self.lane} stopped early at {self.count}/{n}")
            time.sleep(0.01)

    def _run(self) -> None:
        rng = random.Random(f"{self.lane}-{self.seed}")
        client = PosClient(str(self.socket_path), timeout=10.0)
        n = 0
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                if self.limit is not None and self.count >= self.limit:
                    return
                if self.rate:
                    next_at += 1 / self.rate
                    if self._stop.wait(max(0.0, next_at - time.monotonic())):
                        return
                n += 1
                doc = samples.sale(rng, self.lane.store, self.lane.lane, n)
                doc["txn_id"] = str(uuid6.uuid7())
                self._submit_until_answered(client, doc)
        finally:
            client.close()

    def _submit_until_answered(self, client: PosClient, doc: dict[str, object]) -> None:
        while not self._stop.is_set():
            try:
                status, out = client.request("POST", "/v1/documents", doc)
            except (OSError, http.client.HTTPException):
                # Agent down or killed mid-request: the outcome is unknown, retry the same sale.
                self.failed_attempts += 1
                client.close()
                self._stop.wait(0.02)
                continue
            if status in (200, 201):
                assert isinstance(out, dict), out
                assert out["txn_id"] == doc["txn_id"], (out, doc["txn_id"])
                assert out["duplicate"] is (status == 200), (status, out)
                with self._lock:
                    self.confirmed.append(
                        Confirmation(out["txn_id"], out["seq"], out["epoch"], status)
                    )
                return
            if status == 503:  # journal unavailable (shutting down): not confirmed, retry
                self.failed_attempts += 1
                self._stop.wait(0.02)
                continue
            self.refused.append(f"{status}: {out}")
            return


# --- read-only views of the lane journal and the head-office database ------------------------


def ro(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    db.execute("PRAGMA busy_timeout=5000")
    return db


@dataclass(frozen=True, slots=True)
class LaneJournal:
    epoch: int
    acked_seq: int
    entries: list[tuple[int, str, bytes]]  # (seq, txn_id, hash) in seq order

    @property
    def last_seq(self) -> int:
        return self.entries[-1][0] if self.entries else 0


def read_lane_journal(path: Path) -> LaneJournal:
    db = ro(path)
    try:
        epoch = int(db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])
        acked = int(db.execute("SELECT acked_seq FROM outbox").fetchone()[0])
        rows = [
            (int(s), str(t), bytes(h))
            for s, t, h in db.execute("SELECT seq, txn_id, hash FROM entries ORDER BY seq")
        ]
    finally:
        db.close()
    return LaneJournal(epoch, acked, rows)


def ho_hwm(ho_db: Path, lane: LaneId, epoch: int) -> int:
    """Head office's committed high-water mark for the lane's epoch (0 before anything)."""
    if not ho_db.exists():
        return 0
    db = ro(ho_db)
    try:
        row = db.execute(
            "SELECT hwm FROM lanes WHERE store = ? AND lane = ? AND epoch = ?",
            (lane.store, lane.lane, epoch),
        ).fetchone()
    except sqlite3.OperationalError:  # schema not created yet
        return 0
    finally:
        db.close()
    return int(row[0]) if row else 0


def wait_until(
    cond: Callable[[], bool], timeout: float, what: str, diag: Callable[[], str] = lambda: ""
) -> float:
    """Poll `cond` until true; returns the seconds it took, or fails naming `what`."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not within {timeout:g}s\n{diag()}")
        time.sleep(0.02)
    return time.monotonic() - t0


def wait_drained(
    ho_db: Path,
    journal_file: Path,
    lane: LaneId,
    timeout: float,
    diag: Callable[[], str] = lambda: "",
) -> float:
    """Wait until head office committed every entry the lane journaled, and the lane knows it
    (its outbox acked_seq caught up, invariant 2). Returns the seconds it took."""

    def done() -> bool:
        j = read_lane_journal(journal_file)
        return j.acked_seq == j.last_seq and ho_hwm(ho_db, lane, j.epoch) == j.last_seq

    def why() -> str:
        j = read_lane_journal(journal_file)
        return (
            f"lane {lane}: journal at seq {j.last_seq}, lane acked_seq {j.acked_seq}, "
            f"head office hwm {ho_hwm(ho_db, lane, j.epoch)}\n{diag()}"
        )

    return wait_until(done, timeout, f"lane {lane} drained to head office", why)


def wait_caught_up(
    ho_db: Path,
    journal_file: Path,
    lane: LaneId,
    timeout: float,
    diag: Callable[[], str] = lambda: "",
) -> float:
    """Wait until head office committed, and the lane knows it, everything journaled up to now.

    For a lane whose till keeps selling: wait_drained needs an instant with nothing in flight,
    and a till selling every 12 ms leaves few, as a sale's round trip (linger, broker, head-office
    commit, ack) takes longer than that. Sampled every 10 ms at 80 sales/s the lane was idle in 3%
    of samples on Mosquitto and 1% on NATS (which stores each QoS 1 message in JetStream), and
    in none for 15 s on a busy machine. Returns the seconds it took."""
    target = read_lane_journal(journal_file).last_seq

    def done() -> bool:
        j = read_lane_journal(journal_file)
        return j.acked_seq >= target and ho_hwm(ho_db, lane, j.epoch) >= target

    def why() -> str:
        j = read_lane_journal(journal_file)
        return (
            f"lane {lane}: waiting for seq {target}; journal at seq {j.last_seq}, lane acked_seq "
            f"{j.acked_seq}, head office hwm {ho_hwm(ho_db, lane, j.epoch)}\n{diag()}"
        )

    return wait_until(done, timeout, f"lane {lane} caught up to seq {target}", why)


# --- the one comparison every fault test ends with -------------------------------------------


@dataclass(frozen=True, slots=True)
class ExactlyOnce:
    lane: LaneId
    confirmed_to_pos: int  # distinct txn_ids the API confirmed to the tills
    journaled: int  # entries in the lane journal (a superset: unanswered submits may be there)
    at_head_office: int  # documents head office holds for the lane


def assert_exactly_once(
    ho_db: Path,
    journal_file: Path,
    lane: LaneId,
    confirmed: Iterable[Confirmation],
    *,
    min_confirmed: int = 1,
) -> ExactlyOnce:
    """Compare what the lane confirmed with what head office holds: none lost, none duplicated,
    per-lane order kept. `confirmed` is every API answer the tills collected."""
    confirmed = list(confirmed)
    lj = read_lane_journal(journal_file)
    seqs = [s for s, _, _ in lj.entries]
    lane_txns = [t for _, t, _ in lj.entries]
    problems: list[str] = []

    # The lane journal itself: seqs 1..N, each txn_id once.
    if seqs != list(range(1, len(seqs) + 1)):
        problems.append(f"lane journal seqs are not 1..{len(seqs)}")
    twice = [t for t, c in Counter(lane_txns).items() if c > 1]
    if twice:
        problems.append(f"lane journal holds {len(twice)} txn_ids twice, e.g. {twice[:3]}")

    # Every confirmation survived in the lane journal, under the seq and epoch it was given.
    by_txn = {t: s for s, t, _ in lj.entries}
    distinct = {c.txn_id for c in confirmed}
    if len(distinct) < min_confirmed:
        problems.append(
            f"only {len(distinct)} confirmations collected, expected >= {min_confirmed}"
        )
    missing = [c for c in confirmed if c.txn_id not in by_txn]
    if missing:
        problems.append(
            f"{len(missing)} confirmed documents are not in the lane journal, e.g. {missing[:3]}"
        )
    moved = [c for c in confirmed if c.txn_id in by_txn and by_txn[c.txn_id] != c.seq]
    if moved:
        problems.append(
            f"{len(moved)} confirmations name another seq than the journal: {moved[:3]}"
        )
    other_epoch = [c for c in confirmed if c.epoch != lj.epoch]
    if other_epoch:
        problems.append(f"{len(other_epoch)} confirmations name another epoch: {other_epoch[:3]}")

    db = ro(ho_db)
    try:
        docs = [
            str(r[0])
            for r in db.execute(
                "SELECT txn_id FROM documents WHERE store = ? AND lane = ?", (lane.store, lane.lane)
            )
        ]
        applied_twice = db.execute(
            "SELECT txn_id, count(*) FROM journal WHERE applied = 1 "
            "GROUP BY txn_id HAVING count(*) > 1 LIMIT 5"
        ).fetchall()
        ho_rows = [
            (int(s), str(t), bytes(h), int(a))
            for s, t, h, a in db.execute(
                "SELECT seq, txn_id, hash, applied FROM journal "
                "WHERE store = ? AND lane = ? AND epoch = ? ORDER BY seq",
                (lane.store, lane.lane, lj.epoch),
            )
        ]
        other_epochs = db.execute(
            "SELECT count(*) FROM journal WHERE store = ? AND lane = ? AND epoch != ?",
            (lane.store, lane.lane, lj.epoch),
        ).fetchone()[0]
        lane_row = db.execute(
            "SELECT hwm FROM lanes WHERE store = ? AND lane = ? AND epoch = ?",
            (lane.store, lane.lane, lj.epoch),
        ).fetchone()
    finally:
        db.close()

    # None lost, none duplicated.
    held = set(docs)
    if len(docs) != len(held):
        problems.append(f"head office `documents` holds {len(docs) - len(held)} txn_ids twice")
    if applied_twice:
        problems.append(f"head office applied txn_ids more than once: {applied_twice}")
    lost = [t for t in lane_txns if t not in held]
    if lost:
        problems.append(f"{len(lost)} journaled documents LOST at head office, e.g. {lost[:3]}")
    lost_confirmed = distinct - held
    if lost_confirmed:
        problems.append(
            f"{len(lost_confirmed)} documents confirmed to the POS are not at head office"
        )
    extra = held - set(lane_txns)
    if extra:
        problems.append(f"head office holds {len(extra)} documents the lane never journaled")
    if other_epochs:
        problems.append(f"head office holds {other_epochs} entries under another epoch")

    # Order kept: head office's replica is seqs 1..N with the lane's txn_ids and chain hashes.
    if [s for s, _, _, _ in ho_rows] != list(range(1, len(ho_rows) + 1)):
        problems.append("head office journal seqs for the lane have gaps or do not start at 1")
    if [(s, t, h) for s, t, h, _ in ho_rows] != lj.entries:
        problems.append(
            f"head office journal ({len(ho_rows)} entries) differs from the lane journal "
            f"({len(lj.entries)} entries) in seq, txn_id or hash order"
        )
    if any(a != 1 for *_, a in ho_rows):
        problems.append("head office marked some of the lane's entries as not applied")
    if lane_row is None or int(lane_row[0]) != lj.last_seq:
        problems.append(f"head office hwm {lane_row} != lane last seq {lj.last_seq}")

    assert not problems, f"lane {lane}: " + "; ".join(problems)
    return ExactlyOnce(lane, len(distinct), len(lane_txns), len(held))


def wait_total(tills: Iterable[Till], n: int, timeout: float, what: str = "") -> int:
    """Block until the tills together confirmed at least `n` sales; returns the total."""
    tills = list(tills)
    deadline = time.monotonic() + timeout
    while (total := sum(t.count for t in tills)) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"tills confirmed {total}/{n} sales within {timeout}s {what}")
        time.sleep(0.01)
    return total


def all_confirmed(tills: Iterable[Till]) -> list[Confirmation]:
    return [c for t in tills for c in t.confirmed]


def lane_status(socket_path: Path) -> dict[str, Any]:
    """GET /v1/status from the agent's local API."""
    client = PosClient(str(socket_path), timeout=5.0)
    try:
        status, out = client.request("GET", "/v1/status")
    finally:
        client.close()
    assert status == 200, (status, out)
    assert isinstance(out, dict)
    return out


def ho_counters(ho_db: Path) -> dict[str, int]:
    """Head office's persistent counters (entries_redelivered, gaps, quarantined, ...)."""
    db = ro(ho_db)
    try:
        return {str(k): int(v) for k, v in db.execute("SELECT name, value FROM counters")}
    finally:
        db.close()
