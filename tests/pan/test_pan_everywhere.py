"""Issue 12, must-show 1: card numbers in every field reach no journal, wire, database or log.

Hypothesis makes card numbers (13, 15, 16 and 19 digits; plain, spaced, dashed, in any grouping,
inside text, glued to letters, in fullwidth digits, as integers) and puts each in a field of
a document of every kind, of an open sale's requests, of a transit's details and of the transit
receive requests, through the real local API of two real agents that replicate through a real
Mosquitto into a real head office on SQLite. Every such request must be refused with a 4xx that
names the field and does not carry the number. Honest traffic of every kind then goes the same
way (so the pipeline is shown to work), and afterwards no number that was sent is in the
journal files, in any MQTT payload (a tap subscribed to `#`), in head office's database files
or in any log line, in any form.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from protocol.identity import Channel
from tests.pan.pan_cases import (
    GTIN13_LUHN,
    Card,
    Place,
    cards,
    declared_exempt,
    digits_view,
    documents,
    integer_encodings,
    places,
    problem_text,
    put,
)
from tests.pan.pan_stack import S1, S2, PanStack

DOCS = documents()
OPEN = {"kind": "sale", "customer": "C1000", "staff": "E1", "currency": "EUR", "ext": {"a": "b"}}
LINE = {
    "item": "P1000",
    "qty": "1.000",
    "unit_price": 1899,
    "tax_code": "VAT_STD",
    "description": "Beans",
}
TRANSIT_LINE = {"item": "P1000", "qty": "2.000", "description": "Beans"}
PAYMENT = {
    "tender": "card",
    "amount": 100,
    "token": "tok_AbCdEfGhIj",
    "scheme": "visa",
    "last4": "1111",
    "reference": "R1",
    "ext": {"a": "b"},
}
DETAILS = {"dest_store": "S2", "by": {"type": "staff", "id": "E1", "name": "Ann"}}
COMPLETE = {"original_txn_id": "0190f3a4-7b2c-7def-8a01-23456789abcd", "return_type": "DAMAGED"}
RECEIVE = {"transit_no": "T10001", "source_store": "S1"}
# (lane, method, URL with {sale}/{transit}/{session} filled in, the valid body to spoil)
REQUESTS: dict[str, tuple[Any, str, str, dict[str, Any]]] = {
    "open sale": (S1, "POST", "/v1/sales", OPEN),
    "add line": (S1, "POST", "/v1/sales/{sale}/lines", LINE),
    "add transit line": (S1, "POST", "/v1/sales/{transit}/lines", TRANSIT_LINE),
    "add payment": (S1, "POST", "/v1/sales/{sale}/payments", PAYMENT),
    "set mode": (S1, "POST", "/v1/sales/{sale}/mode", {"mode": 8}),
    "complete": (S1, "POST", "/v1/sales/{sale}/complete", COMPLETE),
    "transit details": (S1, "PUT", "/v1/sales/{transit}/transit", DETAILS),
    "transit payment": (S1, "POST", "/v1/sales/{transit}/payments", {"transit": DETAILS}),
    "transit receive": (S2, "POST", "/v1/transit/receive", RECEIVE),
    "transit receive sscc": (S2, "POST", "/v1/transit/receive", {"sscc": "x"}),
    "transit accept": (S2, "POST", "/v1/transit/receive/{session}/accept", {"staff": "E2"}),
}
URL_IDS = {  # a card number where an id goes in the URL
    "sale id": (S1, "POST", "/v1/sales/{card}/lines", LINE),
    "receive session id": (S2, "POST", "/v1/transit/receive/{card}/accept", {}),
}

SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class Probe:
    """Sends spoiled requests and checks each refusal; remembers every card number sent."""

    def __init__(self, st_: PanStack, ids: dict[str, str]) -> None:
        self.stack, self.ids = st_, ids
        self.sent: list[Card] = []

    def refused(self, lane: Any, method: str, url: str, body: Any, field: str, card: Card) -> None:
        self.sent.append(card)
        status, problem = self.stack.call(lane, method, url.format(**self.ids), body)
        what = f"{method} {url} {card.how} {card.form!r}: {status} {problem}"
        assert 400 <= status < 500, what
        assert isinstance(problem, dict), what
        assert problem.get("field") == field, what
        assert card.digits not in digits_view(problem_text(problem).encode()), what


def _doc_case(data: st.DataObject) -> tuple[str, Place, Card]:
    kind = data.draw(st.sampled_from(sorted(DOCS)))
    extra = [Place(("txn_id",)), Place(("sscc",))]
    place = data.draw(st.sampled_from([*places(DOCS[kind]), *extra]))
    card = data.draw(cards())
    assume(not declared_exempt(kind, place, card))
    return kind, place, card


def run_probes(st_: PanStack, ids: dict[str, str], examples: int) -> Probe:
    probe = Probe(st_, ids)

    @settings(SETTINGS, max_examples=examples)
    @given(st.data())
    def every_document_field(data: st.DataObject) -> None:
        kind, place, card = _doc_case(data)
        doc = put(DOCS[kind], place, card.form)
        probe.refused(S1, "POST", "/v1/documents", doc, place.field(document=True), card)

    @settings(SETTINGS, max_examples=max(examples * 2 // 5, 20))
    @given(st.data())
    def every_request_field(data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(REQUESTS)))
        lane, method, url, base = REQUESTS[name]
        place = data.draw(st.sampled_from(list(places(base))))
        card = data.draw(cards())
        assume(not declared_exempt(None, place, card))
        probe.refused(lane, method, url, put(base, place, card.form), place.field(), card)

    @settings(SETTINGS, max_examples=max(examples // 10, 10))
    @given(st.sampled_from(sorted(URL_IDS)), cards())
    def ids_in_urls(name: str, card: Card) -> None:
        lane, method, url, body = URL_IDS[name]
        path = url.replace("{card}", urllib.parse.quote(str(card.form), safe=""))
        probe.refused(lane, method, path, body, "id", card)

    every_document_field()
    every_request_field()
    ids_in_urls()
    return probe


def ok(status_body: tuple[int, Any], *statuses: int) -> Any:
    status, body = status_body
    assert status in (statuses or (200, 201)), (status, body)
    return body


def setup_state(s: PanStack) -> dict[str, str]:
    """An open sale and an open transit on S1, and a transit S1 -> S2 head office holds, with
    a receive session open for it on S2: what the probes spoil requests against."""
    sale_id = ok(s.call(S1, "POST", "/v1/sales", OPEN))["id"]
    transit_id = ok(s.call(S1, "POST", "/v1/sales", {"mode": 8}))["id"]
    for kind, doc in DOCS.items():  # every base document is valid as it stands
        assert ok(s.call(S1, "POST", "/v1/documents/check", doc))["valid"], kind
    parcel = ok(s.call(S1, "POST", "/v1/documents", DOCS["transit_inventory"]))
    s.wait_drained()
    session = ok(s.call(S2, "POST", "/v1/transit/receive", {"sscc": parcel["sscc"]}))
    return {"sale": sale_id, "transit": transit_id, "session": session["id"]}


def honest_traffic(s: PanStack, ids: dict[str, str]) -> None:
    """Every kind and every request path once, valid: they must get through."""
    for kind, doc in DOCS.items():
        if kind not in ("transit_inventory_accept", "transit_inventory"):
            ok(s.call(S1, "POST", "/v1/documents", doc))
    ok(s.call(S1, "POST", f"/v1/sales/{ids['sale']}/lines", {**LINE, "item": GTIN13_LUHN}))
    paid = ok(s.call(S1, "POST", f"/v1/sales/{ids['sale']}/payments", {**PAYMENT, "amount": 1899}))
    assert paid["completed"] is True
    ok(s.call(S1, "POST", f"/v1/sales/{ids['transit']}/lines", TRANSIT_LINE))
    ok(s.call(S1, "PUT", f"/v1/sales/{ids['transit']}/transit", DETAILS))
    done = ok(s.call(S1, "POST", f"/v1/sales/{ids['transit']}/payments", {"tender": "cash"}))
    assert done["completed"] is True
    url = f"/v1/transit/receive/{ids['session']}/accept"
    accepted = ok(s.call(S2, "POST", url, {"staff": "E2"}))
    assert accepted["accepted"] is True
    s.wait_drained()


def leaks(root: Path, s: PanStack, cards_sent: list[Card]) -> list[str]:
    """Where any card number sent is kept, in any form: the problem list, empty if none."""
    blobs: list[tuple[str, bytes]] = [
        (str(p.relative_to(root)), p.read_bytes()) for p in s.kept_files(root)
    ]
    blobs += [(f"mqtt {t}", t.encode() + b"\0" + payload) for t, payload in s.tap.payloads()]
    views = [(name, data, digits_view(data)) for name, data in blobs]
    found = []
    for card in {c.digits: c for c in cards_sent}.values():
        form = str(card.form).encode()
        ints = integer_encodings(card.digits) if isinstance(card.form, int) else []
        for name, data, digits in views:
            if card.digits in digits or form in data or any(i in data for i in ints):
                found.append(f"{card.digits} ({card.how}) in {name}")
    return found


def card_numbers_everywhere(tmp_path: Path, broker_factory: Any, examples: int) -> None:
    broker = broker_factory()
    s = PanStack(tmp_path / "stack", broker.port)
    try:
        s.start()
        ids = setup_state(s)
        probe = run_probes(s, ids, examples)
        honest_traffic(s, ids)
    finally:
        s.close()
    assert len(probe.sent) >= examples

    # The pipeline worked, and what the scan looks through holds what the lanes sent: journal
    # batches of both lanes and a request and a reply on the wire, the declared GTIN that
    # passes Luhn in the journal and in head office's database.
    topics = [t for t, _ in s.tap.payloads()]
    for lane in (S1, S2):
        assert any(t.endswith(f"/{lane.store}/{lane.lane}/{Channel.JOURNAL}") for t in topics)
    assert any(t.endswith(Channel.REQUEST) for t in topics)
    assert any(t.endswith(Channel.REPLY) for t in topics)
    gtin = GTIN13_LUHN.encode()
    journal_bytes = b"".join(p.read_bytes() for p in (tmp_path / "stack").glob("journal-S1-L1.db*"))
    ho_bytes = b"".join(p.read_bytes() for p in (tmp_path / "stack").glob("headoffice.db*"))
    assert gtin in journal_bytes
    assert gtin in ho_bytes
    assert any((tmp_path / "stack").glob("*.log"))

    found = leaks(tmp_path, s, probe.sent)
    assert not found, "\n".join(found[:20])


def test_card_numbers_reach_no_journal_wire_database_or_log(
    tmp_path: Path, broker_factory: Any
) -> None:
    card_numbers_everywhere(tmp_path, broker_factory, examples=200)


@pytest.mark.soak
def test_card_numbers_reach_no_journal_wire_database_or_log_soak(
    tmp_path: Path, broker_factory: Any
) -> None:
    card_numbers_everywhere(tmp_path, broker_factory, examples=3000)
