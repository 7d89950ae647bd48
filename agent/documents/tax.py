"""Tax rates by date: the rate that applies is the one valid on the document's date.

The purchasing seed: tax amounts are calculated using the rates at the date of the invoice or
document, not current tax rates. A rate is valid from its `from` date (inclusive) until the
next rate of the same code starts. Rates are integer basis points (2000 = 20 %).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True, slots=True)
class TaxRate:
    code: str
    valid_from: date
    rate_bp: int


class TaxTable:
    """All configured rates, looked up by code and date."""

    def __init__(self, rates: Iterable[TaxRate] = ()) -> None:
        by_code: dict[str, list[TaxRate]] = {}
        for r in rates:
            by_code.setdefault(r.code, []).append(r)
        self._by_code = {c: sorted(rs, key=lambda r: r.valid_from) for c, rs in by_code.items()}
        self._starts = {c: [r.valid_from for r in rs] for c, rs in self._by_code.items()}

    def __bool__(self) -> bool:
        return bool(self._by_code)

    def knows(self, code: str) -> bool:
        return code in self._by_code

    def rate(self, code: str, on: date) -> int | None:
        """Basis points of `code` on `on`, or None (unknown code, or before its first rate)."""
        starts = self._starts.get(code)
        if not starts:
            return None
        i = bisect.bisect_right(starts, on) - 1
        return self._by_code[code][i].rate_bp if i >= 0 else None
