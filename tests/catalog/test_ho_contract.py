"""protocol.catalog: the contract of CATALOG.md both sides build on."""

from __future__ import annotations

import hashlib
import random

import msgpack
import pytest

from protocol import catalog as c
from protocol.catalog import CatalogError
from protocol.errors import ProtocolError
from protocol.messages import REPLY_FIELDS
from protocol.screen import first_problem

ITEMS = c.dataset("items")
PRICES = c.dataset("prices")
SETTINGS = c.dataset("settings")
STORES = c.dataset("stores")

# 4006381333931 is a valid GTIN-13 (check digit 1); 4111111111111 passes Luhn (a 13-digit PAN)
GTIN = "4006381333931"


def item(code: str = "A1", **kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "code": code,
        "description": "Tea 40 bags",
        "tax_code": "STD",
        "variant": False,
        "active": True,
    }
    row.update(kw)
    return row


def test_every_dataset_of_the_issue_is_declared_with_its_key_columns() -> None:
    assert set(c.DATASETS) == {
        "items", "prices", "tax_rates", "stores", "lanes", "staff", "customers",
        "suppliers", "couriers", "txn_types", "settings",
    }  # fmt: skip
    for ds in c.DATASETS.values():
        assert set(ds.key) <= set(ds.column_names), ds.name


def test_a_typed_row_is_checked_and_absent_optionals_stay_absent() -> None:
    row = c.check_row(ITEMS, item(gtins=[GTIN]))
    assert row["gtins"] == [GTIN]
    assert "gtins" not in c.check_row(ITEMS, item(gtins=None))


@pytest.mark.parametrize(
    ("change", "column", "words"),
    [
        ({"description": ""}, "description", "1-256"),
        ({"description": "tea\x07"}, "description", "control"),
        ({"description": "card 4111 1111 1111 1111"}, "description", "card number"),
        ({"code": "A 1"}, "code", "A-Z"),
        ({"code": "4111111111111111"}, "code", "card number"),
        ({"variant": 1}, "variant", "true or false"),
        ({"gtins": ["4006381333932"]}, "gtins[0]", "check digit"),
        ({"gtins": [GTIN, GTIN]}, "gtins", "twice"),
        ({"tax_code": None}, "tax_code", "required"),
        ({"colour": "red"}, "colour", "unknown column"),
        ({"descripton": "x"}, "descripton", "did you mean description"),
    ],
)
def test_a_bad_value_names_its_column(change: dict[str, object], column: str, words: str) -> None:
    with pytest.raises(CatalogError) as err:
        c.check_row(ITEMS, item(**change))
    assert err.value.field == column
    assert words in str(err.value)
    assert "4111" not in str(err.value)


def test_csv_cells_parse_to_the_same_row_as_json() -> None:
    cells = {"code": "A1", "gtins": f"{GTIN}|96385074", "description": "Tea 40 bags",
             "tax_code": "STD", "variant": "0", "active": "true"}  # fmt: skip
    assert c.parse_cells(ITEMS, cells) == c.check_row(ITEMS, item(gtins=[GTIN, "96385074"]))
    price = c.parse_cells(
        PRICES,
        {"item": "A1", "store": "", "zone": "Z1", "valid_from": "2026-01-31", "price": "998"},
    )
    assert price == {"item": "A1", "zone": "Z1", "valid_from": "2026-01-31", "price": 998}
    for col, cell, words in [
        ("price", "9.98", "minor units"),
        ("price", "-1", "minor units"),
        ("price", "99999999999999999999", "0.."),
        ("valid_from", "2026-02-30", "calendar date"),
        ("valid_from", "31/01/2026", "YYYY-MM-DD"),
    ]:
        cells2 = {"item": "A1", "valid_from": "2026-01-31", "price": "998", col: cell}
        with pytest.raises(CatalogError) as err:
            c.parse_cells(PRICES, cells2)
        assert err.value.field == col
        assert words in str(err.value)


def test_keys_and_scopes() -> None:
    chain = c.check_row(PRICES, {"item": "A1", "valid_from": "2026-01-01", "price": 1})
    store = c.check_row(
        PRICES, {"item": "A1", "store": "S1", "valid_from": "2026-01-01", "price": 1}
    )
    zone = c.check_row(PRICES, {"item": "A1", "zone": "Z9", "valid_from": "2026-01-01", "price": 1})
    assert [PRICES.key_of(r) for r in (chain, store, zone)] == [
        "A1|||2026-01-01",
        "A1|S1||2026-01-01",
        "A1||Z9|2026-01-01",
    ]
    assert [PRICES.scope_of(r) for r in (chain, store, zone)] == ["*", "S:S1", "Z:Z9"]
    with pytest.raises(CatalogError, match="not both") as err:
        c.check_row(
            PRICES,
            {"item": "A1", "store": "S1", "zone": "Z9", "valid_from": "2026-01-01", "price": 1},
        )
    assert err.value.field == "zone"
    staff = c.dataset("staff")
    assert staff.scope_of({"id": "E1", "name": "Ann", "active": True}) == "*"
    assert staff.scope_of({"id": "E1", "name": "Ann", "store": "S2", "active": True}) == "S:S2"
    assert c.store_scopes("S1", "Z9") == ("*", "S:S1", "Z:Z9")
    assert c.store_scopes("S1", None) == ("*", "S:S1")


