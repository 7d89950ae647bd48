"""SSCC numbers for transit parcels: GS1 company prefix, lane range, journal serial, check digit.

SSCC-18 = extension digit + company prefix + serial reference + check digit. The serial
reference starts with this lane's `sscc_lane_prefix` (unique per lane across the chain, from
configuration) followed by a counter kept in the journal database, so no two lanes and no two
parcels of one lane share a number. The check digit is protocol.screen's (GS1 7.9.1); the
printed form comes from biip.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.errors import ProtocolError
from protocol.screen import gs1_check_digit


@dataclass(frozen=True, slots=True)
class SsccScheme:
    company_prefix: str  # 7..10 digits, from the chain's GS1 membership
    lane_prefix: str  # digits unique to this lane
    extension_digit: int = 0

    @property
    def counter_digits(self) -> int:
        return 16 - len(self.company_prefix) - len(self.lane_prefix)

    @property
    def max_serial(self) -> int:
        return int(10**self.counter_digits) - 1

    def make(self, serial: int) -> str:
        """The SSCC for counter value `serial` (1-based)."""
        if not 1 <= serial <= self.max_serial:
            raise ProtocolError(
                f"SSCC serial {serial} is outside 1..{self.max_serial} for company prefix "
                f"{self.company_prefix} and lane prefix {self.lane_prefix!r}; the lane's SSCC "
                "range is exhausted",
                "sscc",
            )
        payload = (
            f"{self.extension_digit}{self.company_prefix}{self.lane_prefix}"
            f"{serial:0{self.counter_digits}d}"
        )
        return payload + str(gs1_check_digit(payload))

    def hri(self, sscc: str) -> str:
        from biip.sscc import Sscc  # noqa: PLC0415 - biip costs a lane 16 MB: only for labels

        return Sscc.parse(sscc).as_hri(company_prefix_length=len(self.company_prefix))


def check_sscc(value: object, field: str) -> str:
    """An 18-digit SSCC with a valid GS1 check digit.

    The refusal says what is wrong without the value (biip's message quotes it, and what a
    POS sends as an SSCC may be a card number).
    """
    if type(value) is not str:
        raise ProtocolError(f"must be an 18-digit SSCC string, got {type(value).__name__}", field)
    if value != value.strip():
        raise ProtocolError("must not have surrounding spaces", field)
    if len(value) != 18 or not value.isascii() or not value.isdigit():
        raise ProtocolError(f"an SSCC is 18 digits, got {len(value)} characters", field)
    if gs1_check_digit(value[:-1]) != int(value[-1]):
        raise ProtocolError("not an SSCC: the GS1 check digit does not match", field)
    return value


def label_text(
    sscc: str,
    hri: str,
    source_store: str,
    dest_store: str,
    by: str,
    register_no: str,
    lines: int,
    units: str,
) -> str:
    """Plain text for the parcel label printer: what a person at the other store reads."""
    return "\n".join(
        [
            f"TRANSIT {register_no}",
            f"FROM {source_store}  TO {dest_store}",
            f"BY {by}",
            f"{lines} LINES  {units} UNITS",
            f"(00) {sscc}",
            f"SSCC {hri}",
        ]
    )
