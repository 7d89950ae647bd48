"""The OpenAPI 3.1 description of the local API, served at /v1/openapi.json.

Written by hand next to the handlers (agent/api.py) so it says what the agent really does;
the schemathesis test in tests/api runs against the served copy. The business rules (totals
that reconcile, purchase receive variation, settings) are in protocol/DOCUMENTS.md and agent/
documents; a schema-valid document may still be refused with 422 naming the field.
"""

from __future__ import annotations

from typing import Any

from protocol.documents import DOCUMENT_KINDS

PROBLEM = "application/problem+json"
MONEY = {"type": "integer", "description": "integer minor units of `currency`"}
QTY = {"type": "string", "pattern": r"^-?[0-9]{1,9}\.[0-9]{3}$", "example": "1.000"}
NULL_STR = {"type": ["string", "null"], "maxLength": 64}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


# What the edge (agent.apiedge) may answer any request: malformed or late, too big headers or
# body, wrong media type or charset.
EDGE_CODES = (400, 408, 413, 415, 431)


def _problems(*codes: int) -> dict[str, Any]:
    every = sorted({*codes, *EDGE_CODES})
    out: dict[str, Any] = {str(c): {"$ref": "#/components/responses/Problem"} for c in every}
    out["default"] = {"$ref": "#/components/responses/Problem"}
    return out


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "field": {"type": "string", "description": "JSON path at fault, e.g. $.lines[2].qty"},
        },
    },
    "Line": {
        "type": "object",
        "required": ["item", "qty", "unit_price", "tax_code", "amount", "tax"],
        "properties": {
            "line_no": {"type": "integer", "minimum": 1},
            "item": {"type": "string"},
            "description": {"type": "string"},
            "qty": QTY,
            "unit_price": MONEY,
            "tax_code": {"type": "string"},
            "amount": MONEY,
            "tax": MONEY,
            "open_qty": QTY,
            "return_type": {"type": "string"},
        },
    },
    "Payment": {
        "type": "object",
        "required": ["tender", "amount"],
        "properties": {
            "tender": {
                "type": "string",
                "enum": ["cash", "card", "cheque", "account", "voucher", "gift_card"],
            },
            "amount": {"type": "integer", "minimum": 1},
            "token": {"type": "string", "description": "card tenders only"},
            "scheme": {"type": "string", "description": "card tenders only"},
            "last4": {"type": "string", "pattern": "^[0-9]{4}$"},
            "banked": {"type": "boolean"},
            "reference": {"type": "string"},
        },
    },
    "Document": {
        "type": "object",
        "description": "a POS document of schema v1 (protocol/DOCUMENTS.md)",
        "required": ["kind"],
        "properties": {
            "kind": {"type": "string", "enum": sorted(DOCUMENT_KINDS)},
            "txn_id": {"type": "string", "format": "uuid"},
            "register_no": {"type": "string"},
            "store": {"type": "string"},
            "lane": {"type": "string"},
            "business_day": {"type": "string", "format": "date"},
            "time": {"type": "string", "format": "date-time"},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "customer": NULL_STR,
            "staff": NULL_STR,
            "lines": {"type": "array", "items": {"type": "object"}},
            "payments": {"type": "array", "items": _ref("Payment")},
            "total": MONEY,
            "change": MONEY,
            "po_id": NULL_STR,
            "supplier": {"type": "string"},
            "document": {"type": "string"},
            "document_date": {"type": "string", "format": "date"},
            "expected_total": MONEY,
            "freight": MONEY,
            "packaging": MONEY,
            "sscc": {"type": "string", "pattern": "^[0-9]{18}$"},
            "transit_no": {"type": "string"},
            "source_store": {"type": "string"},
            "dest_store": {"type": "string"},
            "by": _ref("TransitBy"),
            "status": {"type": "string", "enum": ["pending", "completed"]},
            "reason": {"type": "string"},
            "ext": {"type": "object"},
        },
    },
    "Confirmation": {
        "type": "object",
        "required": ["seq", "txn_id", "epoch", "duplicate"],
        "properties": {
            "seq": {"type": "integer"},
            "txn_id": {"type": "string"},
            "epoch": {"type": "integer"},
            "duplicate": {"type": "boolean"},
            "register_no": {"type": "string"},
            "sscc": {"type": "string"},
            "label": {"type": ["string", "null"]},
            "completed": {"type": "boolean"},
            "document": {"type": "object"},
        },
    },
    "TransitBy": {
        "type": "object",
        "required": ["type", "id"],
        "properties": {
            "type": {"type": "string", "enum": ["staff", "customer", "supplier", "courier"]},
            "id": {"type": "string"},
            "name": {"type": "string"},
        },
    },
    "TransitDetails": {
        "type": "object",
        "required": ["dest_store", "by"],
        "properties": {"dest_store": {"type": "string"}, "by": _ref("TransitBy")},
    },
    "OpenRequest": {
        "type": "object",
        "properties": {
            "kind": {"type": "string"},
            "customer": NULL_STR,
            "staff": NULL_STR,
            "currency": {"type": "string"},
            "mode": {"type": "integer", "enum": [0, 8]},
            "ext": {"type": "object"},
        },
    },
    "LineRequest": {
        "type": "object",
        "required": ["item"],
        "properties": {
            "item": {"type": "string"},
            "description": {"type": "string"},
            "qty": QTY,
            "unit_price": MONEY,
            "tax_code": {"type": "string"},
            "tax": MONEY,
            "open_qty": QTY,
        },
    },
    "PaymentRequest": {
        "allOf": [
            _ref("Payment"),
            {"type": "object", "properties": {"transit": _ref("TransitDetails")}},
        ]
    },
    "OpenDocument": {
        "type": "object",
        "required": ["id", "txn_id", "kind", "mode", "state", "register_no", "lines"],
        "properties": {
            "id": {"type": "string"},
            "txn_id": {"type": "string"},
            "kind": {"type": "string"},
            "mode": {"type": "integer", "enum": [0, 8]},
            "state": {"type": "string", "enum": ["open", "parked"]},
            "version": {"type": "integer"},
            "register_no": {"type": "string"},
            "lines": {"type": "array", "items": {"type": "object"}},
            "payments": {"type": "array", "items": {"type": "object"}},
            "total": {"type": "integer"},
            "paid": {"type": "integer"},
            "due": {"type": "integer"},
            "units": {"type": "string"},
            "transit": {"type": ["object", "null"]},
            "completed": {"type": "boolean"},
        },
    },
}

ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


