"""The OpenAPI 3.1 description of the local API, served at /v1/openapi.json.

Written by hand next to the handlers (agent/api.py) so it says what the agent really does;
the schemathesis test in tests/api runs against the served copy. The business rules (totals
that reconcile, purchase receive variation, settings) are in protocol/DOCUMENTS.md and agent/
documents; a schema-valid document may still be refused with 422 naming the field.
"""

from __future__ import annotations

from typing import Any

from protocol.catalog import SETTINGS
from protocol.documents import DOCUMENT_KINDS
from protocol.runtime.httpserver import PROBLEM

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

# --- master data (agent.catalog.lookup) --------------------------------------------------------

VERSION = {
    "type": "integer",
    "minimum": 1,
    "description": "the catalog version the answer was read from (one complete version)",
}
_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_NEXT = {
    "type": ["string", "null"],
    "description": "pass as `after` for the next page; null: this was the last",
}
_SETTING_TYPES: dict[str, dict[str, Any]] = {
    "bool": {"type": ["boolean", "null"]},
    "money": {"type": ["integer", "null"], "minimum": 0},
    "currency": {"type": ["string", "null"], "pattern": "^[A-Z]{3}$"},
    "timezone": {"type": ["string", "null"]},
    "code": {"type": ["string", "null"]},
}


