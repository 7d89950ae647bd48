"""The group applier alone (issue 13.5): decoded groups in, what to ack out, with a database
and no broker, no Ingest, no threads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from headoffice.config import parse
from headoffice.db import SqliteDatabase
from headoffice.ingest import GroupApplier, IngestStats
from headoffice.projections import PROJECTIONS
from protocol import codec
from protocol.identity import Channel
from protocol.messages import Ack, Hello
from tests.headoffice.ho_helpers import LaneSim, journal_msg, query, topic


@pytest.fixture
def applier(tmp_path: Path) -> Iterator[GroupApplier]:
    config = parse({"database": {"path": str(tmp_path / "ho.db")}})
    database = SqliteDatabase(tmp_path / "ho.db", projections=PROJECTIONS)
    try:
        yield GroupApplier(config, IngestStats(), database=database)
    finally:
        database.close()


def test_acks_what_it_committed(applier: GroupApplier, tmp_path: Path) -> None:
    sim = LaneSim()
    sim.add_many(5)
    prepared = applier.prepare_group([journal_msg(sim, 1, 3)])  # the decoder thread's part
    assert applier.apply_group(prepared) == [Ack(sim.lane, sim.epoch, 3)]
    assert query(tmp_path / "ho.db", "SELECT max(seq) FROM journal") == [(3,)]
    assert applier.apply_group([journal_msg(sim, 4, 5)]) == [Ack(sim.lane, sim.epoch, 5)]
    assert applier.stats.entries_applied == 5


def test_redelivery_acked_again_not_applied(applier: GroupApplier) -> None:
    sim = LaneSim()
    sim.add_many(2)
    applier.apply_group([journal_msg(sim, 1, 2)])
    assert applier.apply_group([journal_msg(sim, 1, 2)]) == [Ack(sim.lane, sim.epoch, 2)]
    assert (applier.stats.entries_applied, applier.stats.entries_redelivered) == (2, 2)


def test_a_gap_asks_for_a_resend(applier: GroupApplier) -> None:
    sim = LaneSim()
    sim.add_many(4)
    [ack] = applier.apply_group([journal_msg(sim, 3, 4)])
    assert isinstance(ack, Ack)
    assert (ack.hwm, ack.resend_from) == (0, 1)


def test_garbage_refused_and_nothing_acked(applier: GroupApplier) -> None:
    assert applier.apply_group([(topic(LaneSim().lane), b"\xc1 not msgpack")]) == []
    assert applier.stats.quarantined == 1


def _hello(sim: LaneSim, last_seq: int, sent_at: int) -> tuple[str, bytes]:
    msg = Hello(sim.lane, sim.epoch, last_seq, 1, "9.9.9", sent_at, protocols=(1, 2))
    return topic(sim.lane, Channel.HELLO), codec.encode(msg)


def test_a_hello_overtaken_by_the_lanes_next_batch_is_not_a_restore(
    applier: GroupApplier,
) -> None:
    """Two workers on a shared subscription: the batch a lane sent right after its hello is
    applied first. The hello says less than head office holds, but the entry after it was
    journaled after the hello was sent: the lane journaled on, nothing was restored."""
    sim = LaneSim()
    sim.add_many(3)
    applier.apply_group([journal_msg(sim, 1, 3)])
    sent_at = sim.entries[0].ts - 1  # the hello went out at seq 0, just before seq 1
    [ack] = applier.apply_group([_hello(sim, 0, sent_at)])
    assert isinstance(ack, Ack)
    assert (ack.hwm, ack.refused) == (3, None)
    assert applier.stats.lanes_refused == 0


def test_a_late_hello_sent_while_the_next_entry_waited_for_its_commit_is_not_a_restore(
    applier: GroupApplier,
) -> None:
    """The broker redelivers a hello after a restart, once head office holds more. When it
    was sent, seq 2 was dated but not yet committed, so the hello said last seq 1 and, as its
    sent_at, seq 2's date (agent.journal.Journal.clock_bound_ms): no restore."""
    sim = LaneSim()
    sim.add_many(3)
    applier.apply_group([journal_msg(sim, 1, 3)])
    [ack] = applier.apply_group([_hello(sim, 1, sim.entries[1].ts)])
    assert isinstance(ack, Ack)
    assert (ack.hwm, ack.refused) == (3, None)
    assert applier.stats.lanes_refused == 0


def test_a_hello_from_a_restored_copy_is_refused(applier: GroupApplier) -> None:
    """The same hello sent after every entry head office holds: a journal copy that lacks
    seqs 2 and 3, journaled before it was restored."""
    sim = LaneSim()
    sim.add_many(3)
    applier.apply_group([journal_msg(sim, 1, 3)])
    [ack] = applier.apply_group([_hello(sim, 1, sim.entries[-1].ts + 60_000)])
    assert isinstance(ack, Ack)
    assert ack.refused is not None
    assert "ends at seq 1 but head office already holds seq 3" in ack.refused
    assert applier.stats.lanes_refused == 1
