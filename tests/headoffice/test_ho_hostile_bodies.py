"""Property: whatever bodies a store puts inside a valid chain, head office stays up, every
other lane's entries are applied once, and every entry it cannot apply is held with its reason.

Hypothesis builds real chained batches (tests/headoffice/ho_helpers.LaneSim, protocol.chain)
whose entries carry arbitrary bodies of every kind head office projects (transit_inventory,
transit_inventory_accept, stock_adjustment) and of a sale: documents with fields replaced by
any msgpack value (lists where strings belong, "Infinity", "1e30", huge integers, floats, card
numbers, nesting), any msgpack value at all, and bytes that are not msgpack. They go through
GroupApplier.apply_group in the same groups as honest lanes' batches and hellos, on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.identity import Channel, LaneId
from protocol.messages import Ack, Hello
from tests.headoffice.ho_helpers import LaneSim, journal_msg, sale_doc, topic, writer_ingest
from tests.pgutil import Backend

PAN = "4111111111111111"
SSCC = "357035380100000010"
KINDS = ["transit_inventory", "transit_inventory_accept", "stock_adjustment", "sale"]
_epochs = itertools.count(1_000_000)

tricky_text = st.sampled_from(
    ["Infinity", "-Infinity", "NaN", "1e30", "1.5", "1.000", "-0.000", "999999999.999",
     "1234567890.000", SSCC, PAN, "S002", "", " ", "../x", "P1000"]
)  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.binary(max_size=30)
    | tricky_text
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


def base(kind: str) -> dict[str, Any]:
    line = {"line_no": 1, "item": "P1000", "qty": "1.000"}
    if kind == "transit_inventory":
        return {
            "kind": kind,
            "register_no": "T10001",
            "transit_no": "T10001",
            "sscc": SSCC,
            "source_store": "S666",
            "dest_store": "S002",
            "by": {"type": "staff", "id": "E7"},
            "currency": "EUR",
            "lines": [line],
        }
    if kind == "transit_inventory_accept":
        return {"kind": kind, "sscc": SSCC, "source_store": "S001", "ext": {"received_at": 5}}
    if kind == "stock_adjustment":
        return {"kind": kind, "reason": "COUNT", "lines": [line]}
    return sale_doc(1)


FIELDS = ["register_no", "transit_no", "sscc", "source_store", "dest_store", "by", "currency",
          "staff", "lines", "ext", "kind"]  # fmt: skip
LINE_FIELDS = ["line_no", "item", "qty", "description"]


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(KINDS))
    how = draw(st.integers(0, 9))
    if how == 0:
        return kind, draw(st.binary(max_size=80))
    if how == 1:
        return kind, msgpack.packb(draw(values), use_bin_type=True)
    doc = base(kind)
    doc.update(draw(st.dictionaries(st.sampled_from(FIELDS), values, max_size=3)))
    if draw(st.booleans()):
        lines = []
        for _ in range(draw(st.integers(0, 3))):
            line: dict[str, Any] = {"line_no": len(lines) + 1, "item": "P1", "qty": "2.000"}
            line.update(draw(st.dictionaries(st.sampled_from(LINE_FIELDS), values, max_size=2)))
            lines.append(line)
        doc["lines"] = lines
    return kind, msgpack.packb(doc, use_bin_type=True)


HOSTILE = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@HOSTILE
@given(
    bad=st.lists(bodies(), min_size=1, max_size=6), cut=st.integers(1, 7), one_group=st.booleans()
)
def test_hostile_bodies_in_valid_chains(
    backend: Backend, bad: list[tuple[str, bytes]], cut: int, one_group: bool
) -> None:
    # Every example on lanes of its own: one store database serves all examples, and a lane
    # keeps at most ingest.max_epochs_per_lane epochs.
    epoch = next(_epochs)
    lane = f"L{epoch}"
    honest = [LaneSim(LaneId(f"S10{n}", lane), epoch) for n in range(2)]
    for h in honest:
        h.add_many(5)
    hostile = LaneSim(LaneId("S666", lane), epoch)
    hostile.add()
    for kind, body in bad:
        hostile.add(kind=kind, body=body, txn_id=str(uuid.uuid4()))
    hostile.add()
    n = len(hostile.entries)
    cut = min(cut, n)
    messages = [
        journal_msg(honest[0], 1, 3),
        journal_msg(hostile, 1, cut),
        (
            topic(honest[1].lane, Channel.HELLO),
            codec.encode(Hello(honest[1].lane, honest[1].epoch, 5, 1, "1", 0)),
        ),
        journal_msg(honest[1], 1, 5),
        journal_msg(hostile, cut, n),  # overlaps the first part by one entry
        journal_msg(honest[0], 4, 5),
    ]
    groups = [messages] if one_group else [messages[:3], messages[3:]]
    with writer_ingest(backend) as ing:
        acks: dict[tuple[str, int], int] = {}
        for g in groups:
            for a in ing.applier.apply_group(g):  # must not raise: ingest stays up
                if isinstance(a, Ack):
                    assert a.resend_from is None, a
                    acks[(a.lane.store, a.epoch)] = a.hwm
        assert acks == {("S100", epoch): 5, ("S101", epoch): 5, ("S666", epoch): n}
        # still alive: an honest lane's next entry applies
        honest[0].add()
        assert ing.applier.apply_group([journal_msg(honest[0], 6, 6)]) == [
            Ack(honest[0].lane, honest[0].epoch, 6)
        ]
    for h in honest:
        rows = backend.query(
            "SELECT seq, applied FROM journal WHERE store = ? AND epoch = ? ORDER BY seq",
            (h.lane.store, epoch),
        )
        assert rows == [(e.seq, 1) for e in h.entries]
        ids = [e.txn_id for e in h.entries]
        marks = ",".join("?" * len(ids))
        assert backend.query(
            f"SELECT count(*) FROM documents WHERE txn_id IN ({marks})",
            tuple(ids),
        ) == [(len(ids),)]
        assert backend.query(
            "SELECT count(*) FROM held WHERE store = ? AND epoch = ?", (h.lane.store, epoch)
        ) == [(0,)]
    applied = {
        r[0]
        for r in backend.query(
            "SELECT seq FROM journal WHERE store = 'S666' AND epoch = ?", (epoch,)
        )
    }
    held = backend.query(
        "SELECT seq, code, reason, body, body_masked FROM held WHERE store = 'S666' AND epoch = ?",
        (epoch,),
    )
    held_seqs = {r[0] for r in held}
    # every entry of the hostile lane is applied or held, never both, never neither
    assert applied | held_seqs == set(range(1, n + 1))
    assert not applied & held_seqs
    assert {1, n} <= applied  # its honest first and last entries
    for seq, code, reason, body, masked in held:
        assert code in ("card_number", "invalid_body", "txn_conflict", "apply_failed")
        assert reason.startswith(f"entry seq {seq}")
        assert PAN not in reason
        kept = bytes(masked if body is None else body)
        assert PAN.encode() not in kept
    assert backend.query("SELECT hwm FROM lanes WHERE store = 'S666' AND epoch = ?", (epoch,)) == [
        (n,)
    ]
