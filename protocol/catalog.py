"""The catalog contract of protocol/CATALOG.md as code: datasets, rows, hashes and payloads.

Head office and the lanes both build on this module, so a row head office accepts is a row a
lane accepts, both compute the same digest for it and both read the same payloads. It is pure
(no I/O): the head-office loader and store, and the lane's replicator, do the reading and
writing. Every refusal is a CatalogError naming the column (or payload field) at fault, never
quoting a value that might be a card number.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, ClassVar, NoReturn

import msgpack

from protocol import screen
from protocol.codec import unpack
from protocol.errors import ProtocolError
from protocol.identity import SEGMENT_RE, check_segment
from protocol.pan import PAN_INT_MIN, is_pan_int, mask_text

CATALOG_TYPE = "cat"  # `t` of a store's retained head
CATALOG_PROTOCOL_VERSION = 1
OP_DELTA = "catalog_delta"
OP_SNAPSHOT = "catalog_snapshot"
SNAPSHOT_NEEDED = "snapshot_needed"  # refusal code: head office cannot produce that delta
SNAPSHOT_EXPIRED = "snapshot_expired"  # refusal code: that version's rows are gone
UNREGISTERED = "unregistered"  # refusal code: a store the registry does not list
BAD_REQUEST = "bad_request"  # refusal code: args that do not fit (the Reply's error says which)
# changes per catalog_delta reply (fewer when their rows' bytes pass DELTA_PAGE_BYTES)
MAX_DELTA_CHANGES = 2000
DELTA_PAGE_BYTES = 640 * 1024  # a delta page stops once its rows hold this many bytes
MAX_SNAPSHOT_CHUNK = 500  # rows per catalog_snapshot chunk, the most a lane may ask for: 500
# of the largest rows (an item of 32 GTINs and 256 four-byte characters, ~1.7 KB) stay under
# the 1 MiB message limit
INLINE_CHANGES = 256  # a head carries its delta inline when it is at most this many changes
HASH_LEN = 32
EMPTY_HASH = bytes(HASH_LEN)
CHAIN = "*"  # scope key of chain-wide rows
KEY_SEP = "|"  # joins a row's key columns; no key column type can hold it
MAX_SAFE = 1 << 53  # money and int columns: what every JSON and SQL side holds exactly
_MOD = 1 << 256
U63 = (1 << 63) - 1

Row = dict[str, Any]


class CatalogError(ProtocolError):
    """A row, cell or payload that does not fit the contract; `field` names the column."""


# --- column types ------------------------------------------------------------------------------

CODE_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")
DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
CURRENCY_RE = re.compile(r"[A-Z]{3}")
# IANA names: "UTC", "Europe/Dublin", "America/Argentina/Buenos_Aires", "Etc/GMT+5". Whether
# the zone exists is the loader's question (it has a tz database); this is the shape.
TIMEZONE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_+-]{0,31}(/[A-Za-z0-9_+-]{1,32}){0,3}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_TEXT = 256
GTIN_LENGTHS = (8, 12, 13, 14)
TRUE_CELLS = {"1": True, "true": True, "0": False, "false": False}


@dataclass(frozen=True, slots=True)
class Column:
    """A column: its type (see CATALOG.md), whether it may be absent, and enum words."""

    name: str
    type: str
    optional: bool = False
    choices: tuple[str, ...] = ()


def _fail(column: str, reason: str) -> CatalogError:
    return CatalogError(reason, column)


def _check_text(value: str, col: str, pattern: re.Pattern[str] | None, what: str) -> str:
    if pattern is not None:
        if not pattern.fullmatch(value):
            return _raise(col, f"must be {what}")
    else:
        if not 1 <= len(value) <= MAX_TEXT:
            return _raise(col, f"must be 1-{MAX_TEXT} characters, got {len(value)}")
        if _CONTROL.search(value):
            return _raise(col, "holds a control character")
    if len(value) >= 13 and screen.holds_pan(value):
        return _raise(col, screen.PAN_REASON)
    return value


def _raise(col: str, reason: str) -> NoReturn:
    raise _fail(col, reason)


def is_gtin(value: str) -> bool:
    """A GTIN-8, -12, -13 or -14 with a valid GS1 check digit."""
    return screen.gtin(value, None)


def _int_check(hi: int) -> Callable[[Column, Any], Any]:
    def check(column: Column, value: Any) -> int:
        if type(value) is not int:
            _raise(column.name, f"must be an integer, got {type(value).__name__}")
        if not 0 <= value < hi:
            _raise(column.name, f"must be 0..{hi - 1}")
        if value >= PAN_INT_MIN and is_pan_int(value):
            _raise(column.name, screen.PAN_REASON)
        return value

    return check


def _bool_check(column: Column, value: Any) -> bool:
    if type(value) is not bool:
        _raise(column.name, f"must be true or false, got {type(value).__name__}")
    return value


def _gtins_check(column: Column, value: Any) -> list[str]:
    col = column.name
    if type(value) is not list or not value:
        _raise(col, "must be a non-empty list of GTINs")
    if len(value) > 32:
        _raise(col, "holds more than 32 GTINs")
    for i, g in enumerate(value):
        if type(g) is not str or not is_gtin(g):
            _raise(f"{col}[{i}]", "must be a GTIN-8/12/13/14 with a valid check digit")
    if len(set(value)) != len(value):
        _raise(col, "lists a GTIN twice")
    return value


def _str_check(pattern: re.Pattern[str] | None, what: str = "text") -> Callable[[Column, Any], Any]:
    def check(column: Column, value: Any) -> str:
        if type(value) is not str:
            _raise(column.name, f"must be a string, got {type(value).__name__}")
        return _check_text(value, column.name, pattern, what)

    return check


@functools.lru_cache(maxsize=4096)
def _calendar_date(value: str) -> bool:
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _date_check(column: Column, value: Any) -> str:
    if type(value) is not str:
        _raise(column.name, f"must be a string, got {type(value).__name__}")
    if not DATE_RE.fullmatch(value):
        _raise(column.name, "must be a date YYYY-MM-DD")
    if not _calendar_date(value):
        _raise(column.name, f"{value} is not a calendar date")
    return value


def _enum_check(column: Column, value: Any) -> str:
    if type(value) is not str or value not in column.choices:
        _raise(column.name, f"must be one of {', '.join(column.choices)}")
    return value


def _setting_check(column: Column, value: Any) -> str:
    if type(value) is not str:
        _raise(column.name, f"must be a string, got {type(value).__name__}")
    if value not in SETTINGS:
        shown = mask_text(value[:40])
        _raise(column.name, f"unknown setting {shown!r}{_did_you_mean(value, SETTINGS)}")
    return value


_CHECKS: dict[str, Callable[[Column, Any], Any]] = {
    "money": _int_check(MAX_SAFE),
    "int": _int_check(MAX_SAFE),
    "bp": _int_check(100_001),
    "bool": _bool_check,
    "gtins": _gtins_check,
    "code": _str_check(CODE_RE, "1-32 characters of A-Z a-z 0-9 _ . -"),
    "id": _str_check(SEGMENT_RE, "1-32 characters of A-Z a-z 0-9 _ -"),
    "text": _str_check(None),
    "date": _date_check,
    "currency": _str_check(CURRENCY_RE, "an ISO 4217 code of 3 capital letters"),
    "timezone": _str_check(TIMEZONE_RE, "an IANA time zone name (Europe/Dublin)"),
    "enum": _enum_check,
    "setting": _setting_check,
}


def check_value(column: Column, value: Any) -> Any:
    """`value` if it is what `column` holds on the wire (and in JSON Lines), else CatalogError."""
    return _CHECKS[column.type](column, value)


def _parse_int(column: Column, cell: str) -> int:
    if not (cell.isascii() and cell.isdigit()):
        what = "integer minor units (998 is 9.98)" if column.type == "money" else "a whole number"
        _raise(column.name, f"must be {what}")
    if len(cell) > 17:
        _raise(column.name, f"must be 0..{(100_000 if column.type == 'bp' else MAX_SAFE - 1)}")
    checked: int = _CHECKS[column.type](column, int(cell))
    return checked


def _parse_bool(column: Column, cell: str) -> bool:
    v = TRUE_CELLS.get(cell.lower())
    if v is None:
        _raise(column.name, "must be 1, 0, true or false")
    return v


def _parse_gtins(column: Column, cell: str) -> list[str]:
    return _gtins_check(column, cell.split("|"))


_PARSES: dict[str, Callable[[Column, str], Any]] = {
    **_CHECKS,
    "money": _parse_int,
    "int": _parse_int,
    "bp": _parse_int,
    "bool": _parse_bool,
    "gtins": _parse_gtins,
}


def parse_cell(column: Column, cell: str) -> Any:
    """The value of a CSV cell (never empty: the caller treats an empty cell as absent)."""
    return _PARSES[column.type](column, cell)


# --- datasets ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dataset:
    """A dataset: its key columns, typed columns, scope rule and any rule across columns."""

    name: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    scope: Callable[[Mapping[str, Any]], str]
    rule: Callable[[Mapping[str, Any]], None] | None = None
    by_name: dict[str, Column] = field(default_factory=dict, compare=False)
    names: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        self.by_name.update({c.name: c for c in self.columns})
        object.__setattr__(self, "names", tuple(c.name for c in self.columns))

    @property
    def column_names(self) -> tuple[str, ...]:
        return self.names

    def key_of(self, row: Mapping[str, Any]) -> str:
        """The row's key: its key columns joined by `|` (an absent optional one is empty).
        Key columns are all strings (code, id, date, enum, setting)."""
        if len(self.key) == 1:
            return str(row[self.key[0]])
        return KEY_SEP.join([row.get(k) or "" for k in self.key])

    def scope_of(self, row: Mapping[str, Any]) -> str:
        return self.scope(row)


def _chain(row: Mapping[str, Any]) -> str:
    return CHAIN


def _by_store(row: Mapping[str, Any]) -> str:
    store = row.get("store")
    return CHAIN if store is None else f"S:{store}"


def _price_scope(row: Mapping[str, Any]) -> str:
    if row.get("store") is not None:
        return f"S:{row['store']}"
    if row.get("zone") is not None:
        return f"Z:{row['zone']}"
    return CHAIN


def _price_rule(row: Mapping[str, Any]) -> None:
    if row.get("store") is not None and row.get("zone") is not None:
        raise _fail("zone", "a price is for a store or for a price zone, not both")


def _setting_rule(row: Mapping[str, Any]) -> None:
    scope, store, lane = row["scope"], row.get("store"), row.get("lane")
    if scope == "chain" and (store is not None or lane is not None):
        raise _fail(
            "store" if store is not None else "lane", "a chain setting names no store or lane"
        )
    if scope == "store" and store is None:
        raise _fail("store", "a store setting needs the store")
    if scope == "store" and lane is not None:
        raise _fail("lane", "a store setting names no lane (use scope lane)")
    if scope == "lane" and (store is None or lane is None):
        raise _fail("store" if store is None else "lane", "a lane setting needs store and lane")
    setting_value(row["name"], row["value"], "value")


def _c(name: str, type_: str, optional: bool = False, *choices: str) -> Column:
    return Column(name, type_, optional, tuple(choices))


_ACTIVE = _c("active", "bool")
DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "items",
            ("code",),
            (
                _c("code", "code"),
                _c("gtins", "gtins", True),
                _c("description", "text"),
                _c("tax_code", "code"),
                _c("variant", "bool"),
                _ACTIVE,
            ),
            _chain,
        ),
        Dataset(
            "prices",
            ("item", "store", "zone", "valid_from"),
            (
                _c("item", "code"),
                _c("store", "id", True),
                _c("zone", "code", True),
                _c("valid_from", "date"),
                _c("price", "money"),
            ),
            _price_scope,
            _price_rule,
        ),
        Dataset(
            "tax_rates",
            ("code", "valid_from"),
            (_c("code", "code"), _c("valid_from", "date"), _c("rate_bp", "bp")),
            _chain,
        ),
        Dataset(
            "stores",
            ("id",),
            (
                _c("id", "id"),
                _c("name", "text"),
                _c("timezone", "timezone"),
                _c("currency", "currency"),
                _c("price_zone", "code", True),
                _c("can_receive_stock", "bool"),
                _ACTIVE,
            ),
            _chain,
        ),
        Dataset(
            "lanes",
            ("store", "lane"),
            (_c("store", "id"), _c("lane", "id"), _c("name", "text", True), _ACTIVE),
            _by_store,
        ),
        Dataset(
            "staff",
            ("id",),
            (_c("id", "code"), _c("name", "text"), _c("store", "id", True), _ACTIVE),
            _by_store,
        ),
        Dataset(
            "customers",
            ("code",),
            (_c("code", "code"), _c("name", "text"), _c("account_allowed", "bool"), _ACTIVE),
            _chain,
        ),
        Dataset("suppliers", ("code",), (_c("code", "code"), _c("name", "text"), _ACTIVE), _chain),
        Dataset("couriers", ("code",), (_c("code", "code"), _c("name", "text"), _ACTIVE), _chain),
        Dataset(
            "txn_types",
            ("code",),
            (
                _c("code", "code"),
                _c("name", "text"),
                _c("inventory_effect", "enum", False, "increase", "decrease", "none"),
            ),
            _chain,
        ),
        Dataset(
            "settings",
            ("scope", "store", "lane", "name"),
            (
                _c("scope", "enum", False, "chain", "store", "lane"),
                _c("store", "id", True),
                _c("lane", "id", True),
                _c("name", "setting"),
                _c("value", "text"),
            ),
            _by_store,
            _setting_rule,
        ),
    )
}
DATASET_ORDER = tuple(sorted(DATASETS))  # (dataset, key) order of deltas and snapshots


def dataset(name: str) -> Dataset:
    """The declared dataset `name`, or a CatalogError with "did you mean"."""
    d = DATASETS.get(name)
    if d is None:
        raise CatalogError(
            f"unknown dataset {mask_text(str(name)[:40])!r}{_did_you_mean(str(name), DATASETS)}; "
            f"known: {', '.join(DATASET_ORDER)}",
            "dataset",
        )
    return d


def _did_you_mean(word: str, known: Iterable[str]) -> str:
    import difflib  # noqa: PLC0415 - only for a mistyped name (a lane's start does not need it)

    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    if not close:
        lowered = {k.lower(): k for k in known}
        if word.lower() in lowered:
            close = [lowered[word.lower()]]
    return f" (did you mean {close[0]}?)" if close else ""


def check_row(ds: Dataset, raw: Mapping[str, Any]) -> Row:
    """A typed row (the wire and JSON Lines form) checked whole: unknown columns refused, every
    column type-checked, an absent optional column left out (never None or "")."""
    if not isinstance(raw, Mapping):
        raise CatalogError(f"a row must be a map, got {type(raw).__name__}", "row")
    _known_columns(ds, raw)
    row: Row = {}
    for col in ds.columns:
        value = raw.get(col.name)
        if value is None:
            if not col.optional:
                raise _fail(col.name, "is required")
            continue
        row[col.name] = _CHECKS[col.type](col, value)
    if ds.rule is not None:
        ds.rule(row)
    return row


def _known_columns(ds: Dataset, raw: Mapping[Any, Any]) -> None:
    if raw.keys() <= ds.by_name.keys():
        return
    for k in raw:
        if type(k) is not str or k not in ds.by_name:
            shown = mask_text(str(k)[:40])
            raise CatalogError(
                f"unknown column{_did_you_mean(shown, ds.by_name)} for {ds.name}", shown
            )


def parse_cells(ds: Dataset, cells: Mapping[str, str]) -> Row:
    """A row from CSV cells (column -> text): an empty cell is an absent optional column."""
    _known_columns(ds, cells)
    row: Row = {}
    for col in ds.columns:
        text = cells.get(col.name)
        if not text:
            if not col.optional:
                raise _fail(col.name, "is required")
            continue
        row[col.name] = _PARSES[col.type](col, text)
    if ds.rule is not None:
        ds.rule(row)
    return row


def check_header(ds: Dataset, header: Sequence[str]) -> None:
    """A CSV header: known columns, each once, every required one present."""
    seen: set[str] = set()
    for name in header:
        if name not in ds.by_name:
            shown = mask_text(name[:40])
            raise CatalogError(
                f"unknown column{_did_you_mean(shown, ds.by_name)} for {ds.name}; "
                f"columns: {', '.join(ds.column_names)}",
                shown,
            )
        if name in seen:
            raise CatalogError("appears twice in the header", name)
        seen.add(name)
    for col in ds.columns:
        if not col.optional and col.name not in seen:
            raise CatalogError(f"is required and missing from the header of {ds.name}", col.name)


# --- canonical bytes and the view hash ---------------------------------------------------------


def row_bytes(ds: Dataset, row: Mapping[str, Any]) -> bytes:
    """The canonical bytes of a row: msgpack [dataset, [values in declared column order]]."""
    return msgpack.packb([ds.name, [row.get(c) for c in ds.column_names]], use_bin_type=True)


def row_from_bytes(ds: Dataset, body: bytes) -> Row:
    """The row `row_bytes` made (as head office stores it), absent optionals left out."""
    name, values = msgpack.unpackb(body, raw=False)
    if name != ds.name or len(values) != len(ds.columns):
        raise CatalogError(f"stored row bytes are not a row of {ds.name}", "body")
    return {c.name: v for c, v in zip(ds.columns, values, strict=True) if v is not None}


def row_digest(ds: Dataset, row: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(row_bytes(ds, row)).digest()


def hash_add(view: bytes, digest: bytes) -> bytes:
    """The multiset hash with one row more: (view + digest) mod 2**256."""
    total = (int.from_bytes(view, "big") + int.from_bytes(digest, "big")) % _MOD
    return total.to_bytes(HASH_LEN, "big")


def hash_sub(view: bytes, digest: bytes) -> bytes:
    """The multiset hash with one row less."""
    total = (int.from_bytes(view, "big") - int.from_bytes(digest, "big")) % _MOD
    return total.to_bytes(HASH_LEN, "big")


def hash_sum(hashes: Iterable[bytes]) -> bytes:
    """The hash of the union of disjoint multisets (a store's view from its scopes' hashes)."""
    total = sum(int.from_bytes(h, "big") for h in hashes) % _MOD
    return total.to_bytes(HASH_LEN, "big")


def view_hash(rows: Iterable[tuple[Dataset, Mapping[str, Any]]]) -> bytes:
    """The hash of a set of rows computed from scratch (what the additive one must equal)."""
    return hash_sum(row_digest(ds, row) for ds, row in rows)


def store_scopes(store: str, price_zone: str | None) -> tuple[str, ...]:
    """The scope keys a store's view holds: chain-wide, its own and its price zone's."""
    scopes = [CHAIN, f"S:{store}"]
    if price_zone is not None:
        scopes.append(f"Z:{price_zone}")
    return tuple(scopes)


# --- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    """A declared setting: the type of its value and the default a lane falls back to
    (None: no default; Currency and Timezone then come from the store's own row)."""

    name: str
    type: str  # bool, money, currency, timezone, code, enum
    default: Any
    choices: tuple[str, ...] = ()
    doc: str = ""


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("PurchRecvAmountVariation", "money", 11, doc="receive total variation allowed"),
        Setting("PurchReceiveNoUnexp", "bool", False, doc="no unexpected deliveries"),
        Setting("PurchAutoCompleteReturn", "bool", False, doc="complete supplier returns"),
        Setting("PurchDefaultLocationLocked", "bool", False, doc="lock the store selector"),
        Setting("PurchRecvQtyOnly", "bool", False, doc="receive quantities only"),
        Setting("PurchRecvPromptVariant", "bool", False, doc="prompt for variant details"),
        Setting("PurchTransitAllowStaff", "bool", True, doc="transit to staff tab"),
        Setting("PurchTransitAllowCustomer", "bool", True, doc="transit to customer tab"),
        Setting("PurchTransitAllowSupplier", "bool", True, doc="transit to supplier tab"),
        Setting("PurchTransitAllowCourier", "bool", True, doc="transit by courier tab"),
        Setting("SaleTransitPromptQty", "bool", True, doc="prompt for quantity on scan"),
        Setting("Currency", "currency", None, doc="ISO 4217; default the store's"),
        Setting("Timezone", "timezone", None, doc="IANA; default the store's"),
        Setting("ReturnTxnType", "code", None, doc="code of a txn_types row"),
        Setting("PriceOverride", "enum", "reason", ("allowed", "reason", "refused")),
    )
}


