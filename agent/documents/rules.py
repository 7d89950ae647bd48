"""Documents against the lane's catalog: what head office's master data says a lane may journal.

The structural rules (fields, sums, tenders) live per kind (sales, purchase, stock); here is
what only the catalog knows: the item exists (by code or GTIN) and is active, its price and
the PriceOverride setting, its tax code and the rate valid on the document's date, the people
named (staff, customer, supplier, courier) exist and are active, a transit goes to an active
store that can receive stock, by a "by" its PurchTransitAllow* setting allows. Settings are
read from the view at each document, so a new version counts from the next document on, with
no restart; prices and rates go by the document's own moment, so a scheduled price applies at
its time on a lane that has been offline since it was loaded.

A lane that holds no catalog version refuses every document with `NoCatalog` (503): it cannot
price, tax or check anything, and guessing would journal documents head office must undo.
`[catalog] trade_without = true` (a lab's or a benchmark's lane, never a chain's) lets such a
lane journal documents on their own figures: structure and sums are checked, the catalog's
rules are not, settings take their declared defaults, and the document says so with
`catalog_version` 0.

Refusals name the field and the rule: `$.lines[2].item: no item 'P9999' in catalog version 41`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from agent.catalog.lookup import NoCatalog
from agent.catalog.view import CatalogView, Price
from agent.documents import fields as f
from protocol import catalog as contract
from protocol.errors import ProtocolError
from protocol.identity import LaneId

BY_SETTINGS = {
    "staff": "PurchTransitAllowStaff",
    "customer": "PurchTransitAllowCustomer",
    "supplier": "PurchTransitAllowSupplier",
    "courier": "PurchTransitAllowCourier",
}
PRICE_REASON = "price_reason"  # a line's key: why its unit_price is not the catalog's


__all__ = ["CatalogFile", "NoCatalog", "Rules", "checking"]


class CatalogFile:
    """The lane's catalog file, opened read-only on first use once it exists (the agent's
    catalog sync creates it; a lane that never reached head office has none)."""

    def __init__(self, path: str | Path | None, lane: LaneId) -> None:
        self.path = None if path is None else Path(path)
        self.lane = lane
        self._view: CatalogView | None = None

    def view(self) -> CatalogView | None:
        if self._view is None and self.path is not None and self.path.exists():
            self._view = CatalogView(self.path, self.lane)
        return self._view

    def close(self) -> None:
        if self._view is not None:
            self._view.close()
            self._view = None


@dataclass(frozen=True, slots=True)
class Settings:
    """The settings a document is checked with (protocol.catalog.SETTINGS), read once."""

    values: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


def defaults() -> Settings:
    return Settings({name: s.default for name, s in contract.SETTINGS.items()})


class Rules:
    """One document's view of the catalog: a version, its settings and its lookups.

    Made by `checking()` inside the view's read snapshot, so every answer comes from one
    version; `catalog is None` is a lane trading without one (see the module docstring).
    """

    def __init__(self, catalog: CatalogView | None) -> None:
        self.catalog = catalog
        self.version = 0 if catalog is None else catalog.version
        self._settings: Settings | None = None if catalog is not None else defaults()

    @property
    def settings(self) -> Settings:
        """Read on first use, from the same snapshot as every other lookup."""
        if self._settings is None:
            assert self.catalog is not None
            self._settings = Settings(self.catalog.settings())
        return self._settings

    @property
    def checks(self) -> bool:
        return self.catalog is not None

    def _where(self) -> str:
        return f"in catalog version {self.version}"

    # --- items, prices, tax ---------------------------------------------------------------

    def item(self, code: str, path: str, *, sold: bool = True) -> dict[str, Any] | None:
        """The item row of `code` (an item code or a GTIN), refused if the catalog has none;
        `sold`: an inactive item is refused too (a return of one is not)."""
        if self.catalog is None:
            return None
        row = self.catalog.item(code)
        if row is None and code.isdigit():
            row = self.catalog.item_by_gtin(code)
        if row is None:
            raise ProtocolError(f"no item {f.shown(code)} {self._where()}", path)
        if sold and not row["active"]:
            raise ProtocolError(f"item {row['code']!r} is inactive {self._where()}", path)
        return row

    def price(self, item: dict[str, Any], at: datetime) -> Price | None:
        assert self.catalog is not None
        return self.catalog.price(item["code"], at)

    def check_price(
        self, line: dict[str, Any], item: dict[str, Any] | None, at: datetime, path: str
    ) -> None:
        """A sold line's unit_price against the catalog's price at the document's moment,
        by PriceOverride: allowed, reason (the line's price_reason says why) or refused."""
        if item is None:
            return
        price = self.price(item, at)
        sent = line["unit_price"]
        if price is not None and price.price == sent:
            if PRICE_REASON in line:
                f.text(line, PRICE_REASON, path, max_len=200)
            return
        mode = self.settings["PriceOverride"]
        known = (
            f"the catalog's price is {price.price} ({price.scope}, from {price.valid_from})"
            if price is not None
            else f"the catalog has no price for it on {at.date()}"
        )
        if mode == "refused":
            raise ProtocolError(
                f"{sent} is not the price of {item['code']!r} {self._where()}: {known}; "
                "price overrides are refused here (PriceOverride=refused)",
                f"{path}.unit_price",
            )
        if mode == "reason" and PRICE_REASON not in line:
            raise ProtocolError(
                f"{sent} is not the price of {item['code']!r} {self._where()}: {known}; "
                f"an override needs {PRICE_REASON} (PriceOverride=reason)",
                f"{path}.{PRICE_REASON}",
            )
        f.text(line, PRICE_REASON, path, required=False, max_len=200)

    def check_tax_code(self, line: dict[str, Any], item: dict[str, Any] | None, path: str) -> None:
        if item is not None and line["tax_code"] != item["tax_code"]:
            raise ProtocolError(
                f"item {item['code']!r} is taxed {item['tax_code']} {self._where()}, "
                f"not {f.shown(line['tax_code'])}",
                f"{path}.tax_code",
            )

    def tax_rate(self, code: str, on: date, path: str) -> int | None:
        """The rate of `code` valid on `on` (the document's date, not today); refused when
        the catalog has none; None on a lane trading without a catalog."""
        if self.catalog is None:
            return None
        rate = self.catalog.tax_rate(code, on)
        if rate is None:
            raise ProtocolError(f"no {f.shown(code)} tax rate valid on {on} {self._where()}", path)
        return rate

    # --- people and stores ----------------------------------------------------------------

    def _active(
        self, what: str, code: Any, path: str, lookup: Callable[[CatalogView, str], Any]
    ) -> Any:
        if self.catalog is None or code is None:
            return None
        row = lookup(self.catalog, code)
        if row is None:
            raise ProtocolError(f"no {what} {f.shown(code)} {self._where()}", path)
        if not row["active"]:
            raise ProtocolError(f"{what} {f.shown(code)} is inactive {self._where()}", path)
        return row

    def staff(self, code: Any, path: str) -> Any:
        return self._active("staff", code, path, lambda v, c: v.staff(c))

    def customer(self, code: Any, path: str) -> Any:
        return self._active("customer", code, path, lambda v, c: v.customer(c))

    def supplier(self, code: Any, path: str) -> Any:
        return self._active("supplier", code, path, lambda v, c: v.supplier(c))

    def courier(self, code: Any, path: str) -> Any:
        return self._active("courier", code, path, lambda v, c: v.courier(c))

    def person(self, kind: str, code: str, path: str) -> Any:
        return {
            "staff": self.staff,
            "customer": self.customer,
            "supplier": self.supplier,
            "courier": self.courier,
        }[kind](code, path)

    def allows_by(self, kind: str) -> bool:
        return bool(self.settings[BY_SETTINGS[kind]])

    def dest_store(self, store: str, path: str) -> None:
        """A transit's destination: an active store that can receive stock (the selector)."""
        if self.catalog is None:
            return
        row = self.catalog.store(store)
        if row is None:
            raise ProtocolError(f"no store {f.shown(store)} {self._where()}", path)
        if not row["active"]:
            raise ProtocolError(f"store {store!r} is inactive {self._where()}", path)
        if not row["can_receive_stock"]:
            raise ProtocolError(
                f"store {store!r} cannot receive stock {self._where()} (can_receive_stock 0)",
                path,
            )

    def known_store(self, store: str, path: str) -> None:
        if self.catalog is not None and self.catalog.store(store) is None:
            raise ProtocolError(f"no store {f.shown(store)} {self._where()}", path)


@contextmanager
def checking(source: CatalogView | CatalogFile | None, trade_without: bool) -> Iterator[Rules]:
    """The rules of one document, inside one read snapshot of the catalog (raises
    agent.catalog.lookup.NoCatalog, 503, when the lane holds none and may not trade without)."""
    catalog = source.view() if isinstance(source, CatalogFile) else source
    if catalog is None:
        if not trade_without:
            raise NoCatalog(
                "no catalog yet: this lane has not received its store's master data from head "
                "office (see `lanesync status`); documents are refused until it has"
            )
        yield Rules(None)
        return
    with catalog.one_version():
        try:
            version = catalog.version
        except sqlite3.OperationalError as exc:  # the file exists, its tables not yet
            if "no such table" not in str(exc):
                raise
            version = 0
        if version == 0:
            if not trade_without:
                raise NoCatalog(
                    "no catalog yet: this lane has not received its store's master data from "
                    "head office (see `lanesync status`); documents are refused until it has"
                )
            yield Rules(None)
            return
        yield Rules(catalog)
