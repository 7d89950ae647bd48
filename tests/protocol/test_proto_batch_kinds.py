"""JournalBatch.from_map remembers the entry kinds it found valid (protocol.messages): what it
refuses, and how it names the field, does not depend on what it decoded before."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from protocol import codec, messages
from protocol.errors import ProtocolError
from protocol.messages import Entry, JournalBatch

TXN = "0190f3a4-7b2c-7def-8a01-23456789abcd"
H = b"\1" * 32


def batch(*kinds: Any) -> bytes:
    return msgpack.packb(
        {
            "v": 1,
            "t": "batch",
            "store": "S001",
            "lane": "L01",
            "epoch": 7,
            "first_seq": 5,
            "prev_hash": b"\0" * 32,
            "entries": [[k, TXN, i, b"body", H] for i, k in enumerate(kinds)],
        },
        use_bin_type=True,
    )


def refused(buf: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        codec.decode(buf)
    return info.value


def test_entries_as_before_whichever_kinds_were_seen() -> None:
    for _ in range(2):  # the second time every kind is a remembered one
        msg = codec.decode(batch("sale", "sale_refund", "sale"))
        assert isinstance(msg, JournalBatch)
        assert msg.entries == [
            Entry(5, "sale", TXN, 0, b"body", H),
            Entry(6, "sale_refund", TXN, 1, b"body", H),
            Entry(7, "sale", TXN, 2, b"body", H),
        ]
        assert all(type(e) is Entry for e in msg.entries)
        assert "sale_refund" in messages._KINDS_SEEN


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("Sale", "must match"),
        ("sale-1", "must match"),
        ("", "must match"),
        (7, "must match"),
        ("x4111111111111111", "card number"),  # a kind-shaped card number: refused, unquoted
    ],
)
def test_a_bad_kind_is_refused_every_time_after_good_ones(kind: Any, words: str) -> None:
    for _ in range(2):
        err = refused(batch("sale", "sale", kind))
        assert (err.field, words in err.reason) == ("entries[2].kind", True)
        assert "4111111111111111" not in str(err)
    assert kind not in messages._KINDS_SEEN


def test_the_memory_of_kinds_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(messages, "_KINDS_SEEN", set())
    monkeypatch.setattr(messages, "_KINDS_SEEN_MAX", 3)
    kinds = [f"kind_{i}" for i in range(10)]
    msg = codec.decode(batch(*kinds))
    assert isinstance(msg, JournalBatch)
    assert [e.kind for e in msg.entries] == kinds  # still accepted past the bound
    assert sorted(messages._KINDS_SEEN) == ["kind_0", "kind_1", "kind_2"]
    assert refused(batch("kind_9", "Bad")).field == "entries[1].kind"
