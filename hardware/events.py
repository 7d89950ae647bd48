"""Events hardware/ hands to the rest of the agent.

Modelled on UnifiedPOS Scanner: a `ScanEvent` carries the raw data, the decoded label, the
symbology, the source device and the time; a bad read is a `ScanEvent` of kind "invalid" with
its reason, never a missing event. `DeviceEvent` reports a device's state changes and faults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

__all__ = ["DeviceEvent", "DeviceState", "HardwareEvent", "ScanEvent", "ScanKind"]

ScanKind = Literal["gtin", "sscc", "gs1", "unknown", "invalid"]
DeviceState = Literal["connected", "disconnected", "missing", "error", "overflow"]


@dataclass(frozen=True, slots=True)
class ScanEvent:
    """One read from one scanner, interpreted.

    `raw` is exactly what the scanner sent (AIM identifier included); `label` is the data a
    cashier would key in (GTIN, SSCC, GS1 HRI, or the raw body for unknown codes). `is_sscc`
    marks scans the transit receive flow must pick up.
    """

    raw: str
    label: str
    kind: ScanKind
    source: str
    time: datetime
    symbology: str | None = None
    symbology_name: str | None = None
    is_sscc: bool = False
    error: str | None = None
    gtin: str | None = None
    sscc: str | None = None
    elements: tuple[tuple[str, str], ...] = field(default=())
    variable_weight: Decimal | None = None
    variable_price: Decimal | None = None
    variable_count: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form for `--json` output and diagnostics."""
        out = asdict(self)
        out["time"] = self.time.isoformat()
        out["elements"] = [list(pair) for pair in self.elements]
        for key in ("variable_weight", "variable_price"):
            if out[key] is not None:
                out[key] = str(out[key])
        out["event"] = "scan"
        return out


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """A device changed state or failed; `detail` says why, naming the path and error."""

    source: str
    state: DeviceState
    detail: str
    time: datetime
    path: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["time"] = self.time.isoformat()
        out["event"] = "device"
        return out


HardwareEvent = ScanEvent | DeviceEvent
