"""Head office's operations tables: [status_page], [metrics], [import].

Kept apart from headoffice/config.py so that file only gains a line; every key is validated
here with the key named on error and documented in /etc/lanesync/headoffice.example.toml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from protocol.runtime.config import Table
from protocol.runtime.httpserver import check_listen

LISTEN_EXAMPLE = "127.0.0.1:8642"  # shown when a listen setting is refused


@dataclass(frozen=True, slots=True)
class StatusPageConfig:
    listen: str | None = None  # "127.0.0.1:8642": the status page, its JSON and /metrics
    refresh_s: float = 5.0  # the page reloads its data this often
    offline_after_s: float = 60.0  # a lane silent this long shows as "stale" (status every 15 s)


@dataclass(frozen=True, slots=True)
class HoMetricsConfig:
    listen: str | None = None  # a separate Prometheus listener; /metrics is also on the page


@dataclass(frozen=True, slots=True)
class ImportConfig:
    key_dir: Path = Path("/etc/lanesync/export-keys")  # <store>.key: hex HMAC key per store


@dataclass(frozen=True, slots=True)
class HoOpsConfig:
    status_page: StatusPageConfig = field(default_factory=StatusPageConfig)
    metrics: HoMetricsConfig = field(default_factory=HoMetricsConfig)
    import_: ImportConfig = field(default_factory=ImportConfig)


def _listen(value: str | None, key: str) -> str | None:
    return check_listen(value, key, LISTEN_EXAMPLE)


def parse(root: Table) -> HoOpsConfig:
    """The three tables, each checked on its own: a fault in one leaves the others checked."""
    page = root.guarded(lambda: _status_page(root.table("status_page")), StatusPageConfig())
    metrics = root.guarded(lambda: _metrics(root.table("metrics")), HoMetricsConfig())
    i = root.table("import")
    imp = ImportConfig(key_dir=Path(i.str("key_dir", str(ImportConfig().key_dir))))
    i.done()
    return HoOpsConfig(page, metrics, imp)


def _status_page(s: Table) -> StatusPageConfig:
    d = StatusPageConfig()
    listen = s.str("listen", "")
    refresh_s = s.num("refresh_s", d.refresh_s, 0.5, 3600)
    offline_after_s = s.num("offline_after_s", d.offline_after_s, 1, 86_400)
    s.done()
    return StatusPageConfig(_listen(listen, "status_page.listen"), refresh_s, offline_after_s)


def _metrics(m: Table) -> HoMetricsConfig:
    listen = m.str("listen", "")
    m.done()
    return HoMetricsConfig(listen=_listen(listen, "metrics.listen"))
