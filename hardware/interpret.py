"""Turn a raw read into a `ScanEvent` with biip: GTIN, SSCC, GS1 element strings or unknown.

Policy: a read that claims to be GS1 (by its AIM symbology identifier, a GS separator, or a
leading AI 00/01/02) or has the exact digit count of a GTIN or SSCC must parse and pass its
check digits, else it is "invalid" with biip's reason. Anything else passes through as "unknown"
with the raw data, so non-GS1 codes (Code 39 loyalty cards, QR URLs) are not guessed at.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime

import biip
from biip import ParseConfig, ParseError
from biip.gs1_messages import GS1Message
from biip.gtin import Gtin
from biip.rcn import Rcn
from biip.symbology import GS1Symbology, SymbologyIdentifier

from hardware.events import ScanEvent

__all__ = ["GS", "ScanEvent", "interpret"]

GS = "\x1d"
# `|` is outside the GS1 character sets, so scanners programmed to send it instead of GS (or
# people typing a DataMatrix by hand) cannot collide with element string data.
SEPARATORS = (GS, "|")
_GTIN_LENGTHS = frozenset({8, 12, 13, 14})
_SSCC_LENGTH = 18
_KEY_AI_PREFIX = re.compile(r"^(?:00\d{18}|0[12]\d{14})")


def interpret(
    raw: str,
    *,
    source: str,
    time: datetime,
    rcn_region: str | None = None,
) -> ScanEvent:
    """Classify and validate one read; never raises on any input string."""
    base = ScanEvent(raw=raw, label=raw, kind="invalid", source=source, time=time)
    if not raw.strip():
        return replace(base, error="empty read")
    symbology: SymbologyIdentifier | None = None
    body = raw
    if raw.startswith("]"):
        try:
            symbology = SymbologyIdentifier.extract(raw)
        # biip.parse lets IndexError/ValueError escape for ']', ']Y', ']Yx'; catch them here.
        except (ParseError, IndexError, ValueError) as exc:
            return replace(base, error=f"bad AIM symbology identifier in {raw[:4]!r}: {exc}")
        body = raw[len(symbology) :]
        gs1_sym = symbology.gs1_symbology
        base = replace(
            base,
            symbology=symbology.value,
            symbology_name=gs1_sym.name if gs1_sym else symbology.iso_symbology.name,
        )
    # biip strips whitespace before parsing, and str.strip() treats GS (0x1d) as whitespace, so
    # a leading FNC1 sent as GS or a trailing GS is dropped by biip; we do the same for checks.
    core = body.strip()
    if not core:
        return replace(base, error="empty read after symbology identifier")

    expect = _expectation(symbology, core)
    if expect == "unknown":
        return replace(base, kind="unknown", label=core)

    config = ParseConfig(rcn_region=rcn_region, separator_chars=SEPARATORS)
    try:
        result = biip.parse(raw, config=config)
    except (ParseError, ValueError, IndexError) as exc:  # defensive: biip raising, not reporting
        return replace(base, error=f"biip could not parse the read: {exc}")

    if expect == "gtin":
        if result.gtin is None:
            return replace(base, error=result.gtin_error or "not a GTIN")
        return _with_gtin(replace(base, kind="gtin", label=result.gtin.value), result.gtin)
    if expect == "sscc":
        if result.sscc is None:
            return replace(base, error=result.sscc_error or "not an SSCC")
        sscc = result.sscc.value
        return replace(base, kind="sscc", label=sscc, sscc=sscc, is_sscc=True)
    return _gs1(base, result)


def _expectation(symbology: SymbologyIdentifier | None, core: str) -> str:
    if symbology is not None:
        gs1 = symbology.gs1_symbology
        if gs1 in GS1Symbology.with_gtin():
            return "gtin"
        if gs1 in GS1Symbology.with_gs1_messages():
            return "gs1"
        return "unknown"  # e.g. ]A0 Code 39, ]C0 plain Code 128, ]Q1 plain QR
    if core.isdigit() and core.isascii():
        if len(core) in _GTIN_LENGTHS:
            return "gtin"
        if len(core) == _SSCC_LENGTH:
            return "sscc"
    if GS in core or _KEY_AI_PREFIX.match(core):
        return "gs1"
    return "unknown"


def _gs1(base: ScanEvent, result: biip.ParseResult) -> ScanEvent:
    message: GS1Message | None = result.gs1_message
    if message is None or not message.element_strings:
        return replace(base, error=result.gs1_message_error or "GS1 message has no element strings")
    elements = tuple((es.ai.ai, es.value) for es in message.element_strings)
    ais = {ai for ai, _ in elements}
    # GS1Message.parse checks AI patterns only; the SSCC/GTIN check digits are verified when
    # biip promotes AI 00/01 to result.sscc/result.gtin, so their errors must be honoured here.
    if "00" in ais and result.sscc is None:
        return replace(base, error=result.sscc_error or "AI (00) is not a valid SSCC")
    if "01" in ais and result.gtin is None:
        return replace(base, error=result.gtin_error or "AI (01) is not a valid GTIN")
    event = replace(base, kind="gs1", label=message.as_hri(), elements=elements)
    if result.gtin is not None:
        event = _with_gtin(event, result.gtin)
    if result.sscc is not None:
        sscc = result.sscc.value
        event = replace(event, kind="sscc", label=sscc, sscc=sscc, is_sscc=True)
    return event


def _with_gtin(event: ScanEvent, gtin: Gtin) -> ScanEvent:
    """Add the GTIN and, for a restricted circulation number, its variable measure."""
    event = replace(event, gtin=gtin.value)
    if isinstance(gtin, Rcn):  # only set when biip knows the region's RCN rules
        event = replace(
            event,
            variable_weight=gtin.weight,
            variable_price=gtin.price,
            variable_count=gtin.count,
        )
    return event
