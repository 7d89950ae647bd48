"""Topic names and the journal hash chain."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.chain import HASH_LEN, entry_hash, first_break, genesis
from protocol.errors import ProtocolError
from protocol.identity import Channel, LaneId, Topics, check_prefix, check_segment
from tests.protocol.proto_strategies import FAST, kinds, lanes, txn_ids

LANE = LaneId("S001", "L01")

# --- topics ---------------------------------------------------------------------------------


@FAST
@given(lanes, st.sampled_from(list(Channel)))
def test_topic_build_parse_round_trip(lane: LaneId, channel: Channel) -> None:
    t = Topics()
    topic = t.topic(lane, channel)
    assert topic == f"lanesync/v1/{lane.store}/{lane.lane}/{channel.value}"
    assert t.parse(topic) == (lane, channel)


def test_custom_prefix() -> None:
    t = Topics("acme/pos/v1")
    topic = t.topic(LANE, Channel.JOURNAL)
    assert topic == "acme/pos/v1/S001/L01/journal"
    assert t.parse(topic) == (LANE, Channel.JOURNAL)
    assert t.all_lanes(Channel.HELLO) == "acme/pos/v1/+/+/hello"


def test_shared_subscription() -> None:
    assert Topics().shared("ingest", Channel.JOURNAL) == "$share/ingest/lanesync/v1/+/+/journal"
    with pytest.raises(ProtocolError) as info:
        Topics().shared("in/gest", Channel.JOURNAL)
    assert info.value.field == "share_group"


@pytest.mark.parametrize("bad", ["+", "#", "a/b", "", "x" * 33, "S 1", "é", "a+", "$SYS"])
def test_bad_segments_refused(bad: str) -> None:
    with pytest.raises(ProtocolError) as info:
        check_segment(bad, "store")
    assert info.value.field == "store"
    with pytest.raises(ProtocolError):
        LaneId(bad, "L01")
    with pytest.raises(ProtocolError) as info:
        LaneId("S001", bad)
    assert info.value.field == "lane"


def test_segment_limits() -> None:
    assert check_segment("x" * 32, "store") == "x" * 32
    assert check_segment("A-z_0", "lane") == "A-z_0"
    with pytest.raises(ProtocolError, match="must be a string, got int"):
        check_segment(5, "store")


@pytest.mark.parametrize(
    ("topic", "field"),
    [
        ("lanesync/v1/+/L01/journal", "topic.store"),
        ("lanesync/v1/#/L01/journal", "topic.store"),
        ("lanesync/v1/S001/+/journal", "topic.lane"),
        ("lanesync/v1/" + "s" * 33 + "/L01/journal", "topic.store"),
        ("lanesync/v1//L01/journal", "topic.store"),
        ("lanesync/v1/S001/L01/x/journal", "topic"),  # a '/' smuggled into a segment
        ("lanesync/v1/S001/journal", "topic"),
        ("lanesync/v1/S001/L01/bogus", "topic"),
        ("other/v1/S001/L01/journal", "topic"),
        ("lanesync/v2/S001/L01/journal", "topic"),
        ("lanesync/v1", "topic"),
    ],
)
def test_parse_refuses(topic: str, field: str) -> None:
    with pytest.raises(ProtocolError) as info:
        Topics().parse(topic)
    assert info.value.field == field


@pytest.mark.parametrize("prefix", ["", "/a", "a/", "a//b", "a/+", "a/#", "/".join("a" * 9)])
def test_bad_prefix_refused(prefix: str) -> None:
    with pytest.raises(ProtocolError) as info:
        check_prefix(prefix)
    assert info.value.field == "topic_prefix"
    with pytest.raises(ProtocolError):
        Topics(prefix)


# --- chain ----------------------------------------------------------------------------------


def test_genesis_binds_store_lane_and_epoch() -> None:
    g = genesis(LANE, 1)
    assert len(g) == HASH_LEN
    assert g == genesis(LaneId("S001", "L01"), 1)
    others = {
        genesis(LaneId("S002", "L01"), 1),
        genesis(LaneId("S001", "L02"), 1),
        genesis(LANE, 2),
        # the separators keep "S0/01L" and "S00/1L" style splits apart
        genesis(LaneId("S001L", "01"), 1),
        genesis(LaneId("S00", "1L01"), 1),
    }
    assert g not in others
    assert len(others) == 5


def test_entry_hash_covers_every_field() -> None:
    base = (genesis(LANE, 1), 1, "sale", "t", 5, b"body")
    h = entry_hash(*base)
    variants = [
        (b"\1" * 32, *base[1:]),
        (base[0], 2, *base[2:]),
        (*base[:2], "sale_refund", *base[3:]),
        (*base[:3], "u", *base[4:]),
        (*base[:4], 6, base[5]),
        (*base[:5], b"bodY"),
        # length prefixes: moving a byte between kind and txn_id changes the hash
        (*base[:2], "sal", "et", *base[4:]),
    ]
    assert all(entry_hash(*v) != h for v in variants)


def chain(lane: LaneId, epoch: int, docs: list[tuple[str, str, int, bytes]], first: int = 1):
    prev = genesis(lane, epoch)
    out = []
    for i, (kind, txn, ts, body) in enumerate(docs):
        seq = first + i
        prev = entry_hash(prev, seq, kind, txn, ts, body)
        out.append((seq, kind, txn, ts, body, prev))
    return out


@FAST
@given(
    st.lists(st.tuples(kinds, txn_ids, st.integers(0, 2**40), st.binary(max_size=30)), min_size=1),
    st.data(),
)
def test_first_break_finds_the_altered_entry(docs, data: st.DataObject) -> None:
    entries = chain(LANE, 3, docs)
    g = genesis(LANE, 3)
    assert first_break(g, entries) is None
    assert first_break(genesis(LANE, 4), entries) == (
        1,
        entry_hash(genesis(LANE, 4), *entries[0][:5]),
    )
    i = data.draw(st.integers(0, len(entries) - 1))
    seq, kind, txn, ts, body, h = entries[i]
    altered = list(entries)
    altered[i] = (seq, kind, txn, ts, body + b"!", h)
    broken = first_break(g, altered)
    assert broken is not None
    assert broken[0] == seq
    prev = g if i == 0 else entries[i - 1][5]
    assert broken[1] == entry_hash(prev, seq, kind, txn, ts, body + b"!")


def test_first_break_on_empty_run() -> None:
    assert first_break(genesis(LANE, 1), []) is None
