"""The pure half of ingest: a group of decoded messages in, what to publish out (acks,
replies), with what was held or refused written in the same transaction. No broker: it is
driven by the session (headoffice.ingest.session) on its decoder and writer threads, and
by tests with a database alone.

No one message can take the others down with it. Entries head office cannot apply are held at
their seq (headoffice.db.base, invariant 9), so a valid chain always moves on. Should a
group still fail for a reason that lies in one of its messages (a bug, a database constraint
nobody foresaw), it is rolled back and applied again message by message, each in its own
transaction, so the good ones commit; a batch that fails on its own is applied entry by
entry and the entry that fails is held (`apply_failed`); any other message that fails is
quarantined (a request is answered with an error). A failure of the database itself (disk
full, connection lost: headoffice.db.transient) fails the group as before, and lanes
resend.

Several ingest processes (workers) can share one MQTT shared subscription (`broker.share_group`)
over PostgreSQL. The broker then spreads one lane's batches over the workers, so batch k+1 can
reach worker B while worker A still holds batch k. The database locks the lane rows at the start of
each group, which serialises the two when A already holds the lock; otherwise B sees a gap. B
holds such a batch and retries it with its next groups for up to `ingest.gap_hold_ms` before it
asks the lane to resend: asking at once would turn every such race into a resend storm.

A hello is answered with the protocol version to use (issue 18.3) and with the proof that both
sides hold the same chain (issue 16.7): the lane's chain hashes at its acked seq and below are
compared with head office's (`chain_hashes`), giving "identical up to seq N" or the first seq
where they differ (kept per lane in `IngestStats.proofs`, shown by the status page). When the
checkpoints only bound that seq, the lane narrows it with `OP_PROOF_NARROW` requests, answered
here (protocol.proof) with the exact seq, which then replaces the range verdict. A lane
that had more acked than head office holds finds head office restored from an older copy: it
is asked to resend from head office's mark (`rewind`). A lane whose journal ends before what
head office holds of its own epoch was restored from an old copy: it is refused (`refused`)
before it can fork its chain.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from headoffice.catalog.registry import Registry
from headoffice.config import HeadOfficeConfig
from headoffice.db import Database, DatabaseError, EpochRefused, transient
from headoffice.db.base import (
    ApplyResult,
    CheckedBatch,
    HeldEntry,
    check_batch,
    held_reason,
    hold_all,
)
from headoffice.db.projection import Projections
from headoffice.inbox import Inbox, store_of
from headoffice.ingest.stats import MAX_LANES_TRACKED, IngestStats, LaneKey
from headoffice.lograte import StoreLog
from headoffice.projections import PROJECTIONS
from protocol import codec, proof
from protocol.chain import genesis
from protocol.errors import ProtocolError
from protocol.identity import Channel, LaneId
from protocol.messages import (
    Ack,
    HeadOffice,
    Hello,
    JournalBatch,
    Message,
    Reply,
    Request,
    Status,
    choose_version,
)
from protocol.requests import BAD_REQUEST, CODE_KEY, OP_PROOF_NARROW
from protocol.runtime.clock import now_ms

log = logging.getLogger("headoffice.ingest")
refusals = StoreLog(log)  # quarantined messages: a few lines per store and 10 s

RequestHandler = Callable[[Database, Request, int], Reply]


@dataclass(slots=True)
class Prepared:
    """One received message after the database-free checks: a message or a refusal."""

    topic: str
    raw: bytes
    lane: LaneId | None
    msg: Message | None = None
    checked: CheckedBatch | None = None
    refusal: str | None = None


CHANNEL_TYPES: dict[Channel, type[Message]] = {
    Channel.JOURNAL: JournalBatch,
    Channel.HELLO: Hello,
    Channel.STATUS: Status,
    Channel.REQUEST: Request,
}


# After the catalog's version moved, the lanes with open `unregistered` entries are read again
# with every group for this long: another worker may have held one under the old version in a
# transaction that committed just after this worker looked (its later batches must wait for
# those to be released first, in order).
REGISTRY_RECHECK_S = 5.0
# The catalog's version is read at most this often (a group's transaction: one indexed read).
# A registration seen this much later only holds a batch that is released right after.
REGISTRY_REFRESH_S = 0.1
# While the registry holds anything, ingest looks at the catalog's version at least this often
# even when no message comes, so registering a store releases its entries without its lanes
# having to send anything.
REGISTRY_POLL_S = 1.0
UNREGISTERED = "unregistered"
# A registration releases a lane's entries this many per transaction (a typo store may have
# sent for days): the single writer is never held up long, and while more remain, the lane's
# new entries are held behind them (released next, in order).
RELEASE_CHUNK = 1000
RELEASE_IDLE_BUDGET_S = 0.25  # of release transactions after a group, for lanes sending nothing
MAX_WAITING = 5_000  # gapped batches beyond this are answered with a resend at once (memory)


@dataclass(slots=True)
class _Waiting:
    """A batch that arrived ahead of its predecessor, and since when it waits (monotonic)."""

    prepared: Prepared
    since: float


@dataclass(slots=True)
class _Flooded:
    """Refusals of a flooding store on one topic, counted in a group (the first kept)."""

    lane: LaneId | None
    reason: str
    raw: bytes
    times: int = 1


@dataclass(slots=True)
class _Outcome:
    """What one or more committed transactions decided, for the acks and the counters."""

    acks: dict[LaneKey, Ack] = field(default_factory=dict)
    gaps: dict[LaneKey, str] = field(default_factory=dict)
    replies: list[Reply] = field(default_factory=list)
    results: list[ApplyResult] = field(default_factory=list)
    waiting: list[_Waiting] = field(default_factory=list)  # gapped: retried with the next group
    quarantined: int = 0
    epochs_refused: int = 0
    gaps_held: int = 0
    gaps_closed: int = 0
    flooded: dict[str, _Flooded] = field(default_factory=dict)  # by topic, written at commit
    unregistered: int = 0  # entries held for the store registry
    released: int = 0  # held entries released because their store or lane got registered
    registered: set[tuple[str, str]] = field(default_factory=set)  # lanes whose were released

    def merge(self, other: _Outcome) -> None:
        self.acks.update(other.acks)
        self.gaps.update(other.gaps)
        self.replies += other.replies
        self.results += other.results
        self.waiting += other.waiting
        self.quarantined += other.quarantined
        self.epochs_refused += other.epochs_refused
        self.gaps_held += other.gaps_held
        self.gaps_closed += other.gaps_closed
        self.unregistered += other.unregistered
        self.released += other.released
        self.registered |= other.registered


def _gap_key(p: Prepared) -> tuple[str, str, int, int]:
    msg = p.msg
    assert isinstance(msg, JournalBatch)
    return (msg.lane.store, msg.lane.lane, msg.epoch, msg.first_seq)


class GroupApplier:
    """Applies groups of messages, each group in one transaction, and says what to publish.

    `prepare` (decoder thread, no database) decodes and checks one message; `apply_group`
    (the single writer thread) applies a group and returns the acks and replies to publish
    once it committed. `database` is set by whoever runs it (the session opens it on the
    writer thread)."""

    def __init__(
        self,
        config: HeadOfficeConfig,
        stats: IngestStats,
        *,
        handlers: dict[str, RequestHandler] | None = None,
        projections: Projections = PROJECTIONS,
        inbox: Inbox | None = None,
        database: Database | None = None,
    ) -> None:
        """`inbox`, when given, says which stores are flooding (their refusals are counted,
        not each written)."""
        self.config = config
        self.topics = config.topics
        self.stats = stats
        self.handlers = dict(handlers or {})
        self.handlers.setdefault(OP_PROOF_NARROW, self._narrow_proof)
        self.projections = projections
        self.database = database
        self._inbox = inbox
        # gapped batches retried with the next group (touched only on the writer thread)
        self.waiting: list[_Waiting] = []
        self._hold_s = config.ingest.gap_hold_ms / 1000
        # a held batch is retried with every group, and at least this often when none come
        self._hold_retry_s = min(0.05, max(0.005, self._hold_s / 10))
        # The store registry and the lanes with open `unregistered` entries (writer thread).
        self.registry = Registry()
        self.unregistered: set[tuple[str, str]] = set()
        self._recheck_until = 0.0
        self._registry_due = 0.0

    def wake_after(self) -> float | None:
        """How long the writer may wait for a group before it must run one anyway: to retry
        batches held for a gap, or to notice a store's registration (None: no limit)."""
        if self.waiting:
            return self._hold_retry_s
        return REGISTRY_POLL_S if self.unregistered or self.registry.enforced else None

    # --- preparing (decoder thread): no database --------------------------------------------

    def prepare_group(self, group: list[tuple[str, bytes]]) -> list[Prepared]:
        return [self.prepare(topic, raw) for topic, raw in group]

    def prepare(self, topic: str, raw: bytes) -> Prepared:
        """Decode and check one message on its own; a refusal names why. Whatever the
        message makes the decoder or a check raise refuses that message, never the process."""
        try:
            return self._prepare(topic, raw)
        except Exception as exc:  # noqa: BLE001 - one message must not take ingest down
            lane = None
            with contextlib.suppress(ProtocolError):
                lane = self.topics.parse(topic)[0]
            log.error("head office: could not read a message on %s: %r", topic, type(exc))
            return Prepared(
                topic,
                raw,
                lane,
                refusal=held_reason(f"head office could not read this message: {_describe(exc)}"),
            )

    def _prepare(self, topic: str, raw: bytes) -> Prepared:
        try:
            lane, channel = self.topics.parse(topic)
        except ProtocolError as exc:
            return Prepared(topic, raw, None, refusal=str(exc))
        try:
            msg = codec.decode(raw, self.config.ingest.max_message_bytes)
        except ProtocolError as exc:
            return Prepared(topic, raw, lane, refusal=str(exc))
        if isinstance(msg, HeadOffice):
            return Prepared(
                topic, raw, lane, refusal=f"a {msg.TYPE} message does not belong on {channel}"
            )
        if msg.lane != lane:
            return Prepared(
                topic,
                raw,
                lane,
                refusal=f"payload is for {msg.lane} but was published under {lane}'s topic",
            )
        expected = CHANNEL_TYPES.get(channel)
        if expected is None or not isinstance(msg, expected):
            return Prepared(
                topic, raw, lane, refusal=f"a {msg.TYPE} message does not belong on {channel}"
            )
        checked = check_batch(msg, self.projections) if isinstance(msg, JournalBatch) else None
        return Prepared(topic, raw, lane, msg, checked)

    # --- applying (writer thread) ---------------------------------------------------------

    def apply_group(self, group: Sequence[Prepared | tuple[str, bytes]]) -> list[Ack | Reply]:
        """Apply a group of messages in one transaction; returns what to publish after it.

        Raw `(topic, bytes)` pairs are prepared here first (tests and single-threaded use).
        """
        db = self.database
        assert db is not None
        now = now_ms()
        clock = time.monotonic()
        self.stats.messages += len(group)
        waiting, self.waiting = self.waiting, []
        work = [(w.prepared, w.since) for w in waiting]  # older than this group: first
        work += [(i if isinstance(i, Prepared) else self.prepare(*i), clock) for i in group]
        try:
            try:
                out = self._transaction(db, work, clock, now)
            except Exception as exc:
                db.rollback()
                if transient(exc):
                    raise
                self.stats.groups_split += 1
                log.error(
                    "head office: a group of %d messages failed (%s); applying them one by one",
                    len(work),
                    _describe(exc),
                )
                out = self._one_by_one(db, work, clock, now)
        except Exception as exc:
            db.rollback()
            self.waiting = waiting  # retried with the next group; the new ones come again
            if isinstance(exc, DatabaseError):
                raise
            raise DatabaseError(f"ingest failed: {_describe(exc)}") from exc
        self._release_idle(db, now, out)
        return self._finish(out)

    def _finish(self, out: _Outcome) -> list[Ack | Reply]:
        st = self.stats
        for res in out.results:
            st.entries_applied += res.applied
            st.duplicate_txn_ids += res.duplicate_txn
            st.entries_held += res.held
            st.entries_redelivered += res.redelivered
            st.gaps += res.resend_from is not None
        st.quarantined += out.quarantined
        st.epochs_refused += out.epochs_refused
        st.gaps_held += out.gaps_held
        st.gaps_closed += out.gaps_closed
        st.entries_unregistered += out.unregistered
        st.entries_released += out.released
        self.unregistered -= out.registered
        st.groups += 1
        st.journal_groups += bool(out.results)
        st.last_commit_at = time.time()
        self.waiting = out.waiting
        acks: list[Ack | Reply] = []
        for key, ack in out.acks.items():
            st.lane_hwm[key] = ack.hwm
            reason = out.gaps.get(key)
            if reason is not None and ack.resend_from is None:
                acks.append(dataclasses.replace(ack, resend_from=ack.hwm + 1, reason=reason))
            else:
                acks.append(ack)
        return acks + list(out.replies)

    def _transaction(
        self, db: Database, work: list[tuple[Prepared, float]], clock: float, now: int
    ) -> _Outcome:
        """Apply `work` in one transaction and commit it; raises (nothing committed) if any
        of it fails."""
        out = _Outcome()
        # Lock every lane the group touches first, in one fixed order (PostgreSQL workers).
        touched = {
            (p.msg.lane, p.msg.epoch) for p, _ in work if isinstance(p.msg, JournalBatch | Hello)
        }
        db.lock_lanes(sorted(touched, key=lambda k: (k[0].store, k[0].lane, k[1])))
        self._check_registry(db, clock)  # after the lock: sees every hold of these lanes
        gapped: list[_Waiting] = []
        for p, since in work:
            if self._gapped(db, p):
                gapped.append(_Waiting(p, since))
            else:
                self._apply_one(db, p, now, out)
        if gapped:
            self._settle_gapped(db, gapped, clock, now, out)
        self._write_flooded(db, out, now)
        db.commit()
        return out

    def _one_by_one(
        self, db: Database, work: list[tuple[Prepared, float]], clock: float, now: int
    ) -> _Outcome:
        """The group again, each message in its own transaction: the good ones commit."""
        out = _Outcome()
        for p, since in work:
            try:
                out.merge(self._transaction(db, [(p, since)], clock, now))
            except Exception as exc:
                db.rollback()
                if transient(exc):
                    raise
                out.merge(self._isolate(db, p, since, exc, clock, now))
        return out

    def _isolate(
        self, db: Database, p: Prepared, since: float, exc: Exception, clock: float, now: int
    ) -> _Outcome:
        """One message that fails on its own: a batch entry by entry, holding the entry that
        fails; anything else quarantined (a request answered with an error)."""
        msg, lane = p.msg, p.lane
        if isinstance(msg, JournalBatch) and lane is not None:
            return self._entry_by_entry(db, p, msg, since, clock, now)
        out = _Outcome()
        log.error("head office: a message on %s failed on its own: %s", p.topic, _describe(exc))
        self._quarantine(
            db,
            p.topic,
            lane,
            f"head office could not apply this message: {_describe(exc)}",
            p.raw,
            now,
            out,
            sample=False,
        )
        db.commit()
        if isinstance(msg, Request) and lane is not None:
            out.replies.append(
                Reply(lane, msg.corr, False, error="head office could not answer (internal error)")
            )
        return out

    def _entry_by_entry(
        self,
        db: Database,
        p: Prepared,
        msg: JournalBatch,
        since: float,
        clock: float,
        now: int,
    ) -> _Outcome:
        out = _Outcome()
        checked = p.checked or check_batch(msg, self.projections)
        entries = msg.entries
        for i, e in enumerate(entries[: checked.valid]):
            prev = msg.prev_hash if i == 0 else entries[i - 1].hash
            one = JournalBatch(msg.lane, msg.epoch, prev, [e])
            sub = Prepared(p.topic, p.raw, p.lane, one, check_batch(one, self.projections))
            try:
                out.merge(self._transaction(db, [(sub, since)], clock, now))
            except Exception as exc:
                db.rollback()
                if transient(exc):
                    raise
                reason = f"entry seq {e.seq}: head office could not apply it: {_describe(exc)}"
                db.lock_lanes([(msg.lane, msg.epoch)])
                res = db.hold_entry(
                    msg.lane, msg.epoch, prev, HeldEntry(e, "apply_failed", reason), now
                )
                db.commit()
                out.results.append(res)
                out.acks[(msg.lane.store, msg.lane.lane, msg.epoch)] = Ack(
                    msg.lane, msg.epoch, res.hwm, None, res.reason
                )
        if checked.refusal is not None:
            self._quarantine(db, p.topic, p.lane, checked.refusal, p.raw, now, out, sample=False)
            db.commit()
        return out

    @staticmethod
    def _gapped(db: Database, p: Prepared) -> bool:
        """A batch that starts beyond what head office holds for its lane (after the lock)."""
        msg = p.msg
        if not isinstance(msg, JournalBatch) or p.lane is None:
            return False
        state = db.lane_state(p.lane, msg.epoch)
        return msg.first_seq > (state.hwm if state is not None else 0) + 1

    def _settle_gapped(
        self, db: Database, waiting: list[_Waiting], clock: float, now: int, out: _Outcome
    ) -> None:
        """Apply the gapped batches whose predecessor this group brought; hold the others
        until `gap_hold_ms` has passed, then apply them, which answers with a resend."""
        waiting.sort(key=lambda h: _gap_key(h.prepared))
        progress = True
        while waiting and progress:
            progress = False
            still: list[_Waiting] = []
            for h in waiting:
                if self._gapped(db, h.prepared):
                    still.append(h)
                    continue
                if h.since < clock:
                    out.gaps_closed += 1
                self._apply_one(db, h.prepared, now, out)
                progress = True
            waiting = still
        for h in waiting:
            expired = clock - h.since >= self._hold_s
            if expired or len(out.waiting) >= MAX_WAITING:
                self._apply_one(db, h.prepared, now, out)  # asks a resend
            else:
                if h.since == clock:
                    out.gaps_held += 1
                out.waiting.append(h)

    def _apply_one(self, db: Database, p: Prepared, now: int, out: _Outcome) -> None:
        msg, lane = p.msg, p.lane
        if msg is None or lane is None:
            self._quarantine(db, p.topic, lane, p.refusal or "refused", p.raw, now, out)
            return
        if isinstance(msg, JournalBatch):
            checked, unregistered = self._registered(
                db, p.checked or check_batch(msg, self.projections), now, out
            )
            state = db.lane_state(lane, msg.epoch) if unregistered else None
            low = state.hwm if state is not None else 0  # apply_batch moves state.hwm
            # Deferred: the group's rows are written together at commit (or before a request
            # reads them); applied/duplicate/held counts are known then.
            try:
                res = db.apply_batch(checked, now, defer=True)
            except EpochRefused as exc:
                self._refuse_epoch(db, p, exc, now, out)
                return
            out.results.append(res)
            if unregistered and res.resend_from is None:  # the entries it held: new ones only
                out.unregistered += sum(
                    1
                    for seq, h in checked.held.items()
                    if low < seq <= res.hwm and h.code == UNREGISTERED
                )
            key = (lane.store, lane.lane, msg.epoch)
            if res.resend_from is not None:
                out.gaps[key] = res.reason or "gap"
            elif res.quarantined:
                self._quarantine(db, p.topic, lane, res.reason or "refused", p.raw, now, out)
            ack = Ack(lane, msg.epoch, res.hwm, res.resend_from, res.reason)
            out.acks[key] = _after_hello(out.acks.get(key), ack)
        elif isinstance(msg, Hello):
            try:
                state = db.note_hello(lane, msg.epoch, msg.last_seq, now, catalog=msg.catalog)
            except EpochRefused as exc:
                self._refuse_epoch(db, p, exc, now, out)
                return
            ack = self._answer_hello(db, msg, state.hwm)
            out.acks[(lane.store, lane.lane, msg.epoch)] = ack
            self.stats.note_hello(lane.store, lane.lane, msg.version, ack.protocol or 1, now / 1000)
        elif isinstance(msg, Status):
            db.save_status(msg)
        elif isinstance(msg, Request):
            handler = self.handlers.get(msg.op)
            if handler is None:
                out.replies.append(
                    Reply(lane, msg.corr, False, error=f"unknown operation {msg.op!r}")
                )
            else:
                db.flush()  # a transit request may read what this group's batches projected
                out.replies.append(handler(db, msg, now))

    # --- hello: version, proof, restores (issues 16.7 and 18.3) -------------------------------

    def _answer_hello(self, db: Database, msg: Hello, hwm: int) -> Ack:
        """The ack for a hello: head office's mark, and for a lane that said what it speaks
        (v2) the version to use, the proof's verdict, a rewind or a refusal."""
        lane, epoch, acked = msg.lane, msg.epoch, msg.acked_seq
        v2 = bool(msg.protocols)
        if msg.last_seq < hwm and self._restored_copy(db, msg):
            self.stats.lanes_refused += 1
            why = (
                f"the journal of {lane} (epoch {epoch}) ends at seq {msg.last_seq} but head "
                f"office already holds seq {hwm} of that epoch: the journal was restored from an "
                "old copy, and sending on would fork its chain. Move this journal aside so the "
                "agent starts a new epoch; what head office holds stays, and the documents "
                "journaled since the copy stay unsent in the moved file, to be submitted again"
            )
            self._note_proof(lane, epoch, "refused", why, acked, hwm)
            log.error("head office: %s refused: %s", lane, why, extra={"epoch": epoch})
            if not v2:
                return Ack(lane, epoch, hwm, None, why)
            return Ack(lane, epoch, hwm, None, why, choose_version(msg.protocols), why, False, why)
        if acked > hwm:
            self.stats.restores_detected += 1
            why = (
                f"head office holds seq {hwm} of {lane} epoch {epoch}, less than the {acked} "
                f"the lane had acknowledged: head office was restored from an older copy; "
                f"resend from seq {hwm + 1}"
            )
            self._note_proof(lane, epoch, "restored", why, min(acked, hwm), hwm)
            log.warning("head office: %s", why, extra={"epoch": epoch})
            if not v2:
                return Ack(lane, epoch, hwm, hwm + 1, why)
            return Ack(lane, epoch, hwm, hwm + 1, why, choose_version(msg.protocols), why, True)
        verdict, state, upto = self._compare(db, msg, hwm)
        self._note_proof(lane, epoch, state, verdict, upto, hwm)
        if not v2:
            return Ack(lane, epoch, hwm)
        return Ack(lane, epoch, hwm, None, None, choose_version(msg.protocols), verdict)

    @staticmethod
    def _restored_copy(db: Database, msg: Hello) -> bool:
        """Whether a hello whose journal ends below what head office holds comes from a journal
        restored from an old copy, rather than from a lane that has journaled on since.

        With several ingest workers on a shared subscription, a lane's hello and the batch it
        sent right after can reach different workers, and the batch can be applied first: the
        hello then says less than head office holds without anything being wrong. The lane's
        own clock tells the two apart: the entry after the hello's last seq was journaled after
        the hello was sent (a later batch of this journal) or before it (the entries a restored
        copy lacks, journaled before the restore)."""
        db.flush()  # this group's batches may hold that entry
        ts = db.entry_ts(msg.lane, msg.epoch, msg.last_seq + 1)
        return ts is None or ts < msg.sent_at

    @staticmethod
    def _compare(db: Database, msg: Hello, hwm: int) -> tuple[str, str, int]:
        """(verdict, state, identical-up-to seq) from the hello's checkpoints."""
        points = [(seq, h) for seq, h in msg.proof if seq <= hwm]
        if not points:
            what = "said no chain hashes (a v1 lane)" if not msg.proof else "has none we hold"
            return f"not compared: the lane {what}", proof.UNKNOWN, 0
        db.flush()  # this group's batches may hold the entries at the checkpoints
        ours = db.chain_hashes(msg.lane, msg.epoch, [s for s, _ in points])
        ours[0] = genesis(msg.lane, msg.epoch)
        v = proof.compare(points, ours, msg.acked_seq)
        return v.text, v.state, v.upto

    def _narrow_proof(self, db: Database, req: Request, now: int) -> Reply:
        """OP_PROOF_NARROW: the lane's hashes inside a range verdict, compared with ours;
        answers the narrower range or the exact first seq where the chains differ, and
        shows that verdict for the lane (IngestStats.proofs) in place of the range."""
        lane = req.lane
        try:
            epoch, points = proof.narrow_args(req.args)
        except ProtocolError as exc:
            refusal = {CODE_KEY: BAD_REQUEST, "field": exc.field or "args"}
            return Reply(lane, req.corr, False, refusal, str(exc))
        ours = db.chain_hashes(lane, epoch, [s for s, _ in points])
        ours[0] = genesis(lane, epoch)
        v = proof.compare(points, ours)
        if v.state == proof.DIFFER:
            state = db.lane_state(lane, epoch)
            self._note_proof(lane, epoch, v.state, v.text, v.upto, state.hwm if state else 0)
        result: dict[str, Any] = {
            "verdict": v.text,
            "state": v.state,
            "upto": v.upto,
            "differ": v.differ,
        }
        return Reply(lane, req.corr, True, result)

    def _note_proof(
        self, lane: LaneId, epoch: int, state: str, text: str, upto: int, hwm: int
    ) -> None:
        proofs = self.stats.proofs
        key = (lane.store, lane.lane)
        proofs[key] = {"epoch": epoch, "state": state, "text": text, "upto": upto, "hwm": hwm}
        proofs.move_to_end(key)
        while len(proofs) > MAX_LANES_TRACKED:
            proofs.popitem(last=False)

    # --- the store registry (issue 14 item 4) -------------------------------------------------

    def _check_registry(self, db: Database, clock: float) -> None:
        """The registry at the catalog's current version (read at most every
        REGISTRY_REFRESH_S); the lanes with open `unregistered` entries read again when it
        moved, and with every group for REGISTRY_RECHECK_S after."""
        changed = False
        if clock >= self._registry_due:
            self._registry_due = clock + REGISTRY_REFRESH_S
            changed = self.registry.refresh(db.sql)
        if changed:
            log.info("head office: store registry at %s", self.registry.describe())
            self.stats.registry_version = self.registry.version
            self.stats.registry_stores = len(self.registry.stores)
            self._recheck_until = clock + REGISTRY_RECHECK_S
            self.unregistered = db.held_lanes(UNREGISTERED)
        elif clock < self._recheck_until:
            self.unregistered = db.held_lanes(UNREGISTERED)

    def _registered(
        self, db: Database, checked: CheckedBatch, now: int, out: _Outcome
    ) -> tuple[CheckedBatch, bool]:
        """The batch as ingest applies it, and whether the registry holds it: every entry
        held when the registry does not know its store or lane; otherwise, first, what the
        lane had held for that is released (in order)."""
        lane = checked.batch.lane
        refusal = self.registry.refusal(lane)
        key = (lane.store, lane.lane)
        pending = refusal is None and key in self.unregistered
        if pending and not self._release_registered(db, key, now, out):
            refusal = (
                f"{lane} waits behind its entries held for the store registry while they are "
                "released (in order)"
            )
        if refusal is not None:
            self.unregistered.add(key)
            return hold_all(checked, UNREGISTERED, refusal), True
        return checked, False

    def _release_registered(
        self, db: Database, key: tuple[str, str], now: int, out: _Outcome
    ) -> bool:
        """Release a lane's `unregistered` entries, once, in (epoch, seq) order, through the
        operator's release path (today's rules apply: one that fails them stays held), at
        most RELEASE_CHUNK of them; returns whether that was all."""
        ids = db.held_ids(key[0], key[1], UNREGISTERED, RELEASE_CHUNK)
        if ids:
            what = f"lane {key[0]}/{key[1]}" if key[0] in self.registry.lanes else f"store {key[0]}"
            note = f"{what} registered in catalog version {self.registry.version}"
            outcomes = db.release_held(ids, "store registry", note, now, registry=self.registry)
            out.released += sum(o.changed for o in outcomes)
            log.info(
                "head office: %s: %d held entries released", note, sum(o.changed for o in outcomes)
            )
        if len(ids) == RELEASE_CHUNK:
            return False
        out.registered.add(key)
        return True

    def _release_idle(self, db: Database, now: int, out: _Outcome) -> None:
        """Registered lanes that sent nothing in this group: their entries are released in a
        transaction of their own each (the next group retries one that failed)."""
        todo = sorted(
            k
            for k in self.unregistered - out.registered
            if self.registry.refusal(LaneId(*k)) is None
        )
        deadline = time.monotonic() + RELEASE_IDLE_BUDGET_S
        for key in todo:
            one = _Outcome()
            try:
                while not self._release_registered(db, key, now, one):
                    db.commit()  # a chunk at a time
                    if time.monotonic() >= deadline:
                        break  # the next group or poll goes on
                db.commit()
            except Exception as exc:  # noqa: BLE001 - one lane must not fail the others
                db.rollback()
                if transient(exc):
                    return  # the database is failing: the next group tries again
                refusals.log(
                    logging.ERROR,
                    key[0],
                    "head office: releasing the held entries of %s/%s failed: %s",
                    key[0],
                    key[1],
                    _describe(exc),
                )
                continue
            out.merge(one)
            if time.monotonic() >= deadline:
                return

    def _refuse_epoch(
        self, db: Database, p: Prepared, exc: EpochRefused, now: int, out: _Outcome
    ) -> None:
        """A new epoch beyond the lane's cap: quarantined on one row per lane and channel
        (the reason names no epoch, and the row folds whatever the bytes), no ack."""
        out.epochs_refused += 1
        self._quarantine(db, p.topic, p.lane, str(exc), p.raw, now, out, fold=str(exc))

    def _quarantine(
        self,
        db: Database,
        topic: str,
        lane: LaneId | None,
        reason: str,
        raw: bytes,
        now: int,
        out: _Outcome,
        *,
        fold: str | None = None,
        sample: bool = True,
    ) -> None:
        """Quarantine one refused message; from a store that is flooding (the inbox sheds
        its messages) only counted here and written per topic once a group (`sample`)."""
        out.quarantined += 1
        sender = lane.store if lane else store_of(topic)
        if sample and fold is None and self._inbox is not None and self._inbox.flooding(sender):
            kept = out.flooded.get(topic)
            if kept is None:
                out.flooded[topic] = _Flooded(lane, reason, raw)
            else:
                kept.times += 1
            return
        refusals.log(
            logging.WARNING,
            sender,
            "head office: quarantined a message on %s: %s",
            topic,
            held_reason(reason),
        )
        db.quarantine(topic, lane, reason, raw, now, fold=fold)

    @staticmethod
    def _write_flooded(db: Database, out: _Outcome, now: int) -> None:
        """One row per topic for what a flooding store's refused messages (QuarantineRow
        folds them: the first's reason and bytes, and how many)."""
        for topic, f in out.flooded.items():
            reason = (
                f"{store_of(topic)} sends faster than head office applies (its messages are "
                f"shed, see messages_shed): refusals on this topic are counted here; the first "
                f"was: {f.reason}"
            )
            db.quarantine(topic, f.lane, reason, f.raw, now, fold="flooding", times=f.times)
        out.flooded.clear()


def _after_hello(hello: Ack | None, batch: Ack) -> Ack:
    """A batch's ack where the same group answered the lane's hello (one ack per lane and
    group): the hello's refusal or rewind stands; otherwise the batch's mark, with the
    hello's version and proof (they were lost with it before, and the lane never learnt)."""
    if hello is None or hello.protocol is None:
        return batch
    if hello.refused is not None or hello.rewind:
        return hello
    return dataclasses.replace(batch, protocol=hello.protocol, proof=hello.proof)


def _describe(exc: BaseException) -> str:
    """An exception for a reason or a log line: its type and (masked, cut) message."""
    return held_reason(f"{type(exc).__name__}: {exc}")[:300]
