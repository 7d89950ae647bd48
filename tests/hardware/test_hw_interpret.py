"""GS1 interpretation through biip: good and bad check digits, SSCC, RCN, pass-through."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardware.interpret import interpret

T = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def scan(raw: str, **kw: str) -> object:
    return interpret(raw, source="lane1", time=T, **kw)


@pytest.mark.parametrize(
    ("raw", "gtin"),
    [
        ("96385074", "96385074"),  # GTIN-8
        ("036000291452", "036000291452"),  # GTIN-12 (UPC-A)
        ("4006381333931", "4006381333931"),  # GTIN-13
        ("]E04006381333931", "4006381333931"),
        ("14006381333938", "14006381333938"),  # GTIN-14
    ],
)
def test_good_gtins(raw: str, gtin: str) -> None:
    event = interpret(raw, source="lane1", time=T)
    assert (event.kind, event.gtin, event.label, event.error) == ("gtin", gtin, gtin, None)
    assert event.raw == raw
    assert not event.is_sscc


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("96385075", "Invalid GTIN check digit for '96385075': Expected 4, got 5."),
        ("036000291453", "Invalid GTIN check digit"),
        ("4006381333932", "Invalid GTIN check digit for '4006381333932': Expected 1, got 2."),
        ("]E0123", "Expected 8, 12, 13, or 14 digits, got 3"),
        (
            "340123450000000018",
            "Invalid SSCC check digit for '340123450000000018': Expected 7, got 8.",
        ),
        ("00340123450000000018", "Invalid SSCC check digit"),
        ("0104006381333932", "Invalid GTIN check digit for '04006381333932'"),
        ("]C1XYZ", "Failed to get GS1 Application Identifier from 'XYZ'"),
        ("]C10104006381333931\x1d17251399", "GS1 AI (17) pattern"),
        ("]", "bad AIM symbology identifier"),
        ("]Yx1", "bad AIM symbology identifier"),
        ("", "empty read"),
    ],
)
def test_bad_reads_become_invalid_with_biips_reason(raw: str, reason: str) -> None:
    event = interpret(raw, source="lane1", time=T)
    assert event.kind == "invalid"
    assert event.error is not None
    assert reason in event.error
    assert event.raw == raw
    assert not event.is_sscc


@pytest.mark.parametrize(
    "raw",
    [
        "00340123450000000017",
        "]C100340123450000000017",
        "340123450000000017",
        "\x1d00340123450000000017",
    ],
)
def test_sscc_is_flagged_for_transit_receive(raw: str) -> None:
    event = interpret(raw, source="dock", time=T)
    assert event.kind == "sscc"
    assert event.is_sscc
    assert event.sscc == "340123450000000017"
    assert event.label == "340123450000000017"


@pytest.mark.parametrize("sep", ["\x1d", "|"])
def test_gs1_datamatrix_with_gs_or_pipe(sep: str) -> None:
    raw = f"]d20104006381333931{sep}10ABC123{sep}17261231"
    event = interpret(raw, source="lane1", time=T)
    assert event.kind == "gs1"
    assert event.symbology == "]d2"
    assert event.symbology_name == "GS1_DATAMATRIX"
    assert event.gtin == "04006381333931"
    assert event.elements == (("01", "04006381333931"), ("10", "ABC123"), ("17", "261231"))
    assert event.label == "(01)04006381333931(10)ABC123(17)261231"


def test_gs1_128_pallet_label_with_sscc_and_more() -> None:
    event = interpret("]C100340123450000000017\x1d02040063813339313712", source="d", time=T)
    assert event.kind == "sscc"
    assert event.is_sscc
    assert ("37", "12") in event.elements


@pytest.mark.parametrize(
    ("raw", "label", "name"),
    [("HELLO-123", "HELLO-123", None), ("]A0LOYALTY42", "LOYALTY42", "CODE_39"),
     ("]Q1https://example.com/x", "https://example.com/x", "QR_CODE"), ("10ABC", "10ABC", None),
     ("]C04006381333932", "4006381333932", "CODE_128")],
)  # fmt: skip
def test_non_gs1_codes_pass_through_raw(raw: str, label: str, name: str | None) -> None:
    event = interpret(raw, source="lane1", time=T)
    assert (event.kind, event.label, event.symbology_name, event.error) == (
        "unknown",
        label,
        name,
        None,
    )


def test_rcn_needs_a_region_for_variable_measure() -> None:
    plain = interpret("2302148210005", source="l", time=T)
    assert plain.kind == "gtin"
    assert plain.variable_weight is None
    norway = interpret("2302148210005", source="l", time=T, rcn_region="no")
    assert norway.kind == "gtin"
    assert norway.variable_weight == Decimal("1")
    germany = interpret("2302148210005", source="l", time=T, rcn_region="de")
    assert germany.kind == "invalid"
    assert germany.error is not None
    assert "variable measure" in germany.error


@given(st.text(max_size=40))
def test_interpret_never_raises(raw: str) -> None:
    event = interpret(raw, source="x", time=T)
    assert event.kind in {"gtin", "sscc", "gs1", "unknown", "invalid"}
    assert (event.kind == "invalid") == (event.error is not None)
