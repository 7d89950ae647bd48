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
from protocol.messages import Ack
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