def test_stores_check_currency_and_timezone_shape() -> None:
    good = {"id": "S1", "name": "Main St", "timezone": "Europe/Dublin", "currency": "EUR",
            "can_receive_stock": True, "active": True}  # fmt: skip
    assert c.check_row(STORES, good)["currency"] == "EUR"
    for col, value in [("currency", "eur"), ("currency", "EURO"), ("timezone", "Dublin time")]:
        with pytest.raises(CatalogError) as err:
            c.check_row(STORES, {**good, col: value})
        assert err.value.field == col


def test_settings_scope_rules_value_types_and_did_you_mean() -> None:
    ok = c.check_row(
        SETTINGS, {"scope": "store", "store": "S1", "name": "PurchReceiveNoUnexp", "value": "1"}
    )
    assert SETTINGS.key_of(ok) == "store|S1||PurchReceiveNoUnexp"
    assert SETTINGS.scope_of(ok) == "S:S1"
    with pytest.raises(CatalogError, match="did you mean PurchRecvAmountVariation") as err:
        c.check_row(SETTINGS, {"scope": "chain", "name": "PurchRecvAmountVariaton", "value": "5"})
    assert err.value.field == "name"
    for row, column in [
        ({"scope": "chain", "store": "S1", "name": "Currency", "value": "EUR"}, "store"),
        ({"scope": "store", "name": "Currency", "value": "EUR"}, "store"),
        (
            {"scope": "store", "store": "S1", "lane": "L1", "name": "Currency", "value": "EUR"},
            "lane",
        ),
        ({"scope": "lane", "store": "S1", "name": "Currency", "value": "EUR"}, "lane"),
        ({"scope": "chain", "name": "SaleTransitPromptQty", "value": "yes"}, "value"),
        ({"scope": "chain", "name": "PurchRecvAmountVariation", "value": "1.5"}, "value"),
        ({"scope": "chain", "name": "PriceOverride", "value": "sometimes"}, "value"),
    ]:
        with pytest.raises(CatalogError) as err:
            c.check_row(SETTINGS, row)
        assert err.value.field == column, row


def test_a_lane_resolves_lane_over_store_over_chain_over_default() -> None:
    rows = [
        {"scope": "chain", "name": "PurchRecvAmountVariation", "value": "20"},
        {"scope": "store", "store": "S1", "name": "PurchRecvAmountVariation", "value": "30"},
        {
            "scope": "lane",
            "store": "S1",
            "lane": "L2",
            "name": "PurchRecvAmountVariation",
            "value": "40",
        },
    ]
    get = c.resolve_setting
    assert get(rows, "PurchRecvAmountVariation", "S1", "L2") == 40
    assert get(rows, "PurchRecvAmountVariation", "S1", "L1") == 30
    assert get(rows, "PurchRecvAmountVariation", "S2", "L1") == 20
    assert get([], "PurchRecvAmountVariation", "S2", "L1") == 11  # seed 004's default
    assert get([], "PurchTransitAllowCourier", "S2", "L1") is True
    assert get(rows[:1], "SaleTransitPromptQty", "S2", "L1") is True


def test_row_bytes_follow_the_declared_column_order() -> None:
    row = c.check_row(ITEMS, item())
    raw = c.row_bytes(ITEMS, dict(reversed(list(row.items()))))
    assert msgpack.unpackb(raw) == ["items", ["A1", None, "Tea 40 bags", "STD", False, True]]
    assert c.row_digest(ITEMS, row) == hashlib.sha256(raw).digest()


