"""Requests and replies carry no card number on either side; refusals never quote one."""

from __future__ import annotations

import uuid
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.errors import ProtocolError
from protocol.identity import LaneId, check_segment
from protocol.messages import Ack, Hello, Reply, Request
from protocol.pan import contains_pan

LANE = LaneId("S1", "L1")
PAN = "4111111111111111"
SSCC_LUHN = "340063810000000063"  # a valid SSCC whose digits also pass Luhn
MS_LUHN = 1_718_000_000_022  # a millisecond time (2024) whose digits pass Luhn


def wire(m: dict[str, Any]) -> bytes:
    return msgpack.packb({"v": 1, **m}, use_bin_type=True)


def req_map(args: Any, **over: Any) -> dict[str, Any]:
    return {"t": "req", "store": "S1", "lane": "L1", "corr": "c1", "op": "x", "args": args, **over}


def rep_map(result: Any, **over: Any) -> dict[str, Any]:
    m = {"t": "rep", "store": "S1", "lane": "L1", "corr": "c1", "ok": True, "result": result}
    return {**m, "error": None, **over}


def refused(raw: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        codec.decode(raw)
    assert not contains_pan(str(info.value)), info.value  # never echoed
    return info.value


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"transit_no": PAN}, "args.transit_no"),
        ({"transit_no": "4111 1111 1111 1111"}, "args.transit_no"),
        ({"source_store": "4111-1111-1111-1111"}, "args.source_store"),
        ({"sscc": PAN}, "args.sscc"),  # declared SSCC, but 16 digits are no SSCC
        ({"staff": int(PAN)}, "args.staff"),
        ({"deadline_ms": 4_222_222_222_222}, "args.deadline_ms"),  # past 2096: a Visa
        ({"nested": [{"x": f"card {PAN}"}]}, "args.nested[0].x"),
        ({PAN: 1}, "args (a map key)"),
        ({"s": "\ud800"}, "args.s"),
    ],
)
def test_a_lane_cannot_make_a_request_with_one_and_head_office_refuses_it(
    args: dict[str, Any], field: str
) -> None:
    with pytest.raises(ProtocolError) as made:
        Request(LANE, "c1", "transit_lookup", args)
    assert made.value.field == field
    assert not contains_pan(str(made.value))
    if field != "args.s":  # msgpack cannot even pack a lone surrogate
        assert refused(wire(req_map(args))).field == field


def test_declared_request_fields_pass() -> None:
    args = {"sscc": SSCC_LUHN, "deadline_ms": MS_LUHN, "mode": "receive"}
    msg = Request(LANE, "c1", "transit_accept", args)
    assert codec.decode(codec.encode(msg)) == msg


def test_reply_with_one_is_withheld_when_sent_and_refused_when_received() -> None:
    transit = {"sscc": SSCC_LUHN, "by": {"type": "staff", "id": PAN}, "lines": []}
    sent = codec.decode(codec.encode(Reply(LANE, "c1", True, {"transit": transit})))
    assert isinstance(sent, Reply)
    assert sent.ok is False
    assert sent.result == {"code": "withheld", "field": "result.transit.by.id"}
    assert sent.error is not None
    assert "result.transit.by.id" in sent.error
    assert PAN not in sent.error
    assert refused(wire(rep_map({"transit": transit}))).field == "result.transit.by.id"


def test_reply_declared_fields_pass() -> None:
    result = {
        "now_ms": MS_LUHN,
        "transit": {
            "sscc": SSCC_LUHN,
            "lines": [{"line_no": 1, "item": "5901234123457", "qty": "1.000"}],
            "created": {"at": MS_LUHN},
            "received": {"at": MS_LUHN},
        },
        "received": {"at": MS_LUHN},
    }
    msg = Reply(LANE, "c1", True, result)
    assert codec.decode(codec.encode(msg)) == msg
    moved = {"now": MS_LUHN}  # the same value in an undeclared field is a card number
    assert refused(wire(rep_map(moved))).field == "result.now"


def test_free_text_reasons_are_masked_both_ways() -> None:
    ack = codec.decode(codec.encode(Ack(LANE, 1, 0, None, f"entry quoted {PAN}")))
    assert isinstance(ack, Ack)
    assert ack.reason == "entry quoted ************1111"
    m = {"t": "ack", "store": "S1", "lane": "L1", "epoch": 1, "hwm": 0}
    got = codec.decode(wire({**m, "resend_from": None, "reason": f"x {PAN}"}))
    assert isinstance(got, Ack)
    assert got.reason == "x ************1111"
    rep = codec.decode(codec.encode(Reply(LANE, "c1", False, {}, f"no {PAN}")))
    assert isinstance(rep, Reply)
    assert rep.error == "no ************1111"


