"""Agent configuration (`/etc/lanesync/agent.toml`), validated at start.

Every key is documented in systemd/agent.example.toml; an error names the key at fault.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from agent import opsconfig
from agent.documents.tax import TaxRate, TaxTable
from agent.opsconfig import OpsConfig
from protocol.brokerconn import DEFAULT_CONNACK_TIMEOUT_S, TlsConfig, parse_credentials
from protocol.catalog import MAX_SNAPSHOT_CHUNK
from protocol.config import Table, load_toml
from protocol.errors import ConfigError, ProtocolError
from protocol.identity import DEFAULT_PREFIX, LaneId, Topics


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None  # read from password_file when that is set
    keepalive: int = 15  # s; a dead (blackholed) link is noticed after 1.5 x keepalive
    topic_prefix: str = DEFAULT_PREFIX
    password_file: str | None = None
    tls: TlsConfig | None = None  # None: plain MQTT (see protocol.brokerconn)
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


@dataclass(frozen=True, slots=True)
class DocumentsConfig:
    """[documents]: what the agent fills in and how it numbers documents."""

    currency: str | None = None  # ISO 4217 filled into documents that name none
    register_prefix: str | None = None  # "T1" -> T10001; default "T" + the lane's last digit
    timezone: str | None = None  # IANA zone for business_day/time; default the host's zone


@dataclass(frozen=True, slots=True)
class PurchasingConfig:
    """[purchasing]: the purchasing seed's Purch* settings."""

    recv_amount_variation: int = 11  # PurchRecvAmountVariation, minor units
    receive_no_unexp: bool = False  # PurchReceiveNoUnexp: refuse receives without a PO
    auto_complete_return: bool = False  # PurchAutoCompleteReturn: supplier returns completed


@dataclass(frozen=True, slots=True)
class TransitConfig:
    """[transit]: transit inventory data capture (the purchasing seed's Transit settings)."""

    allow_staff: bool = True  # PurchTransitAllowStaff
    allow_customer: bool = True  # PurchTransitAllowCustomer
    allow_supplier: bool = True  # PurchTransitAllowSupplier
    allow_courier: bool = True  # PurchTransitAllowCourier
    prompt_qty: bool = True  # SaleTransitPromptQty: a scanned transit item needs a quantity
    gs1_company_prefix: str | None = None  # 7..10 digits; transits need it for their SSCC
    sscc_lane_prefix: str = ""  # digits unique to this lane across the chain
    sscc_extension_digit: int = 0
    receive_timeout_s: float = 5.0  # a transit lookup/accept fails after this without head office

    def allows(self, by: str) -> bool:
        return bool(getattr(self, f"allow_{by}", False))


@dataclass(frozen=True, slots=True)
class CatalogConfig:
    """[catalog]: the lane's copy of its store's master data (agent.catalog)."""

    path: Path | None = None  # None: next to the journal, "<journal stem>-catalog.db"
    chunk_rows: int = MAX_SNAPSHOT_CHUNK  # rows per snapshot chunk asked for (head office's most)
    window: int = 8  # snapshot chunk requests in flight at once
    request_timeout_s: float = 10.0  # a delta page or chunk not answered by then is asked again
    retry_initial_s: float = 0.5  # after a failed attempt; doubles up to retry_max_s
    retry_max_s: float = 30.0


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
    purchasing: PurchasingConfig = field(default_factory=PurchasingConfig)
    transit: TransitConfig = field(default_factory=TransitConfig)
    tax: TaxTable = field(default_factory=TaxTable)
    ops: OpsConfig = field(default_factory=OpsConfig)  # [retention], [metrics], [export]
    catalog: CatalogConfig = field(default_factory=CatalogConfig)

    @property
    def catalog_path(self) -> Path:
        return catalog_path(self.journal_path, self.catalog)

    @property
    def topics(self) -> Topics:
        return Topics(self.broker.topic_prefix)


