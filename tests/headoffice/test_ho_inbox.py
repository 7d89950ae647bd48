"""headoffice.inbox: per-store queues served in turn, bounded, the excess shed and counted."""

from __future__ import annotations

import asyncio

import pytest

from headoffice.inbox import MAX_SHED_LABELS, MESSAGE_OVERHEAD, OTHER, Inbox, store_of


def topic(store: str, lane: str = "L1", channel: str = "journal") -> str:
    return f"lanesync/v1/{store}/{lane}/{channel}"


def test_store_of_topic() -> None:
    assert store_of("lanesync/v1/S1/L1/journal") == "S1"
    assert store_of("a/b/c/S2/L9/hello") == "S2"  # a prefix with several levels
    assert store_of("junk") == ""


def test_stores_are_served_in_turn() -> None:
    inbox = Inbox(store_messages=100, store_bytes=1 << 20, total_bytes=1 << 22)
    for n in range(50):
        inbox.put(topic("FLOOD"), b"x%d" % n)
    inbox.put(topic("S1"), b"a1")
    inbox.put(topic("S2"), b"b1")
    inbox.put(topic("S1"), b"a2")
    got = [inbox.get_nowait()[1] for _ in range(6)]
    # the flood came first, yet each store has its turn; a store's own order is kept
    assert got == [b"x0", b"a1", b"b1", b"x1", b"a2", b"x2"]
    assert len(inbox) == 47
    rest = [inbox.get_nowait()[1] for _ in range(47)]
    assert rest == [b"x%d" % n for n in range(3, 50)]
    assert inbox.empty()
    with pytest.raises(IndexError):
        inbox.get_nowait()
    assert (inbox.stats.queued, inbox.stats.queued_bytes) == (0, 0)


def test_a_store_beyond_its_bound_is_shed_and_counted_others_are_not() -> None:
    inbox = Inbox(store_messages=10, store_bytes=1 << 20, total_bytes=1 << 22)
    accepted = [inbox.put(topic("FLOOD", f"L{n}"), b"garbage") for n in range(1000)]
    assert sum(accepted) == 10
    assert inbox.put(topic("S1"), b"honest")
    assert inbox.stats.shed == 990
    assert inbox.stats.shed_by_store == {"FLOOD": 990}
    assert inbox.stats.peak_queued == 11
    assert [inbox.get_nowait()[1] for _ in range(2)] == [b"garbage", b"honest"]


def test_bytes_bound_per_store() -> None:
    cost = 1000 + len(topic("S1")) + MESSAGE_OVERHEAD
    inbox = Inbox(store_messages=1000, store_bytes=3 * cost, total_bytes=100 * cost)
    assert [inbox.put(topic("S1"), b"x" * 1000) for _ in range(4)] == [True, True, True, False]
    assert inbox.stats.queued_bytes == 3 * cost


def test_a_full_inbox_drops_from_the_biggest_queue() -> None:
    cost = 100 + len(topic("S1")) + MESSAGE_OVERHEAD
    big = cost + 1  # its topic is one byte longer
    inbox = Inbox(store_messages=1000, store_bytes=8 * big, total_bytes=8 * big + 2 * cost)
    for n in range(8):
        assert inbox.put(topic("BIG"), b"%03d" % n + b"x" * 97)
    assert inbox.put(topic("S1"), b"y" * 100)
    assert inbox.put(topic("S2"), b"z" * 100)
    # full: the next honest message makes room by dropping BIG's newest
    assert inbox.put(topic("S3"), b"w" * 100)
    assert inbox.stats.shed_by_store == {"BIG": 1}
    # BIG growing further is shed itself, it is the biggest
    assert not inbox.put(topic("BIG"), b"v" * 100)
    assert inbox.stats.shed_by_store == {"BIG": 2}
    got = [inbox.get_nowait()[1][:3] for _ in range(len(inbox))]
    assert got == [b"000", b"yyy", b"zzz", b"www", b"001", b"002", b"003", b"004", b"005", b"006"]


def test_shed_labels_are_bounded() -> None:
    inbox = Inbox(store_messages=10, store_bytes=1 << 20, total_bytes=1 << 22)
    for n in range(MAX_SHED_LABELS + 50):
        for _ in range(11):
            inbox.put(topic(f"S{n}"), b"x")
    assert len(inbox.stats.shed_by_store) == MAX_SHED_LABELS + 1
    assert inbox.stats.shed_by_store[OTHER] == 50


async def test_get_waits_for_a_message() -> None:
    inbox = Inbox(store_messages=10, store_bytes=1 << 20, total_bytes=1 << 22)
    waiter = asyncio.create_task(inbox.get())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    inbox.put(topic("S1"), b"late")
    assert await asyncio.wait_for(waiter, 1) == (topic("S1"), b"late")


async def test_a_group_gives_each_store_a_bounded_share() -> None:
    inbox = Inbox(store_messages=1000, store_bytes=1 << 20, total_bytes=1 << 22)
    for n in range(100):
        inbox.put(topic("FLOOD"), b"f%d" % n)
    for store in ("S1", "S2"):
        for n in range(3):
            inbox.put(topic(store, f"L{n}"), store.encode() + b"-%d" % n)
    group = await inbox.group(64, 1 << 20, share=4)
    stores = [t.split("/")[2] for t, _ in group]
    # every honest message, and the flood only its share while others waited
    assert stores.count("S1") == stores.count("S2") == 3
    assert stores.count("FLOOD") == 4
    # alone, a store fills the group
    group = await inbox.group(64, 1 << 20, share=4)
    assert [t.split("/")[2] for t, _ in group] == ["FLOOD"] * 64
    # and the byte bound holds: f68..f99 are 3 bytes each, the group stops once 40 are in
    group = await inbox.group(64, 40, share=4)
    assert [raw for _, raw in group] == [b"f%d" % n for n in range(68, 82)]
    assert len(inbox) == 100 - 4 - 64 - 14
