"""The agent's operations tables: [retention], [metrics], [export].

Kept apart from agent/config.py so that file only gains one line per table; every key is
validated here with the key named on error and documented in /etc/lanesync/agent.example.toml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from protocol.errors import ConfigError
from protocol.runtime.config import Table
from protocol.runtime.httpserver import check_listen

LISTEN_EXAMPLE = "127.0.0.1:9641"  # shown when a listen setting is refused


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    keep_acked_days: float = 14.0  # acked entries stay this long after their ack, then go
    prune_batch: int = 500  # entries deleted per step: short write locks, appends go between
    prune_interval_s: float = 60.0
    max_journal_mb: int = 0  # journal budget; 0: limited only by min_free_disk_mb
    high_watermark_pct: int = 80  # warn above this share of the budget ...
    low_watermark_pct: int = 60  # ... until back below this one
    min_free_disk_mb: int = 256  # refuse new documents before the filesystem fills up
    prune_early_when_high: bool = True  # above the high mark, prune acked entries before age
    reserve_mb: int = 16  # kept free for the journal's own housekeeping when the disk fills


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str | None = None  # "127.0.0.1:9641" serves Prometheus text on /metrics


@dataclass(frozen=True, slots=True)
class ExportConfig:
    key_file: Path | None = None  # per-store HMAC key (hex) that signs backlog exports


@dataclass(frozen=True, slots=True)
class OpsConfig:
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


def parse(root: Table) -> OpsConfig:
    """The three tables, each checked on its own: a fault in one leaves the others checked."""
    retention = root.guarded(lambda: _retention(root.table("retention")), RetentionConfig())
    metrics = root.guarded(lambda: _metrics(root.table("metrics")), MetricsConfig())
    e = root.table("export")
    key_file = e.str("key_file", "")
    export = ExportConfig(key_file=Path(key_file) if key_file else None)
    e.done()
    return OpsConfig(retention, metrics, export)


def _retention(r: Table) -> RetentionConfig:
    d = RetentionConfig()
    retention = RetentionConfig(
        keep_acked_days=r.num("keep_acked_days", d.keep_acked_days, 0, 3650),
        prune_batch=r.int("prune_batch", d.prune_batch, 1, 100_000),
        prune_interval_s=r.num("prune_interval_s", d.prune_interval_s, 0.05, 86_400),
        max_journal_mb=r.int("max_journal_mb", d.max_journal_mb, 0, 1 << 30),
        high_watermark_pct=r.int("high_watermark_pct", d.high_watermark_pct, 1, 100),
        low_watermark_pct=r.int("low_watermark_pct", d.low_watermark_pct, 0, 99),
        min_free_disk_mb=r.int("min_free_disk_mb", d.min_free_disk_mb, 0, 1 << 30),
        prune_early_when_high=r.bool("prune_early_when_high", d.prune_early_when_high),
        reserve_mb=r.int("reserve_mb", d.reserve_mb, 0, 1 << 20),
    )
    r.done()
    if retention.low_watermark_pct >= retention.high_watermark_pct:
        raise ConfigError(
            "retention.low_watermark_pct: must be below retention.high_watermark_pct "
            f"({retention.low_watermark_pct} >= {retention.high_watermark_pct})"
        )
    if retention.max_journal_mb and retention.max_journal_mb < 1:
        raise ConfigError("retention.max_journal_mb: must be 0 (no budget) or at least 1")
    return retention


def _metrics(m: Table) -> MetricsConfig:
    listen = m.str("listen", "")
    m.done()
    return MetricsConfig(listen=check_listen(listen, "metrics.listen", LISTEN_EXAMPLE))
