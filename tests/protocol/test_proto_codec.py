"""The strict msgpack codec: round trips, fuzzing, and every refusal with its reason and field."""

from __future__ import annotations

import decimal
from typing import Any

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from protocol import codec
from protocol.errors import ProtocolError
from protocol.identity import LaneId
from protocol.messages import (
    MAX_BATCH_ENTRIES,
    MAX_ENTRY_BODY,
    PROTOCOL_VERSION,
    U63,
    Ack,
    Entry,
    Hello,
    JournalBatch,
    Message,
    Reply,
    Request,
    Status,
)
from tests.protocol.proto_strategies import (
    FAST,
    acks,
    batches,
    hellos,
    messages,
    plain,
    replies,
    requests,
    statuses,
)

LANE = LaneId("S001", "L01")
TXN = "0190f3a4-7b2c-7def-8a01-23456789abcd"


def hello_map(**over: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "v": 1,
        "t": "hello",
        "store": "S001",
        "lane": "L01",
        "epoch": 7,
        "last_seq": 3,
        "first_unacked": 2,
        "version": "0.1.0",
        "sent_at": 1,
    }
    m.update(over)
    return m


def batch_map(**over: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "v": 1,
        "t": "batch",
        "store": "S001",
        "lane": "L01",
        "epoch": 7,
        "first_seq": 1,
        "prev_hash": b"\0" * 32,
        "entries": [["sale", TXN, 1, b"body", b"\1" * 32]],
    }
    m.update(over)
    return m


def request_map(args: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "t": "req",
        "store": "S001",
        "lane": "L01",
        "corr": "c-1",
        "op": "transit_receive",
        "args": args,
    }