def test_the_view_hash_is_additive_and_order_free() -> None:
    rng = random.Random(7)
    rows = [
        c.check_row(ITEMS, item(f"I{i}", description=f"d{i} n{rng.randint(0, 999)}"))
        for i in range(50)
    ]
    full = c.view_hash((ITEMS, r) for r in rows)
    h = c.EMPTY_HASH
    for r in reversed(rows):
        h = c.hash_add(h, c.row_digest(ITEMS, r))
    assert h == full
    changed = c.check_row(ITEMS, item("I3", description="new"))
    h = c.hash_add(c.hash_sub(h, c.row_digest(ITEMS, rows[3])), c.row_digest(ITEMS, changed))
    assert h == c.view_hash((ITEMS, r) for r in [*rows[:3], changed, *rows[4:]])
    assert c.hash_sum([c.view_hash((ITEMS, r) for r in rows[:20]),
                       c.view_hash((ITEMS, r) for r in rows[20:])]) == full  # fmt: skip
    assert h != full


def test_head_round_trips_and_refuses_unknown_or_mistyped_fields() -> None:
    row = c.check_row(ITEMS, item(gtins=["4006381330060"]))  # this GTIN passes Luhn too
    head = c.CatalogHead("S1", 7, b"\x01" * 32, 10, 1_760_000_000_000, 5, [("items", "A1", row)])
    assert c.decode_head(c.encode_head(head)) == head
    assert c.decode_head(c.encode_head(c.CatalogHead("S1", 7, b"\x01" * 32, 10, 5))).changes is None
    base = head.to_map()
    for patch, field in [
        ({"extra": 1}, "extra"),
        ({"version": "7"}, "version"),
        ({"hash": b"\x01" * 31}, "hash"),
        ({"store": "S/1"}, "store"),
        ({"prev": 7}, "prev"),
        ({"changes": [["items", "A2", row]]}, "changes[0][1]"),
        ({"changes": [["itemz", "A1", row]]}, "changes[0][0]"),
        ({"changes": [["items", "A1", {**row, "variant": "no"}]]}, "changes[0][2].variant"),
        ({"changes": [["items", "A1", None], ["items", "A1", None]]}, "changes[1]"),
    ]:
        with pytest.raises(ProtocolError) as err:  # CatalogError, or the id check's
            c.decode_head(msgpack.packb({**base, **patch}))
        assert err.value.field == field, patch
    without = {k: v for k, v in base.items() if k != "changes"}
    with pytest.raises(CatalogError, match="together"):
        c.CatalogHead.from_map(without)


def test_delta_and_snapshot_payloads_round_trip_strictly() -> None:
    req = c.DeltaRequest(3, 9, ("prices", "A1|||2026-01-01"))
    assert c.DeltaRequest.from_map(req.to_map()) == req
    with pytest.raises(CatalogError) as err:
        c.DeltaRequest.from_map({"from": 3, "to": 9, "after": ["prices", "A1"]})
    assert err.value.field == "after[1]"
    with pytest.raises(CatalogError) as err:
        c.DeltaRequest.from_map({"from": 3, "too": 9})
    assert err.value.field == "too"
    row = c.check_row(ITEMS, item(gtins=["4006381330060"]))
    rep = c.DeltaReply(3, 9, b"\x02" * 32, 4, [("items", "A1", row), ("items", "A2", None)], True)
    assert c.DeltaReply.from_map(rep.to_map()) == rep
    # a Reply carrying it passes the message screen: the GTIN field is declared there
    assert first_problem(rep.to_map(), "result", REPLY_FIELDS) is None
    assert first_problem(rep.to_map(), "result") is not None
    snap = c.SnapshotRequest(0, 0, 500)
    assert c.SnapshotRequest.from_map(snap.to_map()) == snap
    for bad, field in [({"version": 0, "chunk": 1, "size": 5}, "chunk"),
                       ({"version": 1, "chunk": 0, "size": 5000}, "size")]:  # fmt: skip
        with pytest.raises(CatalogError) as err:
            c.SnapshotRequest.from_map(bad)
        assert err.value.field == field
    rows = [("items", "A1", row)]
    chunk = c.SnapshotReply(9, b"\x02" * 32, 1, 1, 0, c.chunk_sha256(rows), rows)
    assert c.SnapshotReply.from_map(chunk.to_map()) == chunk
    tampered = {**chunk.to_map(), "sha256": b"\x00" * 32}
    with pytest.raises(CatalogError, match="sha256"):
        c.SnapshotReply.from_map(tampered)
    with pytest.raises(CatalogError, match="never removals"):
        c.SnapshotReply.from_map({**chunk.to_map(), "changes": [["items", "A1", None]]})


def test_unknown_dataset_is_named_with_a_suggestion() -> None:
    with pytest.raises(CatalogError, match="did you mean prices"):
        c.dataset("price")
    assert c.OP_DELTA == "catalog_delta"
    assert c.OP_SNAPSHOT == "catalog_snapshot"
    assert c.refusal(c.SNAPSHOT_NEEDED) == {"code": "snapshot_needed"}
