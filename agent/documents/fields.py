"""Field readers shared by every document kind; each error names the JSON path at fault."""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from datetime import date
from decimal import Decimal
from typing import Any

from protocol import money
from protocol.errors import ProtocolError
from protocol.pan import mask_text

CODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}")  # item, customer, staff, supplier
TAX_CODE_RE = re.compile(r"[A-Z0-9_]{1,16}")
SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")  # store ids, as in topic segments
MAX_LINES = 1000
MAX_PAYMENTS = 32


def shown(value: Any) -> str:
    """A sent value quoted in a refusal: shortened, and masked (protocol.pan), because a
    refusal is shown, logged and kept and must never carry a card number."""
    return mask_text(repr(value)[:64])


def only_keys(m: Mapping[str, Any], allowed: Set[str], path: str) -> None:
    """Refuse unknown keys: a typo must not pass silently."""
    for k in m:
        if k not in allowed:
            raise ProtocolError(
                f"unknown key {shown(k)}; allowed here: {', '.join(sorted(allowed))}",
                f"{path}.{k}" if path != "$" else f"$.{k}",
            )


def text(
    m: Mapping[str, Any],
    key: str,
    path: str,
    *,
    required: bool = True,
    nullable: bool = False,
    pattern: re.Pattern[str] | None = None,
    max_len: int = 200,
) -> str | None:
    p = f"{path}.{key}"
    if key not in m or (nullable and m[key] is None):
        if required and not nullable:
            raise ProtocolError("required", p)
        return None
    v = m[key]
    if type(v) is not str:
        raise ProtocolError(f"must be a string, got {type(v).__name__}", p)
    if not v or len(v) > max_len:
        raise ProtocolError(f"must be 1..{max_len} characters", p)
    if pattern is not None and not pattern.fullmatch(v):
        raise ProtocolError(f"{shown(v)} does not match {pattern.pattern}", p)
    return v


def req_text(
    m: Mapping[str, Any],
    key: str,
    path: str,
    pattern: re.Pattern[str] | None = None,
    max_len: int = 200,
) -> str:
    v = text(m, key, path, pattern=pattern, max_len=max_len)
    assert v is not None
    return v


def amount(m: Mapping[str, Any], key: str, path: str, *, lo: int = 0) -> int:
    if key not in m:
        raise ProtocolError("required", f"{path}.{key}")
    return money.money(m[key], f"{path}.{key}", lo=lo if lo >= 0 else -money.MAX_MONEY)


def opt_amount(m: Mapping[str, Any], key: str, path: str, *, lo: int = 0) -> int | None:
    if m.get(key) is None:
        return None
    return amount(m, key, path, lo=lo)


def quantity(m: Mapping[str, Any], key: str, path: str) -> Decimal:
    if key not in m:
        raise ProtocolError("required", f"{path}.{key}")
    return money.qty(m[key], f"{path}.{key}")


def boolean(m: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    v = m.get(key, default)
    if type(v) is not bool:
        raise ProtocolError(f"must be true or false, got {type(v).__name__}", f"{path}.{key}")
    return v


def day(m: Mapping[str, Any], key: str, path: str) -> date | None:
    v = m.get(key)
    if v is None:
        return None
    p = f"{path}.{key}"
    if type(v) is not str or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", v):
        raise ProtocolError(f"must be a date YYYY-MM-DD, got {shown(v)}", p)
    try:
        return date.fromisoformat(v)
    except ValueError as exc:
        raise ProtocolError(f"not a calendar date: {exc}", p) from None


def items(m: Mapping[str, Any], key: str, path: str, max_len: int) -> list[Any]:
    p = f"{path}.{key}"
    v = m.get(key)
    if v is None:
        raise ProtocolError("required (a list)", p)
    if type(v) is not list:
        raise ProtocolError(f"must be a list, got {type(v).__name__}", p)
    if len(v) > max_len:
        raise ProtocolError(f"at most {max_len} entries, got {len(v)}", p)
    return v


def mapping(value: Any, path: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise ProtocolError(f"must be an object, got {type(value).__name__}", path)
    return value


def line_numbers(lines: list[dict[str, Any]], path: str) -> None:
    """Lines are numbered 1, 2, 3 ...; the agent numbers them when the POS did not."""
    for i, line in enumerate(lines):
        p = f"{path}[{i}].line_no"
        if "line_no" not in line:
            line["line_no"] = i + 1
        elif type(line["line_no"]) is not int or line["line_no"] != i + 1:
            raise ProtocolError(f"must be {i + 1} (lines are numbered 1, 2, 3 ...)", p)
