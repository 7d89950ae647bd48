"""Document rules (no floats, no card numbers), schema planning and typed config tables."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import screen
from protocol.codec import unpack
from protocol.documents import (
    DOCUMENT_KINDS,
    check_document,
    decode_document,
    encode_body,
    find_pan,
    first_pan_body,
)
from protocol.errors import ConfigError, ProtocolError
from protocol.messages import MAX_ENTRY_BODY
from protocol.pan import contains_pan, is_pan_digits, is_pan_int
from protocol.runtime import migrations as schema
from protocol.runtime.config import Table
from tests.protocol.proto_strategies import FAST

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
    assert refusal(sale(meta={3: "x"})).field == "$.meta (a map key)"


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
        ({"item": "4111 1111 1111 1111"}, "$.item"),
        ({"gtin": 4111111111111111}, "$.gtin"),
        ({"pan": -4111111111111111}, "$.pan"),
        ({"note": "\uff14" + "\uff11" * 15}, "$.note"),  # fullwidth digits
        ({"note": "ref 12 4111 1111 1111 1111"}, "$.note"),  # groups before it
        ({"note": "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1"}, "$.note"),
        ({"note": "8000 0000 0000 0003"}, "$.note"),  # any issuer prefix
        ({"blob": b"pan=4111111111111111"}, "$.blob"),
    ],
)
def test_pan_refused_with_path(extra: dict[str, Any], path: str) -> None:
    err = refusal(sale(**extra))
    assert err.field == path
    assert "card number" in err.reason
    digits = "".join(ch for ch in str(next(iter(extra.values()))) if ch.isdigit())
    assert digits[:10] not in "".join(ch for ch in str(err) if ch.isdigit())  # no PAN echoed


GTIN13_LUHN = "5901234123457"  # a valid GTIN-13 whose digits also pass Luhn
GTIN14_LUHN = "34006381334090"
SSCC_LUHN = "340063810000000063"  # a valid SSCC-18 that also passes Luhn


def test_the_gs1_examples_pass_luhn() -> None:
    # what the declared-field tests below rely on: these GS1 keys read as card numbers too
    for key in (GTIN13_LUHN, GTIN14_LUHN, SSCC_LUHN):
        assert is_pan_digits(key), key
    assert screen.gtin(GTIN13_LUHN, None)
    assert screen.gtin(GTIN14_LUHN, None)
    assert screen.sscc(SSCC_LUHN, None)
    assert not screen.gtin(SSCC_LUHN, None)  # 18 digits are no GTIN


@pytest.mark.parametrize(
    "extra",
    [
        {"lines": [{"item": GTIN13_LUHN}]},  # declared GTIN field, valid GTIN-13
        {"lines": [{"item": GTIN14_LUHN}, {"item": "P1000"}]},
        {"note": "T10001"},
        {"note": "123456789012"},  # 12 digits: too short for a PAN
        {"phone": "+44 20 7946 0958"},
        {"note": "4111111111111112"},  # fails Luhn
        {"note": "4111 1111  1111 1111"},  # two spaces end a run: two 8-digit numbers
        {"note": "41111111111111110"},  # 17 digits in one run, failing Luhn as a whole
        {"amount": 10**12},  # a big integer that is not a card number
        {"last4": "1111", "token": "tok_4111"},
        {"ref": "0190f3a4-7b2c-7def-8a01-23456789abcd"},  # a UUID is an identifier
    ],
)
def test_declared_gs1_keys_and_short_digits_accepted(extra: dict[str, Any]) -> None:
    check_document(sale(**extra))


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        # a GS1 key that passes Luhn is a card number outside its declared field ...
        ({"note": GTIN13_LUHN}, "$.note"),
        ({"lines": [{"gtin": GTIN14_LUHN}]}, "$.lines[0].gtin"),
        ({"ext": {"item": GTIN13_LUHN}}, "$.ext.item"),
        ({"sscc": SSCC_LUHN}, "$.sscc"),  # a sale declares no SSCC
        ({"transit_no": SSCC_LUHN}, "$.transit_no"),  # nor is a transit number a GS1 key
        ({"barcode": GTIN13_LUHN}, "$.barcode"),
        # ... and a declared GTIN field holding anything but a GTIN is screened like any other
        ({"lines": [{"item": "4111111111111111"}]}, "$.lines[0].item"),  # 16 digits
        ({"lines": [{"item": "4222222222222"}]}, "$.lines[0].item"),  # 13, bad GS1 check
        ({"lines": [{"item": "x" + GTIN13_LUHN}]}, "$.lines[0].item"),
        ({"lines": [{"item": "5901 2341 2345 7"}]}, "$.lines[0].item"),
        ({"lines": [{"item": int(GTIN13_LUHN)}]}, "$.lines[0].item"),
        ({"note": "0000000000000000"}, "$.note"),  # passes Luhn: any issuer prefix counts
    ],
)
def test_gs1_exemption_only_for_declared_gs1_keys(extra: dict[str, Any], path: str) -> None:
    err = refusal(sale(**extra))
    assert err.field == path
    assert "card number" in err.reason


def test_transit_sscc_and_label_declared() -> None:
    transit = {
        "kind": "transit_inventory",
        "sscc": SSCC_LUHN,
        "label": f"TRANSIT T10001\n(00) {SSCC_LUHN}\nSSCC 3 4006381 000000006 3",
        "lines": [{"item": GTIN13_LUHN, "qty": "1.000"}],
    }
    check_document(transit)
    # the label may spell its own SSCC, nothing else
    for label in (f"(00) {SSCC_LUHN} 4111111111111111", "(00) 4111 1111 1111 1111"):
        assert refusal({**transit, "label": label}).field == "$.label"
    assert refusal({**transit, "sscc": "4111111111111111"}).field == "$.sscc"
    accept = {"kind": "transit_inventory_accept", "sscc": SSCC_LUHN, "ext": {}}
    check_document({**accept, "ext": {"received_at": 1_718_000_000_022}})
    assert is_pan_int(1_718_000_000_022)  # a millisecond time that passes Luhn
    assert refusal({**accept, "ext": {"at": 1_718_000_000_022}}).field == "$.ext.at"
    assert refusal({**accept, "ext": {"received_at": 4_222_222_222_222}}).field == (
        "$.ext.received_at"  # a 13-digit Visa number is past 2096 in milliseconds
    )


def test_card_number_refusals_never_quote_it() -> None:
    for doc in (
        sale(note="4111 1111 1111 1111"),
        sale(ext={"4111111111111111": 1}),  # a map key
        {"kind": "4111111111111111"},
        sale(txn_id="4111111111111111"),
    ):
        err = refusal(doc)
        assert "4111" not in str(err).replace("****-****-****-1111", ""), err
        assert not contains_pan(str(err))


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
    # A refused value is recorded and the read goes on with the default (every fault of a
    # file is reported at once); finish() raises them all. A missing required key raises.
    t = Table(data, "broker")

    def read_all() -> None:
        read(t)
        t.finish()

    with pytest.raises(ConfigError) as info:
        read_all()
    assert message in str(info.value)


def test_table_unknown_key_named() -> None:
    t = Table({"host": "h", "prot": 1, "hots": 2}, "broker")
    t.str("host")
    t.int("port", 1)
    t.done()
    with pytest.raises(ConfigError) as info:
        t.finish()
    assert str(info.value) == (
        "broker.hots: unknown key; did you mean 'host'?\n"
        "broker.prot: unknown key; did you mean 'port'?"
    )
    root = Table({"windw": 1})
    root.done()
    with pytest.raises(ConfigError, match=r"^windw: unknown key$"):
        root.finish()


def test_table_root_must_be_mapping() -> None:
    with pytest.raises(ConfigError, match="config: must be a table"):
        Table([1]).finish()


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


def _reference_pans(value: Any, path: str = "$") -> set[str]:
    """Every card-number path in a tree, by plain recursion (small trees only): what the
    iterative walk must agree with when nothing is declared."""
    out: set[str] = set()
    if type(value) is dict:
        for k, v in value.items():
            if type(k) is str and contains_pan(k):
                out.add(f"{path} (a map key)")
            out |= _reference_pans(v, f"{path}.{k}")
    elif type(value) is list:
        for i, v in enumerate(value):
            out |= _reference_pans(v, f"{path}[{i}]")
    elif type(value) is str:
        uuid = len(value) == 36 and screen.UUID_RE.fullmatch(value)
        if not uuid and contains_pan(value):
            out.add(path)
    elif type(value) is float and math.isfinite(value) and value.is_integer():
        if is_pan_int(int(value)):
            out.add(path)
    elif type(value) is int and is_pan_int(value):
        out.add(path)
    return out


@given(_tree)
@FAST
def test_screen_and_find_pan_agree_with_a_plain_recursion(tree: object) -> None:
    want = _reference_pans(tree)
    got = screen.find_pan(tree, "$")
    assert (got is None) == (not want)
    assert got is None or got in want
    problem = screen.first_problem(tree, "$")
    if problem is None:  # what check passes holds no card number
        assert not want
    elif problem.card_number:
        assert problem.field in want


def _nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for i in range(depth):
        value = {"x": value} if i % 2 else [value]
    return value


@pytest.mark.parametrize("depth", [33, 990, 5000])
def test_deep_nesting_refused_without_recursion(depth: int) -> None:
    doc = sale(ext=_nested(depth, "4111111111111111"))
    err = refusal(doc)
    assert "nested deeper than 32 levels" in err.reason
    assert (err.field or "").startswith("$.ext")
    # head office's scan walks it all the same, and finds the number at the bottom
    assert find_pan(doc, "$") is not None
    assert find_pan(sale(ext=_nested(depth, "clean")), "$") is None


def test_deep_body_at_head_office_is_scanned_not_crashed() -> None:
    """Issue 12: a 1.2 kB entry body nested 990 deep killed head office (RecursionError)."""
    body = b"\x81\xa1x" * 3 + b"\x91" * 987 + msgpack.packb(4111111111111111)
    assert len(body) < 1300
    # a path that deep is shortened (it goes into an ack's reason, at most 1024 characters)
    path = "$.x.x.x" + "[0]" * 13 + "...(966 levels)..." + "[0]" * 8
    assert first_pan_body([body], unpack) == (0, path)
    clean = b"\x91" * 990 + msgpack.packb(2**40)
    assert first_pan_body([clean, body], unpack) == (1, path)


def test_size_and_type_bounds() -> None:
    assert "more than 100000 values" in refusal(sale(ext={"a": [0] * 100_001})).reason
    assert refusal(sale(ext={"n": 1 << 63})).field == "$.ext.n"
    assert refusal(sale(ext={"n": -(1 << 63) - 1})).field == "$.ext.n"
    check_document(sale(ext={"n": (1 << 63) - 1, "m": -(1 << 63)}))


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        (sale(note="caf\udce9"), "$.note"),
        (sale(lines=[{"description": "\ud800"}]), "$.lines[0].description"),
        (sale(ext={"\udfff": 1}), "$.ext (a map key)"),
    ],
)
def test_lone_surrogates_refused_by_field(doc: dict[str, Any], path: str) -> None:
    err = refusal(doc)
    assert err.field == path
    assert "lone surrogate" in err.reason
    with pytest.raises(ProtocolError) as info:  # encode_body names it too, never raises else
        encode_body(doc)
    assert info.value.field == path


def test_decode_document_is_unpack_and_check() -> None:
    assert decode_document(encode_body(sale()), unpack) == sale()
    for body, field in (
        (msgpack.packb(sale(note="4111 1111 1111 1111")), "$.note"),
        (msgpack.packb([1]), "$"),
        (b"\xc1", "payload"),
    ):
        with pytest.raises(ProtocolError) as info:
            decode_document(body, unpack)
        assert info.value.field == field