def setting(name: str) -> Setting:
    s = SETTINGS.get(name)
    if s is None:
        raise CatalogError(
            f"unknown setting {mask_text(name[:40])!r}{_did_you_mean(name, SETTINGS)}", "name"
        )
    return s


def setting_value(name: str, text: str, column: str = "value") -> Any:
    """The typed value of setting `name` written as `text` (settings travel as text)."""
    s = setting(name)
    if s.type == "bool":
        v = TRUE_CELLS.get(text.lower())
        if v is None:
            raise _fail(column, f"{name} is 0 or 1")
        return v
    if s.type == "money":
        return parse_cell(Column(column, "money"), text)
    if s.type == "enum":
        return check_value(Column(column, "enum", False, s.choices), text)
    return check_value(Column(column, s.type), text)


def resolve_setting(settings: Iterable[Mapping[str, Any]], name: str, store: str, lane: str) -> Any:
    """A lane's value of `name`: lane > store > chain > the declared default."""
    s = setting(name)
    best: tuple[int, str] | None = None
    for row in settings:
        if row["name"] != name:
            continue
        scope = row["scope"]
        if scope == "lane" and row.get("store") == store and row.get("lane") == lane:
            rank = 3
        elif scope == "store" and row.get("store") == store:
            rank = 2
        elif scope == "chain":
            rank = 1
        else:
            continue
        if best is None or rank > best[0]:
            best = (rank, row["value"])
    return s.default if best is None else setting_value(name, best[1])