def _row(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


CATALOG_SCHEMAS: dict[str, Any] = {
    "Money": _row(
        ["amount", "currency"],
        amount={"type": "integer", "minimum": 0, "description": "integer minor units"},
        currency={"type": ["string", "null"], "description": "ISO 4217 (the Currency setting)"},
    ),
    "ItemPrice": {
        "allOf": [
            _ref("Money"),
            _row(
                ["valid_from", "scope"],
                valid_from={"type": "string", "format": "date"},
                scope={
                    "type": "string",
                    "enum": ["store", "zone", "chain"],
                    "description": "which price row applies: the store's, its zone's or the "
                    "chain's",
                },
            ),
        ]
    },
    "Item": _row(
        ["code", "description", "gtins", "tax_code", "variant", "active", "on", "price", "tax"],
        code=_STR,
        description=_STR,
        gtins={"type": "array", "items": {"type": "string", "pattern": "^[0-9]{8,14}$"}},
        tax_code=_STR,
        variant=_BOOL,
        active=_BOOL,
        on={
            "type": "string",
            "format": "date",
            "description": "the store's local date the price and tax rate are read for",
        },
        price={
            "oneOf": [_ref("ItemPrice"), {"type": "null"}],
            "description": "null: no price is valid yet on that date",
        },
        tax=_row(
            ["code", "rate_bp"],
            code=_STR,
            rate_bp={
                "type": ["integer", "null"],
                "description": "basis points (2000 is 20 %); null: no rate yet on that date",
            },
        ),
    ),
    "Staff": _row(["id", "name", "active"], id=_STR, name=_STR, store=_STR, active=_BOOL),
    "Customer": _row(
        ["code", "name", "account_allowed", "active"],
        code=_STR,
        name=_STR,
        account_allowed=_BOOL,
        active=_BOOL,
    ),
    "Party": _row(["code", "name", "active"], code=_STR, name=_STR, active=_BOOL),
    "Store": _row(
        ["id", "name", "timezone", "currency", "can_receive_stock", "active", "this_store"],
        id=_STR,
        name=_STR,
        timezone=_STR,
        currency=_STR,
        price_zone=_STR,
        can_receive_stock=_BOOL,
        active=_BOOL,
        this_store={"type": "boolean", "description": "the store this lane belongs to"},
    ),
    "TxnType": _row(
        ["code", "name", "inventory_effect"],
        code=_STR,
        name=_STR,
        inventory_effect={"type": "string", "enum": ["increase", "decrease", "none"]},
    ),
    "Settings": _row(
        ["catalog_version", "store", "lane", "settings"],
        catalog_version=VERSION,
        store=_STR,
        lane=_STR,
        settings={
            "type": "object",
            "description": "every declared setting, resolved lane > store > chain > default "
            "(Currency and Timezone default to the store's own)",
            "properties": {
                name: {
                    **_SETTING_TYPES.get(
                        s.type, {"type": ["string", "null"], "enum": [*s.choices, None]}
                    ),
                    "description": s.doc or name,
                }
                for name, s in SETTINGS.items()
            },
            "additionalProperties": False,
        },
        errors={
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "settings whose value this lane cannot read (then null), and why",
        },
    ),
    "Setting": _row(
        ["catalog_version", "name", "value"],
        catalog_version=VERSION,
        name={"type": "string", "enum": sorted(SETTINGS)},
        value={"type": ["boolean", "integer", "string", "null"]},
    ),
    "CatalogHeld": _row(
        ["catalog_version", "store", "rows", "hash", "head_version", "datasets"],
        catalog_version=VERSION,
        store=_STR,
        rows={"type": "integer"},
        hash={"type": ["string", "null"], "description": "the view hash, hex"},
        applied_at={"type": ["integer", "null"], "description": "ms since the epoch"},
        head_version={"type": "integer", "description": "the newest head seen from head office"},
        datasets={"type": "object", "additionalProperties": {"type": "integer"}},
    ),
}
SCHEMAS.update(CATALOG_SCHEMAS)


def _one_of(name: str) -> dict[str, Any]:
    return {"allOf": [_ref(name), {"type": "object", "required": ["catalog_version"],
                                   "properties": {"catalog_version": VERSION}}]}  # fmt: skip


def _page_of(field: str, name: str) -> dict[str, Any]:
    return _row(
        ["catalog_version", field, "next"],
        catalog_version=VERSION,
        **{field: {"type": "array", "items": _ref(name)}},
        next=_NEXT,
    )


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


AT = _q(
    "at",
    {"type": "string", "format": "date-time"},
    "the moment to price for, with its offset (default now); the store's local date decides",
)
PAGE = [
    _q("prefix", {"type": "string", "maxLength": 32}, "keys that start with this"),
    _q("after", {"type": "string"}, "the `next` of the previous page"),
    _q("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "at most this many (50)"),
]
CATALOG_CODES = (404, 422, 503)
NO_CATALOG = (
    "Read from the lane's own copy of head office's master data, so it answers offline. 503 "
    "`No catalog yet` until the lane holds a complete version; a 404 names what was not found "
    "and the `catalog_version` it looked in."
)


def _key_path(summary: str, name: str, key: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "description": NO_CATALOG,
            "parameters": [{"name": key, "in": "path", "required": True, "schema": _STR}],
            "responses": {
                "200": _json(_one_of(name), "the row (an inactive one too: see `active`)"),
                **_problems(*CATALOG_CODES),
            },
        }
    }


def _list_path(summary: str, field: str, name: str, *extra: dict[str, Any]) -> dict[str, Any]:
    active = [_q("active", {"type": "integer", "enum": [0, 1]}, "1: active rows only")]
    if "active" not in CATALOG_SCHEMAS[name]["properties"]:
        active = []  # transaction types are never inactive
    return {
        "get": {
            "summary": summary,
            "description": NO_CATALOG,
            "parameters": [*PAGE, *active, *extra],
            "responses": {
                "200": _json(_page_of(field, name), "a page, in key order"),
                **_problems(*CATALOG_CODES),
            },
        }
    }


def catalog_paths() -> dict[str, Any]:
    items_page = _page_of("items", "Item")
    return {
        "/v1/catalog": {
            "get": {
                "summary": "The catalog version this lane holds",
                "responses": {
                    "200": _json(_ref("CatalogHeld"), "what the lane holds"),
                    **_problems(503),
                },
            }
        },
        "/v1/items": {
            "get": {
                "summary": "Items by GTIN, or a page of items by code prefix",
                "description": NO_CATALOG + " `gtin` is an exact lookup (404 if no item has it; "
                "a GTIN matches at any length it is written in: 12, 13 or 14 digits). Each item "
                "comes with its price and tax rate at `at`.",
                "parameters": [
                    _q(
                        "gtin",
                        {"type": "string", "pattern": "^[0-9]{8,14}$"},
                        "a GTIN-8/12/13/14 with a valid check digit",
                    ),
                    *PAGE,
                    AT,
                ],
                "responses": {
                    "200": _json(items_page, "the items (`next` is null for a GTIN)"),
                    **_problems(*CATALOG_CODES),
                },
            }
        },
        "/v1/items/{code}": {
            "get": {
                **_key_path("An item with today's price and tax", "Item", "code")["get"],
                "parameters": [
                    {"name": "code", "in": "path", "required": True, "schema": _STR},
                    AT,
                ],
            }
        },
        "/v1/staff": _list_path("Staff of this store and the chain", "staff", "Staff"),
        "/v1/staff/{key}": _key_path("A staff member by id", "Staff", "key"),
        "/v1/customers": _list_path("Customers", "customers", "Customer"),
        "/v1/customers/{key}": _key_path("A customer by code", "Customer", "key"),
        "/v1/suppliers": _list_path("Suppliers", "suppliers", "Party"),
        "/v1/suppliers/{key}": _key_path("A supplier by code", "Party", "key"),
        "/v1/couriers": _list_path("Couriers", "couriers", "Party"),
        "/v1/couriers/{key}": _key_path("A courier by code", "Party", "key"),
        "/v1/stores": _list_path(
            "Stores; `can_receive_stock=1` is the transit destination selector",
            "stores",
            "Store",
            _q(
                "can_receive_stock",
                {"type": "integer", "enum": [1]},
                "1: the active stores that can receive stock (this one marked `this_store`)",
            ),
        ),
        "/v1/stores/{key}": _key_path("A store by id", "Store", "key"),
        "/v1/txn-types": _list_path("Transaction types", "txn_types", "TxnType"),
        "/v1/txn-types/{key}": _key_path("A transaction type by code", "TxnType", "key"),
        "/v1/settings": {
            "get": {
                "summary": "Every setting as this lane resolves it",
                "description": NO_CATALOG,
                "responses": {
                    "200": _json(_ref("Settings"), "lane > store > chain > default"),
                    **_problems(503),
                },
            }
        },
        "/v1/settings/{name}": {
            "get": {
                "summary": "One setting",
                "description": NO_CATALOG + ' An undeclared name is 404 with "did you mean".',
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": _STR}],
                "responses": {
                    "200": _json(_ref("Setting"), "its value"),
                    **_problems(404, 503),
                },
            }
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
                    "description": "A scan of a GTIN carries what the lane's catalog says of it: "
                    "`item_status` (found, unknown, no_catalog, unavailable), `catalog_version` "
                    "and `item` (an Item with its price and tax now, or null).",
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
            **catalog_paths(),
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