def refusal(m: Any, **kw: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        codec.decode(msgpack.packb(m, use_bin_type=True), **kw)
    return info.value


def decodes_or_refuses(buf: bytes) -> Message | None:
    """codec.decode may only ever return a Message or raise ProtocolError."""
    try:
        msg = codec.decode(buf)
    except ProtocolError as exc:
        reason = exc.reason
    else:
        assert isinstance(msg, Hello | Ack | Status | Request | Reply | JournalBatch)
        return msg
    assert reason  # a refusal always says why
    return None


# --- round trips ----------------------------------------------------------------------------


@FAST
@given(batches())
def test_batch_round_trip(batch: JournalBatch) -> None:
    got = codec.decode(codec.encode(batch))
    assert got == batch
    assert got.first_seq == batch.entries[0].seq
    assert [e.seq for e in got.entries] == list(range(got.first_seq, got.last_seq + 1))


@FAST
@given(hellos)
def test_hello_round_trip(msg: Hello) -> None:
    assert codec.decode(codec.encode(msg)) == msg


@FAST
@given(acks)
def test_ack_round_trip(msg: Ack) -> None:
    assert codec.decode(codec.encode(msg)) == msg


def test_ack_with_and_without_resend_from() -> None:
    plain_ack = Ack(LANE, 9, 41)
    resend = Ack(LANE, 9, 41, resend_from=42, reason="gap: expected seq 42")
    assert codec.decode(codec.encode(plain_ack)) == plain_ack
    got = codec.decode(codec.encode(resend))
    assert isinstance(got, Ack)
    assert (got.hwm, got.resend_from, got.reason) == (41, 42, "gap: expected seq 42")


@FAST
@given(statuses)
def test_status_round_trip(msg: Status) -> None:
    assert codec.decode(codec.encode(msg)) == msg


@FAST
@given(requests)
def test_request_round_trip(msg: Request) -> None:
    assert codec.decode(codec.encode(msg)) == msg


@FAST
@given(replies)
def test_reply_round_trip(msg: Reply) -> None:
    assert codec.decode(codec.encode(msg)) == msg


def test_reply_nested_args_round_trip() -> None:
    result = {
        "transit": {"sscc": "340063810000000063", "lines": [{"item": "5901234123457", "qty": 3}]},
        "flags": [True, False, None],
        "blob": b"\x00\xff",
        "neg": -(1 << 63),
        "big": U63,
    }
    msg = Reply(LANE, "corr:1", True, result)
    got = codec.decode(codec.encode(msg))
    assert got == msg
    assert isinstance(got, Reply)
    assert got.result["transit"]["lines"][0]["qty"] == 3


def test_encode_stamps_version_and_type() -> None:
    raw = msgpack.unpackb(codec.encode(Hello(LANE, 1, 0, 1, "x", 0)))
    assert raw["v"] == 1  # what a v1 peer can read is sent as v1 (messages.wire_version)
    assert raw["t"] == "hello"
    raw = msgpack.unpackb(codec.encode(Hello(LANE, 1, 0, 1, "x", 0, protocols=(1, 2))))
    assert raw["v"] == PROTOCOL_VERSION == 2  # a v2 field: stamped v2


# --- nothing but ProtocolError, whatever arrives --------------------------------------------


@FAST
@given(st.binary(max_size=300))
@example(b"")
@example(b"\xc1")  # never-used msgpack byte
@example(b"\xdd\xff\xff\xff\xff")  # array32 claiming 4 billion items
@example(b"\xd6\xff\x00")  # truncated timestamp
@example(b"\x91" * 5000)  # deep nesting
def test_random_bytes_only_protocol_error(buf: bytes) -> None:
    decodes_or_refuses(buf)


@FAST
@given(plain)
def test_random_msgpack_values_only_protocol_error(value: Any) -> None:
    assert decodes_or_refuses(msgpack.packb(value, use_bin_type=True)) is None


@FAST
@given(st.dictionaries(st.sampled_from([*sorted(hello_map()), "x"]), plain, max_size=9))
def test_random_maps_with_real_keys_only_protocol_error(m: dict[str, Any]) -> None:
    m.setdefault("v", 1)
    decodes_or_refuses(msgpack.packb(m, use_bin_type=True))


@FAST
@given(messages)
def test_every_truncation_is_refused(msg: Message) -> None:
    buf = codec.encode(msg)
    for i in range(len(buf)):
        with pytest.raises(ProtocolError) as info:
            codec.decode(buf[:i])
        assert info.value.field == "payload"


@FAST
@given(messages, st.data())
def test_flipped_byte_decodes_or_refuses(msg: Message, data: st.DataObject) -> None:
    buf = bytearray(codec.encode(msg))
    i = data.draw(st.integers(0, len(buf) - 1))
    buf[i] ^= data.draw(st.integers(1, 255))
    decodes_or_refuses(bytes(buf))


@FAST
@given(messages, st.binary(min_size=1, max_size=40))
def test_garbage_appended_is_refused(msg: Message, garbage: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        codec.decode(codec.encode(msg) + garbage)
    assert "trailing bytes" in info.value.reason
    assert info.value.field == "payload"


# --- specific refusals ----------------------------------------------------------------------


def test_oversized_payload() -> None:
    buf = codec.encode(Hello(LANE, 1, 0, 1, "x" * 900, 0))
    with pytest.raises(ProtocolError) as info:
        codec.decode(buf, max_size=len(buf) - 1)
    assert info.value.field == "payload"
    assert f"{len(buf)} bytes exceeds the {len(buf) - 1} byte limit" in info.value.reason
    assert codec.decode(buf, max_size=len(buf)).TYPE == "hello"  # exactly at the limit is fine
    with pytest.raises(ProtocolError, match="exceeds"):
        codec.decode(b"\0" * (codec.DEFAULT_MAX_MESSAGE + 1))


def test_int_map_key_refused() -> None:
    m = hello_map()
    m[1] = 2
    err = refusal(m)
    assert err.field == "payload"
    assert "map key" in err.reason


def test_top_level_bytes_key_refused() -> None:
    m = hello_map()
    del m["sent_at"]
    m[b"sent_at"] = 1
    err = refusal(m)
    assert err.field == "payload"
    assert "a map key is bytes, not a string" in err.reason


def test_bytes_key_nested_in_args_refused() -> None:
    err = refusal(request_map({"outer": [{"ok": 1, b"bad": 2}]}))
    assert err.field == "args.outer[0] (a map key)"
    assert "map keys must be strings" in err.reason


def test_int_key_nested_in_args_refused() -> None:
    err = refusal(request_map({"outer": {7: "x"}}))
    assert err.field == "payload"
    assert "map key" in err.reason


def test_extension_type_refused() -> None:
    err = refusal(hello_map(version=msgpack.ExtType(5, b"abc")))
    assert err.field == "payload"
    assert "extension type 5" in err.reason


def test_msgpack_timestamp_refused() -> None:
    err = refusal(hello_map(sent_at=msgpack.Timestamp(1_700_000_000, 0)))
    assert err.field == "sent_at"
    assert "Timestamp" in err.reason
    err = refusal(request_map({"when": [msgpack.Timestamp(1, 0)]}))
    assert err.field == "args.when[0]"
    assert "Timestamp values are not allowed" in err.reason


@pytest.mark.parametrize("v", [3, 0, None, "1", 1.0, True])  # 2 is spoken since issue 18
def test_unknown_version_refused(v: Any) -> None:
    m = hello_map(v=v)
    if v is None:
        del m["v"]
    err = refusal(m)
    assert err.field == "v"
    assert "unsupported protocol version" in err.reason


@pytest.mark.parametrize("t", ["nope", None, 5, "Hello", "ack "])
def test_unknown_type_refused(t: Any) -> None:
    err = refusal(hello_map(t=t))
    assert err.field == "t"
    assert "unknown message type" in err.reason


def test_unknown_field_refused() -> None:
    err = refusal(hello_map(zzz=1, colour="red"))
    assert err.field == "colour"
    assert "unknown field(s) ['colour', 'zzz'] for hello" in err.reason


def test_not_a_map_refused() -> None:
    err = refusal([1, 2, 3])
    assert err.field == "payload"
    assert "must be a map, got list" in err.reason


@pytest.mark.parametrize(
    ("over", "field", "words"),
    [
        ({"epoch": "7"}, "epoch", "must be an integer, got str"),
        ({"epoch": 7.0}, "epoch", "must be an integer, got float"),
        ({"epoch": 0}, "epoch", "outside 1.."),
        ({"epoch": 1 << 63}, "epoch", "outside"),
        ({"prev_hash": b"\0" * 31}, "prev_hash", "must be 32 bytes, got 31"),
        ({"prev_hash": "00" * 32}, "prev_hash", "must be binary"),
        ({"entries": "x"}, "entries", "non-empty array"),
        ({"entries": {"a": 1}}, "entries", "non-empty array"),
        ({"entries": []}, "entries", "non-empty array"),
        ({"entries": [["sale", TXN, 1, b""]]}, "entries[0]", "[kind, txn_id, ts, body, hash]"),
        ({"entries": [["Sale", TXN, 1, b"", b"\1" * 32]]}, "entries[0].kind", "must match"),
        ({"entries": [["sale", TXN.upper(), 1, b"", b"\1" * 32]]}, "entries[0].txn_id", "UUID"),
        ({"entries": [["sale", TXN, -1, b"", b"\1" * 32]]}, "entries[0].ts", "milliseconds"),
        ({"entries": [["sale", TXN, 1.5, b"", b"\1" * 32]]}, "entries[0].ts", "milliseconds"),
        ({"entries": [["sale", TXN, 1, "txt", b"\1" * 32]]}, "entries[0].body", "binary"),
        (
            {"entries": [["sale", TXN, 1, b"x" * (MAX_ENTRY_BODY + 1), b"\1" * 32]]},
            "entries[0].body",
            "64 KiB",
        ),
        ({"entries": [["sale", TXN, 1, b"", b"\1" * 33]]}, "entries[0].hash", "32-byte hash"),
        ({"first_seq": U63}, None, None),  # one entry at the very top is fine
        ({"first_seq": 0}, "first_seq", "outside 1.."),
        ({"store": "S/1"}, "store", "A-Z a-z 0-9"),
        ({"lane": "+"}, "lane", "A-Z a-z 0-9"),
        ({"lane": 5}, "lane", "must be a string"),
    ],
)
def test_batch_schema_violations(over: dict[str, Any], field: str | None, words: str) -> None:
    m = batch_map(**over)
    if field is None:
        assert isinstance(codec.decode(msgpack.packb(m, use_bin_type=True)), JournalBatch)
        return
    err = refusal(m)
    assert err.field == field
    assert words in err.reason


def test_batch_seq_overflow_refused() -> None:
    entry = ["sale", TXN, 1, b"", b"\1" * 32]
    err = refusal(batch_map(first_seq=U63, entries=[entry, entry]))
    assert err.field == "first_seq"


def test_too_many_entries_refused() -> None:
    entry = ["sale", TXN, 1, b"", b"\1" * 32]
    err = refusal(batch_map(entries=[entry] * (MAX_BATCH_ENTRIES + 1)))
    assert err.field == "entries"
    assert str(MAX_BATCH_ENTRIES) in err.reason


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"qty": 1.5}, "args.qty"),
        ({"lines": [{"qty": 1}, {"qty": 0.0}]}, "args.lines[1].qty"),
        ({"a": [[1, [2, 3.25]]]}, "args.a[0][1][1]"),
    ],
)
def test_float_anywhere_in_request_args_refused(args: dict[str, Any], field: str) -> None:
    err = refusal(request_map(args))
    assert err.field == field
    assert "fractional numbers are not allowed" in err.reason