@pytest.mark.parametrize(
    ("m", "field"),
    [
        (
            {"t": "hello", "store": "S1", "lane": "L1", "epoch": 1, "last_seq": 0}
            | {"first_unacked": 1, "version": f"1.0 {PAN}", "sent_at": 0},
            "version",
        ),
        (req_map({}, corr=PAN), "corr"),
        (req_map({}, store="4111-1111-1111-1111"), "store"),
        (req_map({}, v=int(PAN)), "v"),
        (req_map({}, t=PAN), "t"),
        (req_map({}, **{PAN: 1}), None),
    ],
)
def test_every_string_of_a_message_is_screened(m: dict[str, Any], field: str | None) -> None:
    err = refused(wire(m))
    if field is not None:
        assert err.field == field


def test_batch_refusals_never_quote_the_value() -> None:
    base = {"t": "batch", "store": "S1", "lane": "L1", "epoch": 1, "first_seq": 1}
    base["prev_hash"] = b"\0" * 32
    for entry, field in (
        ([f"a{PAN}", "0190f3a4-7b2c-7def-8a01-23456789abcd", 1, b"", b"\1" * 32], "kind"),
        (["sale", PAN, 1, b"", b"\1" * 32], "txn_id"),
        (["sale", f"{PAN}-1111-1111-1111-111111111111", 1, b"", b"\1" * 32], "txn_id"),
        (["sale", "0190f3a4-7b2c-7def-8a01-23456789abcd", -int(PAN), b"", b"\1" * 32], "ts"),
    ):
        err = refused(wire({**base, "entries": [entry]}))
        assert err.field == f"entries[0].{field}"


def test_store_ids_are_screened() -> None:
    with pytest.raises(ProtocolError) as info:
        check_segment(PAN, "store")
    assert "card number" in info.value.reason
    with pytest.raises(ProtocolError) as info:
        check_segment(f"{PAN}/x", "store")
    assert PAN not in str(info.value)
    assert check_segment("S0001", "store") == "S0001"


def test_hello_from_a_lane_round_trips() -> None:
    msg = Hello(LANE, 1, 0, 1, "0.1.0", MS_LUHN)  # typed integer fields are not screened
    assert codec.decode(codec.encode(msg)) == msg


def test_long_reasons_are_cut_not_refused() -> None:
    """An ack must reach its lane whatever its reason says (a path 990 levels deep, say)."""
    long = "seq 1: " + "[0]" * 2000 + f" {PAN}"
    ack = codec.decode(codec.encode(Ack(LANE, 1, 1, None, long)))
    assert isinstance(ack, Ack)
    assert ack.reason is not None
    assert len(ack.reason) == 1024
    assert ack.reason.endswith("...")
    m = {"t": "ack", "store": "S1", "lane": "L1", "epoch": 1, "hwm": 1, "resend_from": None}
    got = codec.decode(wire({**m, "reason": long}))
    assert isinstance(got, Ack)
    assert got.hwm == 1


@given(st.uuids())
@settings(max_examples=300, deadline=None, database=None)
def test_a_uuid_corr_always_travels(u: uuid.UUID) -> None:
    """The lane's corr is a UUID (agent.replicator): a string of hex digits and dashes that,
    were it screened as text, would hold a Luhn-valid run now and then."""
    msg = Request(LANE, str(u), "transit_lookup", {})
    assert codec.decode(codec.encode(msg)) == msg
    rep = Reply(LANE, str(u), True, {})
    assert codec.decode(codec.encode(rep)) == rep


@pytest.mark.parametrize(
    "raw",
    [
        b"\xdd\xff\xff\xff\xff",  # an array header claiming 2**32 items
        b"\xdf\xff\xff\xff\xff",  # a map the same
        b"\x91" * 1025 + b"\xc0",  # past msgpack's own 1024-level stack
    ],
)
def test_the_decoder_bounds_counts_and_nesting_before_anything_walks(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        codec.unpack(raw)
    assert info.value.field == "payload"
    assert codec.unpack(b"\x91" * 1000 + b"\xc0") is not None  # decoded, walked only iteratively