def _sale_op(
    summary: str,
    *,
    body: dict[str, Any] | None = None,
    ok: str = "200",
    result: str = "OpenDocument",
    required: bool = True,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": [ID],
        "responses": {ok: _json(_ref(result), "the open document"), **_problems(404, 409, 422)},
    }
    if body is not None:
        op["requestBody"] = _body(body, required)
    return op


def openapi_document() -> dict[str, Any]:
    confirmation = _json(_ref("Confirmation"), "durable: the journal entry is committed")
    either = {"oneOf": [_ref("Confirmation"), _ref("OpenDocument")]}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "lanesync local API",
            "version": "1",
            "description": "How a POS application hands its documents to the lane agent. A "
            "document is confirmed only once it is committed to the journal.",
        },
        "paths": {
            "/v1/documents": {
                "post": {
                    "summary": "Journal a completed document",
                    "requestBody": _body(_ref("Document")),
                    "responses": {
                        "201": confirmation,
                        "200": _json(_ref("Confirmation"), "a duplicate of a journaled txn_id"),
                        **_problems(400, 409, 415, 422, 503),
                    },
                }
            },
            "/v1/documents/check": {
                "post": {
                    "summary": "Validate a document without journaling it",
                    "requestBody": _body(_ref("Document")),
                    "responses": {
                        "200": _json(
                            {"type": "object"},
                            "valid; the document as it would be "
                            "journaled (numbers not yet allocated)",
                        ),
                        **_problems(415, 422),
                    },
                }
            },
            "/v1/documents/{txn_id}": {
                "get": {
                    "summary": "A journaled document",
                    "parameters": [
                        {
                            "name": "txn_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _json(
                            {"type": "object", "required": ["seq", "document"]},
                            "the journaled document",
                        ),
                        **_problems(404),
                    },
                }
            },
            "/v1/sales": {
                "post": {
                    "summary": "Open a sale (mode 8: a transit)",
                    "requestBody": _body(_ref("OpenRequest"), required=False),
                    "responses": {
                        "201": _json(_ref("OpenDocument"), "opened"),
                        **_problems(409, 415, 422),
                    },
                },
                "get": {
                    "summary": "Open sales and transits of this lane",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "open": {"type": "array", "items": _ref("OpenDocument")}
                                },
                            },
                            "open documents",
                        )
                    },
                },
            },
            "/v1/sales/{id}": {
                "get": _sale_op("An open sale"),
                "delete": {
                    "summary": "Abandon an open sale (nothing is journaled)",
                    "parameters": [ID],
                    "responses": {"204": {"description": "gone"}, **_problems(404)},
                },
            },
            "/v1/sales/{id}/lines": {
                "post": _sale_op("Add a line (scan or key)", body=_ref("LineRequest"), ok="201")
            },
            "/v1/sales/{id}/lines/{line_no}": {
                "delete": {
                    **_sale_op("Void a line"),
                    "parameters": [
                        ID,
                        {
                            "name": "line_no",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 1},
                        },
                    ],
                }
            },
            "/v1/sales/{id}/mode": {
                "post": _sale_op(
                    "sale(setmode,8): make the sale a transit",
                    body={
                        "type": "object",
                        "required": ["mode"],
                        "properties": {"mode": {"type": "integer", "enum": [8]}},
                    },
                )
            },
            "/v1/sales/{id}/park": {"post": _sale_op("Park (not a transit)")},
            "/v1/sales/{id}/resume": {"post": _sale_op("Resume a parked sale")},
            "/v1/sales/{id}/transit": {
                "put": _sale_op("Choose destination and carrier", body=_ref("TransitDetails"))
            },
            "/v1/sales/{id}/payments": {
                "post": {
                    **_sale_op(
                        "Add a payment; completes a paid sale or any transit",
                        body=_ref("PaymentRequest"),
                    ),
                    "responses": {
                        "201": _json(_ref("Confirmation"), "completed and durable"),
                        "200": _json(either, "still open (or a duplicate completion)"),
                        **_problems(404, 409, 415, 422, 503),
                    },
                }
            },
            "/v1/sales/{id}/complete": {
                "post": {
                    **_sale_op(
                        "Complete (deposits, account remainders)",
                        body={
                            "type": "object",
                            "properties": {
                                "original_txn_id": {"type": "string"},
                                "return_type": {"type": "string"},
                            },
                        },
                        required=False,
                    ),
                    "responses": {
                        "201": confirmation,
                        "200": _json(_ref("Confirmation"), "a duplicate completion"),
                        **_problems(404, 409, 415, 422, 503),
                    },
                }
            },
            "/v1/transit/receive": {
                "post": {
                    "summary": "Look up a parcel for receiving at head office (mode receive)",
                    "description": "By `sscc` (18 digits) or the `transit_no` on the paperwork. "
                    "An empty prompt does nothing (204). There is deliberately no way to list "
                    "or search pending transits.",
                    "requestBody": _body(
                        {
                            "type": "object",
                            "properties": {
                                "sscc": {"type": "string", "maxLength": 64},
                                "transit_no": {"type": "string", "maxLength": 64},
                            },
                            "additionalProperties": False,
                        },
                        required=False,
                    ),
                    "responses": {
                        "200": _json(
                            {"type": "object", "required": ["id", "transit"]},
                            "the transit's details and a receive session id",
                        ),
                        "204": {"description": "nothing entered: nothing done"},
                        **_problems(404, 409, 415, 422, 503),
                    },
                }
            },
            "/v1/transit/receive/{id}/accept": {
                "post": {
                    "summary": "Accept the parcel: once per parcel across all stores and lanes",
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "requestBody": _body({"type": "object"}, required=False),
                    "responses": {
                        "201": _json({"type": "object"}, "accepted and the receive journaled"),
                        "200": _json({"type": "object"}, "the same accept, repeated"),
                        **_problems(404, 409, 415, 422, 503),
                    },
                }
            },
            "/v1/scans": {
                "get": {
                    "summary": "Scans as server-sent events (event: scan | device | transit)",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 0},
                            "description": "end the stream after this many events (0: never)",
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "an event stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_problems(422),
                    },
                }
            },
            "/v1/status": {
                "get": {
                    "summary": "Lane status",
                    "responses": {"200": _json({"type": "object"}, "status")},
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
                }
            },
        },
        "components": {
            "schemas": SCHEMAS,
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem naming the field at fault",
                    "content": {PROBLEM: {"schema": _ref("Problem")}},
                }
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
    }
