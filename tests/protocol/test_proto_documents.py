"""Document rules (no floats, no card numbers), schema planning and typed config tables."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from proto_strategies import FAST

from protocol import documents, schema
from protocol.codec import unpack
from protocol.config import Table
from protocol.documents import (
    DOCUMENT_KINDS,
    check_document,
    encode_body,
    find_pan,
    first_pan_body,
    looks_like_pan,
    luhn_ok,
)
from protocol.errors import ConfigError, ProtocolError
from protocol.messages import MAX_ENTRY_BODY, check_plain

TXN = "0190f3a4-7b2c-7def-8a01-23456789abcd"


def sale(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "sale",
        "txn_id": TXN,
        "register_no": "T10001",
        "currency": "EUR",
        "lines": [{"item": "5901234123457", "qty": "1.000", "amount": 1999}],
        "payments": [{"scheme": "visa", "token": "tok_abc", "last4": "1111", "amount": 1999}],
    }
    doc.update(extra)
    return doc


def refusal(doc: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        check_document(doc)
    return info.value


# --- kinds and shape --------------------------------------------------------------------------


def test_valid_documents_accepted() -> None:
    check_document(sale())
    for kind in DOCUMENT_KINDS:
        check_document({"kind": kind})


@pytest.mark.parametrize("kind", ["refund", None, "", "SALE", 5])
def test_unknown_kind_refused(kind: Any) -> None:
    err = refusal(sale(kind=kind))
    assert err.field == "kind"
    assert "unknown document kind" in err.reason


def test_not_an_object_refused() -> None:
    assert refusal([sale()]).field == "$"


@pytest.mark.parametrize("txn", ["nope", TXN.upper(), 123])
def test_bad_txn_id_refused(txn: Any) -> None:
    assert refusal(sale(txn_id=txn)).field == "txn_id"


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ({"total": 19.99}, "$.total"),
        ({"total": Decimal("19.99")}, "$.total"),
        ({"lines": [{"qty": "1"}, {"qty": 2.5}]}, "$.lines[1].qty"),
        ({"tax": {"rates": [Decimal("0.2")]}}, "$.tax.rates[0]"),
        ({"n": float("nan")}, "$.n"),
    ],
)
def test_fractional_numbers_refused_with_path(extra: dict[str, Any], path: str) -> None:
    err = refusal(sale(**extra))
    assert err.field == path
    assert "fractional numbers are not allowed" in err.reason


def test_non_plain_values_refused() -> None:
    assert refusal(sale(when={1, 2})).field == "$.when"
    assert refusal(sale(meta={3: "x"})).field == "$.meta"


# --- card numbers (invariant 6) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ({"note": "4111111111111111"}, "$.note"),
        ({"note": "5555 5555 5555 4444"}, "$.note"),
        ({"note": "5555-5555-5555-4444"}, "$.note"),
        ({"card": "378282246310005"}, "$.card"),
        ({"card": "3782 822463 10005"}, "$.card"),
        ({"card": "3782-822463-10005"}, "$.card"),
        ({"note": "customer paid with 4111111111111111 exp 12/29"}, "$.note"),
        ({"note": "card:4111-1111-1111-1111."}, "$.note"),
        ({"pan": 4111111111111111}, "$.pan"),
        ({"payments": [{"scheme": "mc", "pan": "5555555555554444"}]}, "$.payments[0].pan"),
        ({"a": [[{"b": "6011111111111117"}]]}, "$.a[0][0].b"),  # Discover
        ({"a": "4000 0566 5566 5556"}, "$.a"),  # Visa debit
        # a digit string in a GS1 key field is exempt, but not when it is not only digits
        ({"item": "4111 1111 1111 1111"}, "$.item"),
        ({"gtin": 4111111111111111}, "$.gtin"),
    ],
)
def test_pan_refused_with_path(extra: dict[str, Any], path: str) -> None:
    err = refusal(sale(**extra))
    assert err.field == path
    assert "card number" in err.reason
    digits = "".join(ch for ch in str(next(iter(extra.values()))) if ch.isdigit())
    assert digits[:10] not in "".join(ch for ch in str(err) if ch.isdigit())  # no PAN echoed


@pytest.mark.parametrize(
    "extra",
    [
        {"lines": [{"item": "5901234123457"}]},  # GTIN-13 that happens to pass Luhn
        {"lines": [{"gtin": "34006381334090"}]},  # GTIN-14 that passes Luhn
        {"sscc": "340063810000000063"},  # SSCC-18 that passes Luhn
        {"transit_no": "340063810000000063"},
        {"barcode": "5901234123457", "item_code": "34006381334090"},
        {"note": "T10001"},
        {"note": "123456789012"},  # 12 digits: too short for a PAN
        {"phone": "+44 20 7946 0958"},
        {"note": "4111111111111112"},  # fails Luhn
        {"note": "0000000000000000"},  # passes Luhn, but no card IIN starts with 0
        {"amount": 10**12},  # a big integer that is not a card number
        {"last4": "1111", "token": "tok_4111"},
    ],
)
def test_gs1_keys_and_short_digits_accepted(extra: dict[str, Any]) -> None:
    check_document(sale(**extra))


def test_gs1_exemption_only_in_gs1_fields() -> None:
    # the same GTIN-13 outside an identifier field reads as a card number
    assert luhn_ok("5901234123457")
    assert refusal(sale(note="5901234123457")).field == "$.note"


def test_looks_like_pan_edges() -> None:
    assert looks_like_pan("4111111111111111")
    assert not looks_like_pan("41111111111111110")  # a 17-digit run is not this PAN
    assert not looks_like_pan("4111 1111  1111 1111")  # a double space breaks the run
    assert looks_like_pan("x4222222222222y")  # 13-digit Visa test number


def test_encode_body_limit() -> None:
    body = encode_body(sale())
    assert msgpack.unpackb(body) == sale()
    with pytest.raises(ProtocolError) as info:
        encode_body(sale(note="x" * MAX_ENTRY_BODY))
    assert info.value.field == "$"


# --- schema planning ----------------------------------------------------------------------------


def write(tmp_path: Path, files: dict[str, str]) -> list[Path]:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return sorted(tmp_path.iterdir())


def test_schema_load_and_plan(tmp_path: Path) -> None:
    files = write(
        tmp_path,
        {
            "0001_initial.sql": "CREATE TABLE a (x);",
            "0002_more.sql": "CREATE TABLE b (y);",
            "README.md": "ignored",
            "__init__.py": "",
        },
    )
    migrations = schema.load(files)
    assert sorted(migrations) == [1, 2]
    steps = schema.plan(0, migrations, "db")
    assert [v for v, _ in steps] == [1, 2]
    assert steps[0][1].startswith("BEGIN IMMEDIATE;")
    assert "PRAGMA user_version = 1;" in steps[0][1]
    assert steps[0][1].rstrip().endswith("COMMIT;")
    assert [v for v, _ in schema.plan(1, migrations, "db")] == [2]
    assert schema.plan(2, migrations, "db") == []


def test_schema_plan_refuses_newer(tmp_path: Path) -> None:
    migrations = schema.load(write(tmp_path, {"0001_initial.sql": "SELECT 1;"}))
    with pytest.raises(schema.SchemaError) as info:
        schema.plan(3, migrations, "journal x.db")
    assert "journal x.db has schema version 3, newer than this lanesync knows (1)" in str(
        info.value
    )


def test_schema_load_refuses_gaps(tmp_path: Path) -> None:
    files = write(tmp_path, {"0001_a.sql": "", "0003_c.sql": ""})
    with pytest.raises(schema.SchemaError, match=r"without gaps, got \[1, 3\]"):
        schema.load(files)


def test_schema_load_refuses_missing_first(tmp_path: Path) -> None:
    with pytest.raises(schema.SchemaError, match="without gaps"):
        schema.load(write(tmp_path, {"0002_b.sql": ""}))


# --- typed config tables -----------------------------------------------------------------------


def test_table_reads_and_defaults() -> None:
    t = Table({"s": "x", "i": 3, "n": 2, "b": True, "sub": {"k": "v"}, "arr": [1]})
    assert t.str("s") == "x"
    assert t.int("i", lo=1, hi=5) == 3
    assert t.num("n") == 2.0
    assert t.bool("b") is True
    assert t.str("absent", None) is None
    assert t.array("arr") == [1]
    sub = t.table("sub")
    assert sub.str("k") == "v"
    sub.done()
    t.done()


@pytest.mark.parametrize(
    ("data", "read", "message"),
    [
        ({}, lambda t: t.str("host"), "broker.host: required key is missing"),
        ({"host": 5}, lambda t: t.str("host"), "broker.host: must be a string, got 5"),
        ({"port": "x"}, lambda t: t.int("port", 1, 1, 9), "broker.port: must be an integer 1..9"),
        ({"port": True}, lambda t: t.int("port", 1), "broker.port: must be an integer"),
        ({"port": 10}, lambda t: t.int("port", 1, 1, 9), "broker.port: must be an integer 1..9"),
        ({"t": "1s"}, lambda t: t.num("t", 1.0), "broker.t: must be a number"),
        ({"t": -1}, lambda t: t.num("t", 1.0), "broker.t: must be a number 0..1e+09, got -1"),
        ({"b": "yes"}, lambda t: t.bool("b", False), "broker.b: must be true or false"),
        ({"sub": 3}, lambda t: t.table("sub"), "broker.sub: must be a table"),
        ({"arr": "x"}, lambda t: t.array("arr"), "broker.arr: must be an array"),
    ],
)
def test_table_errors_name_the_key(data: dict[str, Any], read: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        read(Table(data, "broker"))
    assert message in str(info.value)


def test_table_unknown_key_named() -> None:
    t = Table({"host": "h", "prot": 1, "zz": 2}, "broker")
    t.str("host")
    with pytest.raises(ConfigError, match=r"^broker\.prot: unknown key$"):
        t.done()
    root = Table({"windw": 1})
    with pytest.raises(ConfigError, match=r"^windw: unknown key$"):
        root.done()


def test_table_root_must_be_mapping() -> None:
    with pytest.raises(ConfigError, match="config: must be a table"):
        Table([1])  # type: ignore[arg-type]


# --- head office's fast card-number scan agrees with the full walk ------------------------------

PANS = ["4111111111111111", "5555 5555 5555 4444", "3782-822463-10005", "6011111111111117"]
pan_values = st.sampled_from(PANS) | st.sampled_from(
    [int(p.replace(" ", "").replace("-", "")) for p in PANS]
)
doc_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 63) - 1)
    | st.text(alphabet="0123456789 -abc", max_size=24)
    | st.binary(max_size=12)
    | pan_values,
    lambda c: (
        st.lists(c, max_size=3)
        | st.dictionaries(st.sampled_from(["note", "item", "gtin", "pan", "x"]), c, max_size=3)
    ),
    max_leaves=12,
)


@FAST
@given(
    st.lists(
        st.dictionaries(st.sampled_from(["note", "sscc", "card", "lines"]), doc_values),
        min_size=1,
        max_size=4,
    )
)
def test_first_pan_body_agrees_with_find_pan(docs: list[dict[str, Any]]) -> None:
    bodies = [msgpack.packb(d, use_bin_type=True) for d in docs]
    want = next(((i, p) for i, d in enumerate(docs) if (p := find_pan(d, "$")) is not None), None)
    assert first_pan_body(bodies, unpack) == want


_PANS = ["4111111111111111", "5555 5555 5555 4444", "3782-822463-10005"]
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from(_PANS).map(lambda p: f"card {p}"),
    st.integers(min_value=10**12, max_value=10**19),
    st.from_regex(r"[0-9 -]{10,20}", fullmatch=True),
)
_tree = st.recursive(
    _leaf,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=8), st.sampled_from(["item", "sscc", "gtin"])),
            kids,
            max_size=4,
        ),
    ),
    max_leaves=25,
)


@given(_tree)
@FAST
def test_fast_screen_never_clears_what_the_precise_checks_refuse(tree: object) -> None:
    if not documents._suspicious(tree):  # the screen check_document relies on
        check_plain(tree, "$")  # must not raise
        assert find_pan(tree, "$") is None
