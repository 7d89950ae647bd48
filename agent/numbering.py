"""How a lane numbers what it issues: the [documents] and [transit] tables of its TOML.

A module of its own because both agent.config (which parses these tables) and
agent.documents (whose rules use them) need the types, and neither may import the other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DocumentsConfig:
    """[documents]: how this lane numbers its documents (its currency and time zone are its
    store's, from head office's catalog)."""

    register_prefix: str | None = None  # "T1" -> T10001; default "T" + the lane's last digit


@dataclass(frozen=True, slots=True)
class TransitConfig:
    """[transit]: the lane's SSCC numbering and how long it waits for head office (which
    "by" tabs are allowed, and whether a quantity is asked, are head office's settings)."""

    gs1_company_prefix: str | None = None  # 7..10 digits; transits need it for their SSCC
    sscc_lane_prefix: str = ""  # digits unique to this lane across the chain
    sscc_extension_digit: int = 0
    receive_timeout_s: float = 5.0  # a transit lookup/accept fails after this without head office