def parse(data: dict[str, Any]) -> AgentConfig:
    root = Table(data)
    try:
        lane = LaneId(root.str("store"), root.str("lane"))
    except ProtocolError as exc:
        raise ConfigError(str(exc)) from None
    j = root.table("journal")
    journal_path = Path(j.str("path", "/var/lib/lanesync/journal.db"))
    j.done()
    b = root.table("broker")
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
    r = root.table("replication")
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
    a = root.table("api")
    api = ApiConfig(
        socket=a.str("socket", "/run/lanesync/api.sock") or None,
        tcp=a.str("tcp", None) or None,
        token=a.str("token", None) or None,
        request_timeout_s=a.num("request_timeout_s", ApiConfig().request_timeout_s, 0.1, 3600),
    )
    if api.tcp is not None:
        host, sep, port = api.tcp.rpartition(":")
        if not sep or not port.isdigit() or host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
            raise ConfigError(f"api.tcp: must be a loopback HOST:PORT, got {api.tcp!r}")
        if not api.token:
            raise ConfigError("api.token: required when api.tcp is set (the TCP API needs a token)")
    if api.socket is None and api.tcp is None:
        raise ConfigError("api: set api.socket and/or api.tcp; the POS needs a way in")
    a.done()
    scanners = root.array("scanners")
    documents = _documents(root.table("documents"))
    purchasing = _purchasing(root.table("purchasing"))
    transit = _transit(root.table("transit"))
    tax = _tax(root.table("tax"))
    ops = opsconfig.parse(root)
    catalog = _catalog(root.table("catalog"))
    root.done()
    return AgentConfig(
        lane,
        journal_path,
        broker,
        replication,
        api,
        scanners,
        documents,
        purchasing,
        transit,
        tax,
        ops=ops,
        catalog=catalog,
    )


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
    )
    t.done()
    return cfg


def _documents(t: Table) -> DocumentsConfig:
    cfg = DocumentsConfig(
        currency=t.str("currency", None),
        register_prefix=t.str("register_prefix", None),
        timezone=t.str("timezone", None),
    )
    if cfg.currency is not None and not re.fullmatch(r"[A-Z]{3}", cfg.currency):
        raise ConfigError(
            f"documents.currency: must be an ISO 4217 code like EUR, got {cfg.currency!r}"
        )
    if cfg.register_prefix is not None and not re.fullmatch(r"[A-Z][0-9]?", cfg.register_prefix):
        raise ConfigError(
            "documents.register_prefix: must be a capital letter and an optional digit (T1), "
            f"got {cfg.register_prefix!r}"
        )
    if cfg.timezone is not None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # noqa: PLC0415

        try:
            ZoneInfo(cfg.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"documents.timezone: unknown time zone {cfg.timezone!r}") from None
    t.done()
    return cfg


def _purchasing(t: Table) -> PurchasingConfig:
    d = PurchasingConfig()
    cfg = PurchasingConfig(
        recv_amount_variation=t.int("recv_amount_variation", d.recv_amount_variation, 0, 10**9),
        receive_no_unexp=t.bool("receive_no_unexp", d.receive_no_unexp),
        auto_complete_return=t.bool("auto_complete_return", d.auto_complete_return),
    )
    t.done()
    return cfg


def _transit(t: Table) -> TransitConfig:
    d = TransitConfig()
    cfg = TransitConfig(
        allow_staff=t.bool("allow_staff", d.allow_staff),
        allow_customer=t.bool("allow_customer", d.allow_customer),
        allow_supplier=t.bool("allow_supplier", d.allow_supplier),
        allow_courier=t.bool("allow_courier", d.allow_courier),
        prompt_qty=t.bool("prompt_qty", d.prompt_qty),
        gs1_company_prefix=t.str("gs1_company_prefix", None),
        sscc_lane_prefix=t.str("sscc_lane_prefix", d.sscc_lane_prefix),
        sscc_extension_digit=t.int("sscc_extension_digit", 0, 0, 9),
        receive_timeout_s=t.num("receive_timeout_s", d.receive_timeout_s, 0.1, 120),
    )
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
    t.done()
    return cfg


def _tax(t: Table) -> TaxTable:
    """[[tax.rates]] code, from (date), rate_bp (basis points: 2000 = 20 %)."""
    rates = []
    for i, raw in enumerate(t.array("rates")):
        r = Table(raw, f"tax.rates[{i}]")
        code = r.str("code")
        if not re.fullmatch(r"[A-Z0-9_]{1,16}", code):
            raise ConfigError(f"tax.rates[{i}].code: must match [A-Z0-9_]{{1,16}}, got {code!r}")
        start = r._get("from", ...)  # TOML dates arrive as datetime.date
        if type(start) is not date:
            raise ConfigError(
                f"tax.rates[{i}].from: must be a TOML date (2024-01-01), got {start!r}"
            )
        rate = r.int("rate_bp", ..., 0, 100_000)
        r.done()
        rates.append(TaxRate(code, start, rate))
    seen = set()
    for i, rate_ in enumerate(rates):
        if (rate_.code, rate_.valid_from) in seen:
            raise ConfigError(
                f"tax.rates[{i}].from: {rate_.code} already has a rate from {rate_.valid_from}"
            )
        seen.add((rate_.code, rate_.valid_from))
    t.done()
    return TaxTable(rates)


def load(path: str | Path) -> AgentConfig:
    return load_toml(path, parse, "agent.example.toml")
