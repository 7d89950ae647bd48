"""Agent configuration (`/etc/lanesync/agent.toml`), validated at start.

Every key is documented in the example (installed as /etc/lanesync/agent.example.toml); every
fault of a file is reported at once, each naming its key.

The TOML keeps what is the lane's own: identity, connection, paths and numbering. Master data
and settings come from head office in the lane's catalog (protocol/CATALOG.md); the keys that
used to hold them are refused by name with where the value lives now (MOVED), so a lane
never trades on a stale hand-edited copy.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import opsconfig
from agent.numbering import DocumentsConfig, TransitConfig
from agent.opsconfig import OpsConfig
from protocol.catalog import MAX_SNAPSHOT_CHUNK
from protocol.errors import ConfigError, ProtocolError
from protocol.identity import DEFAULT_PREFIX, LaneId, Topics
from protocol.runtime.brokerconn import DEFAULT_CONNACK_TIMEOUT_S, TlsConfig, parse_credentials
from protocol.runtime.config import (
    ConfigSource,
    DefaultConfig,
    Refused,
    Table,
    load_toml,
    parse_all,
    parse_log_level,
)


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None  # read from password_file when that is set
    keepalive: int = 15  # s; a dead (blackholed) link is noticed after 1.5 x keepalive
    topic_prefix: str = DEFAULT_PREFIX
    password_file: str | None = None
    tls: TlsConfig | None = None  # None: plain MQTT (see protocol.runtime.brokerconn)
    connack_timeout_s: float = DEFAULT_CONNACK_TIMEOUT_S  # TCP + TLS + CONNACK, then retry


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    batch_max_entries: int = 1000
    batch_max_bytes: int = 512 * 1024
    linger_ms: int = 20
    window: int = 32  # batches published but not yet acked by head office
    ack_timeout_s: float = 10.0  # no ack progress for this long: resend from the acked mark
    publish_timeout_s: float = 10.0  # no PUBACK for this long: the link is dead, reconnect
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0


@dataclass(frozen=True, slots=True)
class ApiConfig:
    socket: str | None = "/run/lanesync/api.sock"
    tcp: str | None = None  # "127.0.0.1:8641" to also listen on loopback TCP (needs a token)
    token: str | None = None
    # A client has this long to send a whole request (headers and body), counted from when it
    # connects or starts its next request; a late one gets 408 and is disconnected.
    request_timeout_s: float = 10.0


DEFAULT_JOURNAL = "/var/lib/lanesync/journal.db"
_LOAD = "lanesync catalog load"
_SETTING = f"a row of the settings dataset at head office ({_LOAD} settings FILE)"
_STORE = f"the store's row of the stores dataset at head office ({_LOAD} stores FILE)"
# Keys that moved to head office's catalog, and where each value lives now.
MOVED: dict[str, str] = {
    "documents.currency": f"the store's currency moved to head office: {_STORE}, column "
    "currency (or the Currency setting)",
    "documents.timezone": f"the store's time zone moved to head office: {_STORE}, column "
    "timezone (or the Timezone setting)",
    "tax": f"[tax] rates moved to head office: {_LOAD} tax_rates FILE",
    "purchasing": "[purchasing] moved to head office's settings: PurchRecvAmountVariation, "
    f"PurchReceiveNoUnexp, PurchAutoCompleteReturn, {_SETTING}",
    "purchasing.recv_amount_variation": f"moved to head office: PurchRecvAmountVariation, "
    f"{_SETTING}",
    "purchasing.receive_no_unexp": f"moved to head office: PurchReceiveNoUnexp, {_SETTING}",
    "purchasing.auto_complete_return": f"moved to head office: PurchAutoCompleteReturn, {_SETTING}",
    "transit.allow_staff": f"moved to head office: PurchTransitAllowStaff, {_SETTING}",
    "transit.allow_customer": f"moved to head office: PurchTransitAllowCustomer, {_SETTING}",
    "transit.allow_supplier": f"moved to head office: PurchTransitAllowSupplier, {_SETTING}",
    "transit.allow_courier": f"moved to head office: PurchTransitAllowCourier, {_SETTING}",
    "transit.prompt_qty": f"moved to head office: SaleTransitPromptQty, {_SETTING}",
}


def refuse_moved(root: Table) -> None:
    """A key whose value now comes from head office is refused, saying where it lives."""
    data = root.data
    for name, where in MOVED.items():
        table, _, key = name.partition(".")
        value = data.get(table)
        if key and isinstance(value, dict) and key in value:
            root.problems.add(f"{name}: {where}")
            root.problems.refused.add(name)  # not "unknown" as well
        if not key and value is not None:
            # A whole table that moved: name its first key, as for any other key.
            first = next(iter(value), None) if isinstance(value, dict) else None
            shown = f"{table}.{first}" if first is not None else table
            root.problems.add(f"{shown}: {where}")
            root.problems.refused.add(table)


@dataclass(frozen=True, slots=True)
class CatalogConfig:
    """[catalog]: the lane's copy of its store's master data (agent.catalog)."""

    path: Path | None = None  # None: next to the journal, "<journal stem>-catalog.db"
    chunk_rows: int = MAX_SNAPSHOT_CHUNK  # rows per snapshot chunk asked for (head office's most)
    window: int = 8  # snapshot chunk requests in flight at once
    request_timeout_s: float = 10.0  # a delta page or chunk not answered by then is asked again
    retry_initial_s: float = 0.5  # after a failed attempt; doubles up to retry_max_s
    retry_max_s: float = 30.0
    # false: a lane holding no catalog version refuses documents (503 "No catalog yet"), as a
    # chain's must (systemd/agent.example.toml sets it); true: it journals them on their own
    # figures (agent.documents.rules). The built-in default is true while lab configs with no
    # [catalog] table (test suites, `lanesync fleet`, benches) load no catalog yet.
    trade_without: bool = True


def catalog_path(journal_path: Path, config: CatalogConfig) -> Path:
    """Where the lane's catalog file lives: `catalog.path`, else beside the journal."""
    if config.path is not None:
        return config.path
    return journal_path.with_name(f"{journal_path.stem}-catalog.db")


