"""Hypothesis strategies for every lanesync message type (valid by construction)."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from protocol.chain import HASH_LEN
from protocol.identity import SEGMENT_RE, LaneId
from protocol.messages import (
    CORR_RE,
    KIND_RE,
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
from protocol.pan import contains_pan, is_pan_int

# Fast and reproducible: no example database written into the work tree.
FAST = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

I64_MIN = -(1 << 63)


def no_pan_text(s: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Valid messages carry no card number (protocol.pan): such draws are not valid ones."""
    return s.filter(lambda t: not contains_pan(t))


def no_pan_int(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.integers(lo, hi).filter(lambda i: not is_pan_int(i))


segments = no_pan_text(st.from_regex(SEGMENT_RE, fullmatch=True))
lanes = st.builds(LaneId, segments, segments)
kinds = no_pan_text(st.from_regex(KIND_RE, fullmatch=True))
txn_ids = st.uuids().map(str)
u63 = st.integers(0, U63)
epochs = st.integers(1, U63)
# text is valid Unicode: no lone surrogates (they cannot be encoded)
short_text = no_pan_text(st.text(st.characters(exclude_categories=["Cs"]), max_size=40))
hashes = st.binary(min_size=HASH_LEN, max_size=HASH_LEN)

# What protocol.screen passes: str-keyed maps, lists, str, int (signed 64-bit), bool, None,
# bytes, with no card number and no lone surrogate anywhere.
_text = no_pan_text(st.text(st.characters(exclude_categories=["Cs"]), max_size=20))
plain: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | no_pan_int(I64_MIN, U63)
    | _text
    | st.binary(max_size=20).filter(lambda b: not contains_pan(b.decode("latin-1"))),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=20,
)
plain_maps = st.dictionaries(_text, plain, max_size=5)


@st.composite
def batches(draw: st.DrawFn, max_entries: int = 8) -> JournalBatch:
    n = draw(st.integers(1, max_entries))
    first = draw(st.integers(1, U63 - n + 1))
    entries = [
        Entry(
            first + i,
            draw(kinds),
            draw(txn_ids),
            draw(u63),
            draw(st.binary(max_size=64)),
            draw(hashes),
        )
        for i in range(n)
    ]
    return JournalBatch(draw(lanes), draw(epochs), draw(hashes), entries)


hellos = st.builds(Hello, lanes, epochs, u63, st.integers(1, U63), short_text, u63)
acks = st.builds(Ack, lanes, epochs, u63, st.none() | st.integers(1, U63), st.none() | short_text)
statuses = st.builds(Status, lanes, st.sampled_from(["online", "offline"]), short_text, u63, u63)
requests = st.builds(Request, lanes, st.from_regex(CORR_RE, fullmatch=True), kinds, plain_maps)
replies = st.builds(
    Reply,
    lanes,
    st.from_regex(CORR_RE, fullmatch=True),
    st.booleans(),
    plain_maps,
    st.none() | short_text,
)
messages: st.SearchStrategy[Message] = st.one_of(
    batches(), hellos, acks, statuses, requests, replies
)


def new_txn_id() -> str:
    return str(uuid.uuid4())
