"""Realistic sale documents for the demo and benchmarks: lines, tax, tenders that reconcile.

Amounts are integer minor units; quantities are decimal strings with three places; the card
tender carries a token, scheme and last four digits, never a card number.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

ITEMS = [
    ("P1000", "Espresso beans 1kg", 1899, "VAT_STD"),
    ("P2000", "Oat milk 1l", 249, "VAT_RED"),
    ("P3000", "Croissant", 179, "VAT_RED"),
    ("P4000", "Ceramic mug", 1250, "VAT_STD"),
    ("P5000", "Paper filters x100", 399, "VAT_STD"),
    ("P6000", "Sparkling water 0.5l", 129, "VAT_RED"),
]
TAX_RATE_BP = {"VAT_STD": 2000, "VAT_RED": 700}  # basis points, tax-inclusive prices
CUSTOMERS = ["C1000", "C2000", "C3000", None]
LETTERS = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"


def sale(
    rng: random.Random,
    store: str,
    lane: str,
    register_no: int,
    price_of: Callable[[str], int | None] | None = None,
) -> dict[str, Any]:
    """A sale of ITEMS; `price_of`: today's price of an item as the lane's catalog says (a
    till asks its lane), else ITEMS' list price."""
    lines = []
    total = 0
    for line_no in range(1, rng.randint(1, 5) + 1):
        code, name, list_price, tax = rng.choice(ITEMS)
        price = (price_of(code) if price_of is not None else None) or list_price
        qty = rng.randint(1, 3)
        amount = price * qty
        total += amount
        lines.append(
            {
                "line_no": line_no,
                "item": code,
                "description": name,
                "qty": f"{qty}.000",
                "unit_price": price,
                "tax_code": tax,
                "amount": amount,
                # tax contained in a tax-inclusive amount, rounded half up in minor units
                "tax": (amount * TAX_RATE_BP[tax] + (10000 + TAX_RATE_BP[tax]) // 2)
                // (10000 + TAX_RATE_BP[tax]),
            }
        )
    if rng.random() < 0.6:
        payments = [
            {
                "tender": "card",
                "amount": total,
                # processor tokens are opaque; letters only so no digit run resembles a PAN
                "token": "tok_" + "".join(rng.choices(LETTERS, k=20)),
                "scheme": rng.choice(["visa", "mastercard", "amex"]),
                "last4": f"{rng.randint(0, 9999):04d}",
            }
        ]
    else:
        payments = [{"tender": "cash", "amount": total}]
    return {
        "kind": "sale",
        "register_no": f"T{lane[-1:] if lane[-1:].isdigit() else '1'}{register_no:04d}",
        "store": store,
        "lane": lane,
        "customer": rng.choice(CUSTOMERS),
        "currency": "EUR",
        "lines": lines,
        "payments": payments,
        "total": total,
    }