@dataclass(frozen=True, slots=True)
class AgentConfig:
    lane: LaneId
    journal_path: Path
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    scanners: list[dict[str, Any]] = field(default_factory=list)
    documents: DocumentsConfig = field(default_factory=DocumentsConfig)
    transit: TransitConfig = field(default_factory=TransitConfig)
    ops: OpsConfig = field(default_factory=OpsConfig)  # [retention], [metrics], [export]
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    log_level: str | None = None  # [log] level; None: the command line's --log-level
    # The file this was read from, and how it was chosen (None: parsed from a dict).
    source: ConfigSource | None = field(default=None, compare=False, repr=False)

    @property
    def catalog_path(self) -> Path:
        return catalog_path(self.journal_path, self.catalog)

    @property
    def topics(self) -> Topics:
        return Topics(self.broker.topic_prefix)


def parse(data: dict[str, Any]) -> AgentConfig:
    """The whole agent.toml; every fault found is raised at once (ConfigErrors)."""
    return parse_all(data, read)


def read(root: Table) -> AgentConfig:
    refuse_moved(root)
    lane = root.guarded(_lane(root), None)
    j = root.table("journal")
    journal_path = Path(j.str("path", DEFAULT_JOURNAL))
    j.done()
    broker = root.guarded(lambda: _broker(root.table("broker")), BrokerConfig())
    replication = _replication(root.table("replication"))
    api = root.guarded(lambda: _api(root.table("api")), ApiConfig())
    scanners = root.array("scanners")
    if scanners:
        check_scanners(root, scanners)
    documents = root.guarded(lambda: _documents(root.table("documents")), DocumentsConfig())
    transit = root.guarded(lambda: _transit(root.table("transit")), TransitConfig())
    ops = root.guarded(lambda: opsconfig.parse(root), OpsConfig())
    catalog = _catalog(root.table("catalog"))
    log_level = parse_log_level(root)
    root.done()
    root.finish()
    assert lane is not None  # no fault recorded: the lane was read
    return AgentConfig(
        lane,
        journal_path,
        broker,
        replication,
        api,
        scanners,
        documents,
        transit,
        ops=ops,
        catalog=catalog,
        log_level=log_level,
    )


def _lane(root: Table) -> Callable[[], LaneId]:
    def read() -> LaneId:
        store, lane = root.str("store", None), root.str("lane", None)
        if store is None or lane is None:
            for key, value in (("store", store), ("lane", lane)):
                if value is None and key not in root.data:
                    root.problem(key, "required key is missing")
            raise Refused("store/lane")
        try:
            return LaneId(store, lane)
        except ProtocolError as exc:
            raise ConfigError(str(exc)) from None

    return read


def _broker(b: Table) -> BrokerConfig:
    login = parse_credentials(b)  # tls, ca_file, cert_file, key_file, username, password...
    broker = BrokerConfig(
        host=b.str("host", "127.0.0.1"),
        port=b.int("port", login.default_port, 1, 65535),
        username=login.username,
        password=login.password,
        keepalive=b.int("keepalive", 15, 2, 3600),
        topic_prefix=b.str("topic_prefix", DEFAULT_PREFIX),
        password_file=login.password_file,
        tls=login.tls,
        connack_timeout_s=login.connack_timeout_s,
    )
    b.done()
    try:
        Topics(broker.topic_prefix)
    except ProtocolError as exc:
        raise ConfigError(f"broker.{exc}") from None
    return broker


