"""POS batches (seed 002): sales tax from the batch's location, line and fulfil status.

A POS batch ties a store's sales to a country, state and warehouse; every taxable line is taxed
by that location's definition, not by where goods ship. A line is either proforma (not
fulfilled, no invoice number or date) or active (pre-shipped, invoice number and date set), and
changing either status moves the other, so the pair can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from headoffice.extract.config import PosBatch, TaxDefinition
from headoffice.extract.documents import Line
from protocol.errors import LanesyncError
from protocol.money import tax_contained

FULFIL_FOR = {"proforma": "not_fulfilled", "active": "pre_shipped"}
LINE_FOR = {v: k for k, v in FULFIL_FOR.items()}


class BatchError(LanesyncError):
    """A status change that the POS batch rules do not allow; names the field."""

    code = "extract_batch"


@dataclass(frozen=True, slots=True)
class OrderLine:
    line_no: int
    item: str
    warehouse: str
    line_status: str
    fulfil_status: str
    invoice_no: str | None
    invoice_date: str | None
    sales_tax: int


def set_line_status(line: OrderLine, status: str, invoice_no: str, invoice_date: str) -> OrderLine:
    """Proforma clears the invoice and un-fulfils; active pre-ships and sets the invoice."""
    if status not in FULFIL_FOR:
        raise BatchError(f"line_status: must be one of {', '.join(FULFIL_FOR)}, got {status!r}")
    active = status == "active"
    return replace(
        line,
        line_status=status,
        fulfil_status=FULFIL_FOR[status],
        invoice_no=invoice_no if active else None,
        invoice_date=invoice_date if active else None,
    )


def set_fulfil_status(
    line: OrderLine, fulfil: str, invoice_no: str, invoice_date: str
) -> OrderLine:
    """The other direction: fulfil status decides the line status."""
    if fulfil not in LINE_FOR:
        raise BatchError(f"fulfil_status: must be one of {', '.join(LINE_FOR)}, got {fulfil!r}")
    return set_line_status(line, LINE_FOR[fulfil], invoice_no, invoice_date)


def location_tax(line: Line, amount: int, tax: TaxDefinition) -> int:
    """Sales tax of a line at the batch location (tax-inclusive amounts, rounded half up)."""
    if line.tax_code in tax.exempt_tax_codes:
        return 0
    return tax_contained(amount, tax.rate)


def order_line(
    line: Line, amount: int, batch: PosBatch, tax: TaxDefinition, invoice_no: str, day: str
) -> OrderLine:
    """A new line added through the batch, in the batch's default line status."""
    blank = OrderLine(line.line_no, line.item, batch.warehouse, "", "", None, None, 0)
    blank = replace(blank, sales_tax=location_tax(line, amount, tax))
    return set_line_status(blank, batch.default_line_status, invoice_no, day)
