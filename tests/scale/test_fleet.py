"""The lane fleet used by the scale test and `lanesync bench fleet`: its judge catches every
kind of wrong copy, and a small fleet survives a cut link end to end against a real head office.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lanesync import stack
from lanesync.broker import Broker
from lanesync.fleet import (
    AckedEntries,
    Fleet,
    JournalRow,
    Link,
    MemoryJournal,
    lane_ids,
    read_sqlite,
    verify,
)
from protocol.identity import LaneId
from protocol.messages import Entry

LANE = LaneId("S0001", "L1")


def journal_of(n: int) -> MemoryJournal:
    j = MemoryJournal(LANE, 4242)
    for i in range(n):
        j.add("sale", f"body {i}".encode())
    return j


def rows_of(entries: list[Entry]) -> list[JournalRow]:
    return [(LANE.store, LANE.lane, 4242, *e) for e in entries]


def test_verify_accepts_an_exact_copy() -> None:
    j = journal_of(5)
    v = verify([(LANE, j.epoch, e := j.confirmed_entries())], rows_of(e), [x.txn_id for x in e])
    assert v.ok
    assert (v.confirmed, v.at_head_office, v.documents) == (5, 5, 5)


def test_verify_names_each_kind_of_wrong_copy() -> None:
    j = journal_of(5)
    e = j.confirmed_entries()
    docs = [x.txn_id for x in e]
    confirmed = [(LANE, j.epoch, e)]
    lost = verify(confirmed, rows_of(e[:4]), docs[:4])
    assert (lost.lost, lost.ok) == (1, False)
    twice = verify(confirmed, rows_of(e), [*docs, docs[2]])
    assert (twice.duplicated, twice.ok) == (1, False)
    swapped = verify(confirmed, rows_of([e[0], e[2], e[1], e[3], e[4]]), docs)
    assert (swapped.out_of_order_lanes, swapped.ok) == (1, False)
    forged = e[3]._replace(body=b"forged")
    tampered = verify(confirmed, rows_of([*e[:3], forged, e[4]]), docs)
    assert tampered.mismatched == 1
    assert tampered.chain_broken_lanes == 1
    extra = verify([(LANE, j.epoch, e[:4])], rows_of(e), docs)
    assert extra.mismatched == 1


async def test_memory_journal_reads_chain_and_refuses_an_ack_beyond_its_end() -> None:
    j = journal_of(3)
    assert [x.seq for x in await j.read_from(2, 10)] == [2, 3]
    assert await j.hash_before(3) == j.confirmed_entries()[1].hash
    await j.mark_acked(2)
    assert (j.acked_seq, j.backlog) == (2, 1)
    with pytest.raises(Exception, match="acked seq 4 but this journal ends at 3"):
        await j.mark_acked(4)


async def test_acked_entries_leave_memory_and_come_back_for_the_judging() -> None:
    store = AckedEntries()
    try:
        j = MemoryJournal(LANE, 4242, acked=store, key=7)
        every = [j.add("sale", f"body {i}".encode()) for i in range(6)]
        await j.mark_acked(4)
        assert (store.count, j.backlog) == (4, 2)
        assert [x.seq for x in await j.read_from(5, 10)] == [5, 6]
        assert await j.hash_before(5) == every[3].hash  # the resend's chain link is kept
        assert await j.hash_before(6) == every[4].hash
        # A resend from below the acked mark (an overtaken ack) reads them back from disk.
        assert await j.read_from(3, 3) == every[2:5]
        assert await j.read_from(1, 10) == every
        assert await j.hash_before(3) == every[1].hash
        assert j.confirmed_entries(store.by_key()[7]) == every
        v = verify([(LANE, 4242, every)], rows_of(every), [x.txn_id for x in every])
        assert v.ok
    finally:
        store.close()


def test_lane_ids_four_to_a_store() -> None:
    assert [str(x) for x in lane_ids(5)] == [
        "S0001/L1",
        "S0001/L2",
        "S0001/L3",
        "S0001/L4",
        "S0002/L1",
    ]


async def test_fleet_sells_through_a_cut_link_and_head_office_holds_it_all(
    tmp_path: Path, broker: Broker
) -> None:
    ho = stack.headoffice(tmp_path, broker.port)
    try:
        ho.start()
        await asyncio.to_thread(ho.wait_notify, "STATUS=subscribed", 30)
        link = Link(broker.port)
        port = await link.start()
        try:
            # publish_timeout_s bounds the wait for CONNACK too: an attempt made while the link
            # is cut is reset before CONNACK, which aiomqtt 2.5 only notices at that timeout
            replication = {"backoff_initial_s": 0.05, "backoff_max_s": 0.3, "publish_timeout_s": 2}
            async with Fleet(20, port, replication=replication) as fleet:
                await fleet.wait_connected(20)
                await fleet.trickle(5.0, 1.0)
                await fleet.wait_drained(20)
                link.cut()
                await fleet.trickle(5.0, 1.0)
                assert fleet.connected == 0
                assert fleet.acked < fleet.appended  # sold while cut off: a backlog
                link.resume()
                await fleet.wait_drained(30)
                confirmed = list(fleet.confirmed())
                assert fleet.stats()["reconnects"] >= 20
        finally:
            link.close()
    finally:
        ho.stop()
    rows, docs = read_sqlite(tmp_path / "headoffice.db")
    v = verify(confirmed, rows, docs)
    assert v.ok, v
    assert v.lanes == 20
    assert v.confirmed > 100
