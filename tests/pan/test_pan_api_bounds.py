"""The local API on hostile bodies: deep nesting, lone surrogates and card numbers get a 4xx
naming the field, never a 500 (issue 12: ext nested 500-975 deep was a RecursionError in
agent/open_docs/service.py, a lone surrogate a UnicodeEncodeError in encode_body)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from protocol.pan import contains_pan
from tests.api.api_helpers import Client, running_api, sale

PAN = "4111111111111111"
SPACED = "4111 1111 1111 1111"
STAFF = {"type": "staff", "id": "E1"}


def nested(depth: int) -> str:
    """JSON text nested `depth` deep (lists and maps by turns), written without recursion."""
    opening = "".join('{"x": ' if i % 2 else "[" for i in reversed(range(depth)))
    closing = "".join("}" if i % 2 else "]" for i in range(depth))
    return opening + '"leaf"' + closing


def with_ext(doc: dict[str, Any], ext: str) -> str:
    return json.dumps(doc)[:-1] + ', "ext": ' + ext + "}"


async def post_raw(c: Client, path: str, text: str) -> tuple[int, Any]:
    async with c.session.post(
        f"http://lane{path}", data=text.encode(), headers={"Content-Type": "application/json"}
    ) as r:
        body = await r.text()
        return r.status, (json.loads(body) if body else None)


def refused_deep(status: int, body: Any) -> None:
    """A 422 naming the field in ext; or a 400 "Malformed JSON" where the JSON parser itself
    gave up first (the API's business, agent/api.py): never a 5xx."""
    assert status in (400, 422), body
    if "malformed json" in body["detail"].lower() or body["title"] == "Malformed JSON":
        assert body["field"] == "$"
    else:
        assert body["field"].startswith("$.ext")
        # the API edge's depth check (agent.apiedge, 64 levels) or the screen's (32 levels)
        detail = body["detail"]
        assert "nested deeper than 32 levels" in detail or "nested more than 64 levels" in detail


@pytest.mark.parametrize("depth", [33, 500, 975])
async def test_deep_ext_is_a_4xx_naming_it(tmp_path: Path, depth: int) -> None:
    async with running_api(tmp_path) as (_, c):
        status, body = await post_raw(c, "/v1/documents", with_ext(sale(), nested(depth)))
        refused_deep(status, body)
        if depth <= 500:
            assert status == 422  # a depth refusal naming the field, not the parser's
        # a resubmission with a txn_id (which takes the duplicate check's copy) too
        doc = sale(txn_id="0190f3a4-7b2c-7def-8a01-23456789abcd")
        refused_deep(*await post_raw(c, "/v1/documents", with_ext(doc, nested(depth))))
        refused_deep(*await post_raw(c, "/v1/sales", '{"ext": ' + nested(depth) + "}"))
        status, body, _ = await c.call("GET", "/v1/status")
        assert status == 200
        assert body["last_seq"] == 0  # nothing journaled


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('"note": "\\ud800"', "$.note"),
        ('"ext": {"a": ["ok", "caf\\udce9"]}', "$.ext.a[1]"),
        ('"ext": {"\\udfff": 1}', "$.ext (a map key)"),
    ],
)
async def test_lone_surrogates_are_a_422_naming_the_field(
    tmp_path: Path, text: str, field: str
) -> None:
    raw = json.dumps(sale())[:-1] + ", " + text + "}"
    async with running_api(tmp_path) as (_, c):
        status, body = await post_raw(c, "/v1/documents", raw)
        assert status == 422, body
        assert body["field"] == field
        assert "lone surrogate" in body["detail"]
        status, body = await post_raw(c, "/v1/sales", "{" + text + "}")
        assert status == 422, body
        assert body["field"] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"sscc": "4111 1111 1111 1111"}, "$.sscc"),
        ({"transit_no": "4111111111111111"}, "$.transit_no"),
        ({"transit_no": "T1", "source_store": "4111-1111-1111-1111"}, "$.source_store"),
        ({"4111111111111111": "x"}, "$ (a map key)"),
    ],
)
async def test_transit_receive_refuses_card_numbers_before_asking(
    tmp_path: Path, body: dict[str, Any], field: str
) -> None:
    async with running_api(tmp_path) as (_, c):  # no replicator: nothing could be sent
        status, problem, _ = await c.call("POST", "/v1/transit/receive", body)
        assert status == 422, problem
        assert problem["field"] == field
        assert not contains_pan(json.dumps(problem))
        status, problem, _ = await c.call("POST", "/v1/transit/receive/4111111111111111/accept")
        assert status == 404
        assert problem["field"] == "id"
        assert not contains_pan(json.dumps(problem))


async def test_open_transit_details_are_screened(tmp_path: Path) -> None:
    """A transit's by.id, by.name and dest_store took card numbers with 201 (issue 12)."""
    async with running_api(tmp_path) as (_, c):
        status, row, _ = await c.call("POST", "/v1/sales", {"mode": 8})
        assert status == 201, row
        url = f"/v1/sales/{row['id']}/transit"
        for details, field in (
            ({"dest_store": "S2", "by": {**STAFF, "id": PAN}}, "$.by.id"),
            ({"dest_store": "S2", "by": {**STAFF, "name": SPACED}}, "$.by.name"),
            ({"dest_store": "3782-822463-10005", "by": STAFF}, "$.dest_store"),
        ):
            status, problem, _ = await c.call("PUT", url, details)
            assert status == 422, problem
            assert problem["field"] == field
            assert not contains_pan(json.dumps(problem))
        status, problem, _ = await c.call("POST", "/v1/sales/4111111111111111/lines", {})
        assert status == 404
        assert not contains_pan(json.dumps(problem))