# --- payloads ----------------------------------------------------------------------------------

Change = tuple[str, str, "Row | None"]  # (dataset, key, row or None: removed)

# GTINs pass Luhn one time in ten: the screen is told where they are (protocol.screen).
CHANGES_FIELDS = screen.declare({"changes[][].gtins[]": screen.gtin, "at": screen.ms_time})


def _int(m: Mapping[str, Any], key: str, lo: int = 0, hi: int = U63) -> int:
    v = m.get(key)
    if type(v) is not int:
        raise CatalogError(f"must be an integer, got {type(v).__name__}", key)
    if not lo <= v <= hi:
        raise CatalogError(f"is outside {lo}..{hi}", key)
    return v


def _bool(m: Mapping[str, Any], key: str) -> bool:
    v = m.get(key)
    if type(v) is not bool:
        raise CatalogError(f"must be true or false, got {type(v).__name__}", key)
    return v


def _hash(m: Mapping[str, Any], key: str) -> bytes:
    v = m.get(key)
    if type(v) is not bytes or len(v) != HASH_LEN:
        raise CatalogError(f"must be {HASH_LEN} bytes", key)
    return v


def _only(m: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    if not isinstance(m, Mapping):
        raise CatalogError(f"must be a map, got {type(m).__name__}", what)
    unknown = [k for k in m if k not in allowed]
    if unknown:
        shown = mask_text(repr(sorted(map(str, unknown)))[:200])
        raise CatalogError(f"unknown field(s) {shown} for {what}", mask_text(str(unknown[0])[:40]))


def check_key(ds: Dataset, key: Any, field_name: str) -> str:
    if type(key) is not str or not 1 <= len(key) <= 200:
        raise CatalogError("must be a row key (a string)", field_name)
    if len(key) >= 13 and screen.holds_pan(key):
        raise CatalogError(screen.PAN_REASON, field_name)
    if key.count(KEY_SEP) != len(ds.key) - 1:
        raise CatalogError(f"is not a key of {ds.name} ({KEY_SEP.join(ds.key)})", field_name)
    return key


def changes_to_wire(changes: Iterable[Change]) -> list[list[Any]]:
    return [[d, k, r] for d, k, r in changes]


def changes_from_wire(
    raw: Any, field_name: str = "changes", limit: int = MAX_DELTA_CHANGES
) -> list[Change]:
    """[[dataset, key, row|nil], ...] checked: each row valid, its key the one it names, and
    in strictly increasing (dataset, key) order (so no key appears twice)."""
    if type(raw) is not list:
        raise CatalogError(f"must be a list, got {type(raw).__name__}", field_name)
    if len(raw) > limit:
        raise CatalogError(f"{len(raw)} changes exceed {limit}", field_name)
    out: list[Change] = []
    last: tuple[str, str] | None = None
    for i, c in enumerate(raw):
        at = f"{field_name}[{i}]"
        if type(c) is not list or len(c) != 3:
            raise CatalogError("must be [dataset, key, row or nil]", at)
        name, key, body = c
        if type(name) is not str or name not in DATASETS:
            raise CatalogError("is not a dataset", f"{at}[0]")
        ds = DATASETS[name]
        key = check_key(ds, key, f"{at}[1]")
        if last is not None and (name, key) <= last:
            raise CatalogError("out of (dataset, key) order or repeated", at)
        last = (name, key)
        row: Row | None = None
        if body is not None:
            try:
                row = check_row(ds, body)
            except CatalogError as exc:
                raise CatalogError(exc.reason, f"{at}[2].{exc.field}") from None
            if ds.key_of(row) != key:
                raise CatalogError("the row's key columns do not make the key it names", f"{at}[1]")
        out.append((name, key, row))
    return out


def sort_key(change: Change) -> tuple[str, str]:
    return change[0], change[1]


def chunk_sha256(changes: Iterable[Change]) -> bytes:
    """sha256 over the row bytes of a snapshot chunk's rows, in order."""
    h = hashlib.sha256()
    for name, _key, row in changes:
        if row is not None:
            h.update(row_bytes(DATASETS[name], row))
    return h.digest()


def chunk_count(rows: int, size: int) -> int:
    return max(1, -(-rows // size))


@dataclass(frozen=True, slots=True)
class CatalogHead:
    """A store's retained head: the version and hash of its view, with the delta from its
    previous head inline when small (`prev` and `changes` come together or not at all)."""

    TYPE: ClassVar[str] = CATALOG_TYPE
    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"v", "t", "store", "version", "hash", "rows", "at", "prev", "changes"}
    )
    store: str
    version: int
    hash: bytes
    rows: int
    at: int
    prev: int | None = None
    changes: list[Change] | None = None

    def to_map(self) -> dict[str, Any]:
        m: dict[str, Any] = {
            "v": CATALOG_PROTOCOL_VERSION,
            "t": CATALOG_TYPE,
            "store": self.store,
            "version": self.version,
            "hash": self.hash,
            "rows": self.rows,
            "at": self.at,
        }
        if self.prev is not None and self.changes is not None:
            m["prev"] = self.prev
            m["changes"] = changes_to_wire(self.changes)
        return m

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> CatalogHead:
        _only(m, cls.FIELDS, "catalog head")
        if m.get("v") != CATALOG_PROTOCOL_VERSION or type(m.get("v")) is not int:
            raise CatalogError("unsupported catalog version; this side speaks 1", "v")
        if m.get("t") != CATALOG_TYPE:
            raise CatalogError(f"must be {CATALOG_TYPE!r}", "t")
        screen.check(dict(m), "$", CHANGES_FIELDS)
        store = check_segment(m.get("store"), "store")
        version = _int(m, "version")
        prev = changes = None
        if ("prev" in m) != ("changes" in m):
            raise CatalogError("prev and changes come together", "prev")
        if "prev" in m:
            prev = _int(m, "prev", 0, max(version - 1, 0))
            if prev >= version:
                raise CatalogError("must be before version", "prev")
            changes = changes_from_wire(m["changes"], "changes", INLINE_CHANGES)
        return cls(store, version, _hash(m, "hash"), _int(m, "rows"), _int(m, "at"), prev, changes)


def encode_head(head: CatalogHead) -> bytes:
    return msgpack.packb(head.to_map(), use_bin_type=True)


def decode_head(payload: bytes, max_size: int = 1024 * 1024) -> CatalogHead:
    """A retained head's bytes, strictly: the limits of protocol.codec.unpack, then the schema."""
    value = unpack(payload, max_size)
    if type(value) is not dict:
        raise CatalogError(f"must be a map, got {type(value).__name__}", "payload")
    return CatalogHead.from_map(value)


@dataclass(frozen=True, slots=True)
class DeltaRequest:
    """`catalog_delta` args: the changes from version `from_` to `to`, after a (dataset, key)."""

    FIELDS: ClassVar[frozenset[str]] = frozenset({"from", "to", "after"})
    from_: int
    to: int
    after: tuple[str, str] | None = None

    def to_map(self) -> dict[str, Any]:
        m: dict[str, Any] = {"from": self.from_, "to": self.to}
        if self.after is not None:
            m["after"] = list(self.after)
        return m

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> DeltaRequest:
        _only(m, cls.FIELDS, OP_DELTA)
        after = None
        raw = m.get("after")
        if raw is not None:
            if type(raw) is not list or len(raw) != 2 or raw[0] not in DATASETS:
                raise CatalogError("must be [dataset, key]", "after")
            after = (raw[0], check_key(DATASETS[raw[0]], raw[1], "after[1]"))
        return cls(_int(m, "from"), _int(m, "to"), after)


@dataclass(frozen=True, slots=True)
class DeltaReply:
    """`catalog_delta` result: one page of changes; `hash`/`rows` are the view at `to`."""

    FIELDS: ClassVar[frozenset[str]] = frozenset({"from", "to", "hash", "rows", "changes", "more"})
    from_: int
    to: int
    hash: bytes
    rows: int
    changes: list[Change]
    more: bool

    def to_map(self) -> dict[str, Any]:
        return {
            "from": self.from_,
            "to": self.to,
            "hash": self.hash,
            "rows": self.rows,
            "changes": changes_to_wire(self.changes),
            "more": self.more,
        }

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> DeltaReply:
        _only(m, cls.FIELDS, f"{OP_DELTA} result")
        frm, to = _int(m, "from"), _int(m, "to")
        if frm > to:
            raise CatalogError("from is after to", "from")
        return cls(
            frm,
            to,
            _hash(m, "hash"),
            _int(m, "rows"),
            changes_from_wire(m.get("changes")),
            _bool(m, "more"),
        )


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """`catalog_snapshot` args: chunk `chunk` of `size` rows of the view at `version` (0: now)."""

    FIELDS: ClassVar[frozenset[str]] = frozenset({"version", "chunk", "size"})
    version: int
    chunk: int
    size: int

    def to_map(self) -> dict[str, Any]:
        return {"version": self.version, "chunk": self.chunk, "size": self.size}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> SnapshotRequest:
        _only(m, cls.FIELDS, OP_SNAPSHOT)
        version = _int(m, "version")
        chunk = _int(m, "chunk")
        if version == 0 and chunk != 0:
            raise CatalogError("a chunk after the first names the version", "chunk")
        return cls(version, chunk, _int(m, "size", 1, MAX_SNAPSHOT_CHUNK))


@dataclass(frozen=True, slots=True)
class SnapshotReply:
    """`catalog_snapshot` result: one chunk of the view at `version`, its sha256 checked on
    parsing, so a chunk a lane stages is a chunk it verified."""

    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"version", "hash", "rows", "chunks", "chunk", "sha256", "changes"}
    )
    version: int
    hash: bytes
    rows: int
    chunks: int
    chunk: int
    sha256: bytes
    changes: list[Change]

    def to_map(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "hash": self.hash,
            "rows": self.rows,
            "chunks": self.chunks,
            "chunk": self.chunk,
            "sha256": self.sha256,
            "changes": changes_to_wire(self.changes),
        }

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> SnapshotReply:
        _only(m, cls.FIELDS, f"{OP_SNAPSHOT} result")
        chunks = _int(m, "chunks", 1)
        chunk = _int(m, "chunk", 0, chunks - 1)
        changes = changes_from_wire(m.get("changes"), "changes", MAX_SNAPSHOT_CHUNK)
        if any(r is None for _d, _k, r in changes):
            raise CatalogError("a snapshot holds rows, never removals", "changes")
        digest = _hash(m, "sha256")
        if chunk_sha256(changes) != digest:
            raise CatalogError("the chunk's rows do not match its sha256", "sha256")
        return cls(
            _int(m, "version", 1),
            _hash(m, "hash"),
            _int(m, "rows"),
            chunks,
            chunk,
            digest,
            changes,
        )


def refusal(code: str) -> dict[str, Any]:
    """The `result` of a refused catalog request (Reply ok false)."""
    return {"code": code}