def _replication(r: Table) -> ReplicationConfig:
    d = ReplicationConfig()
    replication = ReplicationConfig(
        batch_max_entries=r.int("batch_max_entries", d.batch_max_entries, 1, 10_000),
        batch_max_bytes=r.int("batch_max_bytes", d.batch_max_bytes, 4096, 900 * 1024),
        linger_ms=r.int("linger_ms", d.linger_ms, 0, 10_000),
        window=r.int("window", d.window, 1, 256),
        ack_timeout_s=r.num("ack_timeout_s", d.ack_timeout_s, 0.1, 3600),
        publish_timeout_s=r.num("publish_timeout_s", d.publish_timeout_s, 0.1, 3600),
        backoff_initial_s=r.num("backoff_initial_s", d.backoff_initial_s, 0.01, 600),
        backoff_max_s=r.num("backoff_max_s", d.backoff_max_s, 0.01, 3600),
    )
    r.done()
    return replication


def _api(a: Table) -> ApiConfig:
    api = ApiConfig(
        socket=a.str("socket", "/run/lanesync/api.sock") or None,
        tcp=a.str("tcp", None) or None,
        token=a.str("token", None) or None,
        request_timeout_s=a.num("request_timeout_s", ApiConfig().request_timeout_s, 0.1, 3600),
    )
    a.done()
    if api.tcp is not None:
        host, sep, port = api.tcp.rpartition(":")
        if not sep or not port.isdigit() or host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
            raise ConfigError(f"api.tcp: must be a loopback HOST:PORT, got {api.tcp!r}")
        if not api.token:
            raise ConfigError("api.token: required when api.tcp is set (the TCP API needs a token)")
    if api.socket is None and api.tcp is None:
        raise ConfigError("api: set api.socket and/or api.tcp; the POS needs a way in")
    return api


def _catalog(t: Table) -> CatalogConfig:
    d = CatalogConfig()
    path = t.str("path", None)
    cfg = CatalogConfig(
        path=Path(path) if path else None,
        chunk_rows=t.int("chunk_rows", d.chunk_rows, 1, MAX_SNAPSHOT_CHUNK),
        window=t.int("window", d.window, 1, 32),
        request_timeout_s=t.num("request_timeout_s", d.request_timeout_s, 0.1, 600),
        retry_initial_s=t.num("retry_initial_s", d.retry_initial_s, 0.01, 600),
        retry_max_s=t.num("retry_max_s", d.retry_max_s, 0.01, 3600),
        trade_without=t.bool("trade_without", d.trade_without),
    )
    t.done()
    return cfg


def _documents(t: Table) -> DocumentsConfig:
    cfg = DocumentsConfig(register_prefix=t.str("register_prefix", None))
    t.done()
    if cfg.register_prefix is not None and not re.fullmatch(r"[A-Z][0-9]?", cfg.register_prefix):
        raise ConfigError(
            "documents.register_prefix: must be a capital letter and an optional digit (T1), "
            f"got {cfg.register_prefix!r}"
        )
    return cfg


def _transit(t: Table) -> TransitConfig:
    d = TransitConfig()
    cfg = TransitConfig(
        gs1_company_prefix=t.str("gs1_company_prefix", None),
        sscc_lane_prefix=t.str("sscc_lane_prefix", d.sscc_lane_prefix),
        sscc_extension_digit=t.int("sscc_extension_digit", 0, 0, 9),
        receive_timeout_s=t.num("receive_timeout_s", d.receive_timeout_s, 0.1, 120),
    )
    t.done()
    prefix = cfg.gs1_company_prefix
    if prefix is not None:
        if not re.fullmatch(r"[0-9]{7,10}", prefix):
            raise ConfigError(f"transit.gs1_company_prefix: must be 7 to 10 digits, got {prefix!r}")
        if "sscc_lane_prefix" not in t.data:
            raise ConfigError(
                "transit.sscc_lane_prefix: required with transit.gs1_company_prefix: digits "
                "unique to this lane across the chain, so two lanes never make the same SSCC"
            )
    lane_prefix = cfg.sscc_lane_prefix
    if not re.fullmatch(r"[0-9]{0,6}", lane_prefix):
        raise ConfigError(f"transit.sscc_lane_prefix: must be 0 to 6 digits, got {lane_prefix!r}")
    if prefix is not None and 16 - len(prefix) - len(lane_prefix) < 3:
        raise ConfigError(
            "transit.sscc_lane_prefix: too long for the company prefix; the SSCC serial needs "
            "at least 3 digits of its own"
        )
    return cfg


DEFAULT_CONFIG = DefaultConfig("/etc/lanesync/agent.toml")  # LANESYNC_CONFIG replaces it


def check_scanners(root: Table, scanners: list[Any]) -> None:
    """Validate `[[scanners]]` (hardware.config); imported only for a lane that has any, since
    it brings evdev with it (issue 17.2: a lane without scanners does not load them)."""
    from hardware.config import ScannerConfigError, parse_scanners  # noqa: PLC0415

    with root.guard():
        try:
            parse_scanners(scanners)
        except ScannerConfigError as exc:
            raise ConfigError(str(exc)) from None


def load(path: str | Path | ConfigSource = DEFAULT_CONFIG) -> AgentConfig:
    """agent.toml from `path` (a --config), else $LANESYNC_CONFIG, else the default."""
    cfg, source = load_toml(path, parse, "agent.example.toml", DEFAULT_CONFIG)
    return dataclasses.replace(cfg, source=source)
