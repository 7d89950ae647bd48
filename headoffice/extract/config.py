"""The `[extract]` table of headoffice.toml, validated with the key at fault named.

Kept in its own section, read here, so head office's own parser only has to know that the
`extract` table belongs to this package.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from headoffice.config import DEFAULT_CONFIG as HEADOFFICE_CONFIG
from headoffice.config import DEFAULT_DATABASE, parse_database
from protocol.errors import ConfigError
from protocol.runtime.config import ConfigSource, Table, load_toml, parse_all

DEFAULT_CONFIG = HEADOFFICE_CONFIG  # the extract reads head office's file
SCHEDULES = ("business_day", "each_run")
LINE_STATUSES = ("proforma", "active")
INVENTORY_EFFECTS = {"increase": 1, "none": 0, "decrease": -1}


@dataclass(frozen=True, slots=True)
class TaxDefinition:
    """Sales tax of one location; `warehouse` None applies to the whole state."""

    country: str
    state: str
    warehouse: str | None
    rate: Decimal  # percent, e.g. Decimal("7.25")
    exempt_tax_codes: frozenset[str]


@dataclass(frozen=True, slots=True)
class PosBatch:
    id: str
    store: str
    country: str
    state: str
    warehouse: str
    default_line_status: str = "active"


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    url: str | None = None
    retries: int = 5
    backoff_s: float = 0.5
    timeout_s: float = 10.0
    concurrency: int = 8


@dataclass(frozen=True, slots=True)
class ExtractConfig:
    database: Path = DEFAULT_DATABASE
    database_url: str | None = None  # postgresql://...: read PostgreSQL instead of the file
    enabled: bool = True
    output_dir: Path = Path("/var/lib/lanesync/extract")
    timezone: str = "UTC"
    purchases_enabled: bool = True
    require_erp_posting: bool = False
    include_open_items: bool = True
    delay_period_s: int = 0
    rollup_enabled: bool = True
    schedule: str = "business_day"
    day_close_grace_hours: int = 0
    postings_enabled: bool = True
    cash_customer: str = "CASH"
    default_return_type: str = "RETURN"
    return_types: dict[str, int] = field(default_factory=lambda: {"RETURN": 1})
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    pos_batches: tuple[PosBatch, ...] = ()
    tax: tuple[TaxDefinition, ...] = ()

    @property
    def target(self) -> Path | str:
        """The head-office database: database.url when set, else the SQLite file."""
        return self.database_url or self.database

    @property
    def database_key(self) -> str:
        """The configuration key naming the database, for messages."""
        return "database.url" if self.database_url else "database.path"

    def batch_for(self, store: str) -> PosBatch | None:
        for b in self.pos_batches:
            if b.store == store:
                return b
        return None

    def tax_for(self, batch: PosBatch) -> TaxDefinition | None:
        """The most specific definition: warehouse first, then the state."""
        best = None
        for t in self.tax:
            if (t.country, t.state) != (batch.country, batch.state):
                continue
            if t.warehouse == batch.warehouse:
                return t
            if t.warehouse is None:
                best = t
        return best


def _rate(t: Table) -> Decimal:
    raw = t.str("rate")
    try:
        rate = Decimal(raw)
    except InvalidOperation:
        raise ConfigError(
            f'{t.path}.rate: must be a decimal percent string like "7.25", got {raw!r}'
        ) from None
    if not rate.is_finite() or not Decimal(0) <= rate < Decimal(100):
        raise ConfigError(f"{t.path}.rate: must be 0 <= rate < 100 (percent), got {raw!r}")
    return rate


def parse(data: dict[str, Any]) -> ExtractConfig:
    """Read `[database]` (path or url) and the `[extract]` table; other head-office tables are
    ignored. The [database] rules are head office's own (headoffice.config.parse_database).
    Every fault found is raised at once (ConfigErrors)."""
    return parse_all(data, read)


def read(root: Table) -> ExtractConfig:
    no_database: tuple[Path, str | None] = (DEFAULT_DATABASE, None)
    database, database_url = root.guarded(lambda: parse_database(root, strict=False), no_database)
    x = root.table("extract")
    enabled = x.bool("enabled", True)
    output_dir = Path(x.str("output_dir", "/var/lib/lanesync/extract"))
    tz = x.str("timezone", "UTC")
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        x.problem("timezone", f'unknown time zone {tz!r} (e.g. "Europe/Berlin")')
    schedule = x.choice("schedule", "business_day", SCHEDULES)
    hours = x.int("delay_period_hours", 0, 0, 24 * 366)
    days = x.int("delay_period_days", 0, 0, 366)
    rt = x.table("return_types")
    return_types: dict[str, int] = {}
    for name in sorted(rt.data):
        effect = rt.choice(name, None, tuple(INVENTORY_EFFECTS))
        if effect is not None:
            return_types[name] = INVENTORY_EFFECTS[effect]
    if not return_types:
        return_types = {"RETURN": 1}
    default_rt = x.str("default_return_type", "RETURN")
    if default_rt not in return_types:
        x.problem("default_return_type", f"{default_rt!r} is not in extract.return_types")
    d = x.table("delivery")
    url = d.str("url", "") or None
    if url is not None and not url.startswith(("http://", "https://")):
        d.problem("url", f"must be an http:// or https:// URL, got {url!r}")
    delivery = DeliveryConfig(
        url=url,
        retries=d.int("retries", 5, 0, 100),
        backoff_s=d.num("backoff_s", 0.5, 0.0, 600.0),
        timeout_s=d.num("timeout_s", 10.0, 0.1, 600.0),
        concurrency=d.int("concurrency", 8, 1, 256),
    )
    d.done()
    taxes = []
    for i, raw in enumerate(x.array("tax")):
        with root.guard():
            taxes.append(_tax(x.item("tax", i, raw)))
    batches: list[PosBatch] = []
    for i, raw in enumerate(x.array("pos_batches")):
        with root.guard():
            batches.append(_batch(x.item("pos_batches", i, raw), i, batches))
    cfg = ExtractConfig(
        database=database,
        database_url=database_url,
        enabled=enabled,
        output_dir=output_dir,
        timezone=tz,
        purchases_enabled=x.bool("purchases_enabled", True),
        require_erp_posting=x.bool("require_erp_posting", False),
        include_open_items=x.bool("include_open_items", True),
        delay_period_s=hours * 3600 + days * 86400,
        rollup_enabled=x.bool("rollup_enabled", True),
        schedule=schedule,
        day_close_grace_hours=x.int("day_close_grace_hours", 0, 0, 24 * 7),
        postings_enabled=x.bool("postings_enabled", True),
        cash_customer=x.str("cash_customer", "CASH"),
        default_return_type=default_rt,
        return_types=return_types,
        delivery=delivery,
        pos_batches=tuple(batches),
        tax=tuple(taxes),
    )
    x.done()
    for i, pb in enumerate(cfg.pos_batches):
        if cfg.tax_for(pb) is None:
            root.problems.add(
                f"extract.pos_batches[{i}]: no extract.tax definition for "
                f"country {pb.country!r}, state {pb.state!r}"
            )
    root.finish()
    return cfg


def _tax(t: Table) -> TaxDefinition:
    exempt = t.array("exempt_tax_codes")
    if not all(isinstance(c, str) for c in exempt):
        t.problem("exempt_tax_codes", "must be an array of strings")
    country, state, warehouse = t.str("country"), t.str("state"), t.str("warehouse", None)
    rate = _rate(t)
    t.done()
    return TaxDefinition(country, state, warehouse, rate, frozenset(exempt))


def _batch(b: Table, i: int, batches: list[PosBatch]) -> PosBatch:
    status = b.choice("default_line_status", "active", LINE_STATUSES)
    batch = PosBatch(
        b.str("id"),
        b.str("store"),
        b.str("country"),
        b.str("state"),
        b.str("warehouse"),
        status,
    )
    b.done()
    if any(o.store == batch.store for o in batches):
        raise ConfigError(
            f"extract.pos_batches[{i}].store: store {batch.store!r} already has a POS batch"
        )
    return batch


def load(path: str | Path | ConfigSource = DEFAULT_CONFIG) -> ExtractConfig:
    """The extract's tables of headoffice.toml: `path`, else $LANESYNC_CONFIG, else default."""
    return load_toml(path, parse, "extract.example.toml", DEFAULT_CONFIG)[0]