def test_request_args_must_be_a_map() -> None:
    err = refusal(request_map([1, 2]))
    assert err.field == "args"
    assert "must be a map, got list" in err.reason


def test_request_args_too_deep_refused() -> None:
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    err = refusal(request_map({"d": deep}))
    assert "deeper than 32" in err.reason


ACK = {"v": 1, "t": "ack", "store": "S001", "lane": "L01", "epoch": 7, "hwm": 3}
STATUS = {
    "v": 1,
    "t": "status",
    "store": "S001",
    "lane": "L01",
    "state": "online",
    "version": "0.1.0",
    "backlog": 0,
    "at": 0,
}
REPLY = {
    "v": 1,
    "t": "rep",
    "store": "S001",
    "lane": "L01",
    "corr": "c-1",
    "ok": True,
    "result": {},
}


@pytest.mark.parametrize(
    ("m", "field", "words"),
    [
        ({**ACK, "resend_from": 0}, "resend_from", "outside 1.."),
        ({**ACK, "reason": 5}, "reason", "must be a string"),
        ({**ACK, "hwm": -1}, "hwm", "outside 0.."),
        ({**STATUS, "state": "away"}, "state", "must be online or offline"),
        ({**STATUS, "backlog": None}, "backlog", "must be an integer"),
        ({**request_map({}), "corr": "has space"}, "corr", "does not match"),
        ({**request_map({}), "op": "Bad-Op"}, "op", "does not match"),
        ({**REPLY, "ok": 1}, "ok", "true or false"),
        ({**REPLY, "result": {"x": 0.5}}, "result.x", "fractional"),
        (hello_map(version="x" * 1025), "version", "longer than 1024"),
        (hello_map(first_unacked=0), "first_unacked", "outside 1.."),
    ],
)
def test_other_schema_violations(m: dict[str, Any], field: str, words: str) -> None:
    err = refusal(m)
    assert err.field == field
    assert words in err.reason


@pytest.mark.parametrize("m", [ACK, STATUS, REPLY, request_map({}), hello_map(), batch_map()])
def test_fixture_maps_are_valid(m: dict[str, Any]) -> None:
    decodes = codec.decode(msgpack.packb(m, use_bin_type=True))
    assert m["t"] == decodes.TYPE


def test_decimal_never_encodes_silently() -> None:
    # A Request carrying a Decimal cannot even be made: the screen refuses it by field.
    with pytest.raises(ProtocolError) as info:
        codec.encode(Request(LANE, "c", "op", {"x": decimal.Decimal("1.5")}))
    assert info.value.field == "args.x"


def test_entry_seq_follows_first_seq() -> None:
    e = Entry(5, "sale", TXN, 1, b"b", b"\1" * 32)
    batch = JournalBatch(LANE, 3, b"\0" * 32, [e, e._replace(seq=6)])
    wire = msgpack.unpackb(codec.encode(batch))
    assert wire["first_seq"] == 5
    assert all(len(x) == 5 for x in wire["entries"])  # seq is not repeated per entry
