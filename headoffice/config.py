"""Head-office configuration (`/etc/lanesync/headoffice.toml`), validated at start.

Every key is documented in the example (installed as /etc/lanesync/headoffice.example.toml);
every fault of a file is reported at once, each naming its key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headoffice import opsconfig
from headoffice.opsconfig import HoOpsConfig
from protocol.codec import DEFAULT_MAX_MESSAGE
from protocol.errors import ConfigError, ProtocolError
from protocol.identity import DEFAULT_PREFIX, Topics, check_segment
from protocol.runtime.brokerconn import DEFAULT_CONNACK_TIMEOUT_S, TlsConfig, parse_credentials
from protocol.runtime.config import (
    ConfigSource,
    DefaultConfig,
    Table,
    load_toml,
    parse_all,
    parse_log_level,
)


@dataclass(frozen=True, slots=True)
class HoBrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None  # read from password_file when that is set
    keepalive: int = 30
    topic_prefix: str = DEFAULT_PREFIX
    client_id: str = "lanesync-headoffice"
    share_group: str | None = None  # set to run several ingest workers on one subscription
    password_file: str | None = None
    tls: TlsConfig | None = None  # None: plain MQTT (see protocol.runtime.brokerconn)
    connack_timeout_s: float = DEFAULT_CONNACK_TIMEOUT_S  # TCP + TLS + CONNACK, then retry


@dataclass(frozen=True, slots=True)
class IngestConfig:
    max_message_bytes: int = DEFAULT_MAX_MESSAGE
    group_max_messages: int = 64  # messages applied in one transaction before acking
    # How long a shared-subscription worker keeps retrying a batch that arrived ahead of its
    # predecessor (held by another worker) before asking the lane to resend; 0: ask at once.
    gap_hold_ms: int = 0
    # Epochs head office keeps on record per lane (a journal recreated or restored starts one);
    # a new epoch beyond it is refused and quarantined, so hellos naming ever new epochs
    # cannot grow head office's tables and memory without bound.
    max_epochs_per_lane: int = 64
    # The inbox between the broker and the decoder (headoffice.inbox): per store, at most
    # this many messages and bytes wait; beyond them a store's messages are shed (its lanes
    # resend). All stores together: four times the bytes of one.
    queue_messages_per_store: int = 2000
    queue_bytes_per_store: int = 64 * 1024 * 1024
    # PostgreSQL workers owning stores through leases instead of a shared subscription
    # (headoffice.ingest.leases): how long a worker's lease lasts without a heartbeat.
    leases: bool = False
    lease_ttl_s: float = 2.0


MIN_TOKEN_CHARS = 24


@dataclass(frozen=True, slots=True)
class CatalogConfig:
    """[catalog]: the head publisher and the ERP's load endpoint (headoffice.catalog)."""

    publish: bool = True  # publish each store's retained catalog head
    poll_ms: int = 100  # how often the publisher looks for a new version
    api_token_file: str | None = None  # bearer token of POST /api/catalog/...; None: no endpoint
    api_token: str | None = field(default=None, repr=False)  # read from api_token_file
    max_upload_bytes: int = 256 * 1024 * 1024


def read_token(path: str) -> str:
    """The ERP's bearer token: one line of at least MIN_TOKEN_CHARS, read at start."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"catalog.api_token_file: cannot read {path}: {exc}") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ConfigError(
            f"catalog.api_token_file: {path} must hold one token of at least {MIN_TOKEN_CHARS} "
            "characters and no spaces (make one with: openssl rand -hex 32)"
        )
    return token


@dataclass(frozen=True, slots=True)
class EnrolConfig:
    """[enrol]: where `lanesync headoffice store add|remove` keeps the broker's identities and
    what it writes into each lane's agent.toml (headoffice.enrol)."""

    login: str = "cert"  # cert: a client certificate per lane; password: a password-file entry
    pki_dir: str = "/etc/lanesync/pki"  # the stores' CA (lanesync headoffice pki init)
    password_file: str = "/etc/mosquitto/lanesync-stores.passwd"  # noqa: S105 - a path
    acl_file: str = "/etc/mosquitto/lanesync.acl"
    out_dir: str = "/etc/lanesync/stores"  # <out_dir>/<store>/<lane>/: agent.toml and secrets
    lane_broker_host: str | None = None  # the broker's address as the lanes reach it
    lane_broker_port: int = 8883
    lane_ca_file: str = "/etc/lanesync/broker-ca.pem"  # on the lane: CA of the broker's cert
    lane_journal: str = "/var/lib/lanesync/journal.db"  # on the lane


@dataclass(frozen=True, slots=True)
class HeadOfficeConfig:
    database: Path
    broker: HoBrokerConfig = field(default_factory=HoBrokerConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    ops: HoOpsConfig = field(default_factory=HoOpsConfig)  # [status_page], [metrics], [import]
    database_url: str | None = None  # postgresql://...: PostgreSQL instead of the SQLite file
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    enrol: EnrolConfig = field(default_factory=EnrolConfig)
    log_level: str | None = None  # [log] level; None: the command line's --log-level
    # The file this was read from, and how it was chosen (None: parsed from a dict).
    source: ConfigSource | None = field(default=None, compare=False, repr=False)

    @property
    def topics(self) -> Topics:
        return Topics(self.broker.topic_prefix)


DEFAULT_DATABASE = Path("/var/lib/lanesync/headoffice.db")


def parse_database(root: Table, *, strict: bool) -> tuple[Path, str | None]:
    """`[database]`: the SQLite file (`path`) or a PostgreSQL URL (`url`), never both.

    Read here for head office and for the extract (headoffice.extract.config), which may be
    given a file head office never read; `strict` refuses unknown keys (head office does, the
    extract leaves that to head office)."""
    d = root.table("database")
    path = d.str("path", None)
    url = d.str("url", None)
    if strict:
        d.done()
    if path is not None and url is not None:
        raise ConfigError("database.url: set database.path (SQLite) or database.url, not both")
    if url is not None and not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"database.url: must be a postgresql:// URL, got {url.split(':', 1)[0]!r}"
        )
    return Path(path) if path else DEFAULT_DATABASE, url


def parse(data: dict[str, Any]) -> HeadOfficeConfig:
    """The whole headoffice.toml; every fault found is raised at once (ConfigErrors)."""
    return parse_all(data, read)


def read(root: Table) -> HeadOfficeConfig:
    no_database: tuple[Path, str | None] = (DEFAULT_DATABASE, None)
    database, database_url = root.guarded(lambda: parse_database(root, strict=True), no_database)
    broker = root.guarded(lambda: _broker(root.table("broker")), HoBrokerConfig())
    ingest = _ingest(root.table("ingest"), broker)
    root.guarded(lambda: _check_leases(ingest, broker, database_url), None)
    catalog = root.guarded(lambda: _catalog(root.table("catalog")), CatalogConfig())
    enrol = root.guarded(lambda: _enrol(root.table("enrol")), EnrolConfig())
    root.used.add("extract")  # [extract] is read by headoffice.extract.config
    ops = root.guarded(lambda: opsconfig.parse(root), HoOpsConfig())
    log_level = parse_log_level(root)
    root.done()
    root.finish()
    return HeadOfficeConfig(
        database,
        broker,
        ingest,
        ops=ops,
        database_url=database_url,
        catalog=catalog,
        enrol=enrol,
        log_level=log_level,
    )


def _broker(b: Table) -> HoBrokerConfig:
    login = parse_credentials(b)  # tls, ca_file, cert_file, key_file, username, password...
    broker = HoBrokerConfig(
        host=b.str("host", "127.0.0.1"),
        port=b.int("port", login.default_port, 1, 65535),
        username=login.username,
        password=login.password,
        keepalive=b.int("keepalive", 30, 2, 3600),
        topic_prefix=b.str("topic_prefix", DEFAULT_PREFIX),
        client_id=b.str("client_id", "lanesync-headoffice"),
        share_group=b.str("share_group", None) or None,
        password_file=login.password_file,
        tls=login.tls,
        connack_timeout_s=login.connack_timeout_s,
    )
    b.done()
    try:
        Topics(broker.topic_prefix)
        if broker.share_group:
            check_segment(broker.share_group, "broker.share_group")
    except ProtocolError as exc:
        raise ConfigError(f"broker.{exc}" if exc.field == "topic_prefix" else str(exc)) from None
    return broker


def _ingest(i: Table, broker: HoBrokerConfig) -> IngestConfig:
    ingest = IngestConfig(
        max_message_bytes=i.int("max_message_bytes", DEFAULT_MAX_MESSAGE, 1024, 64 * 1024 * 1024),
        group_max_messages=i.int("group_max_messages", 64, 1, 10_000),
        gap_hold_ms=i.int("gap_hold_ms", 500 if broker.share_group else 0, 0, 60_000),
        max_epochs_per_lane=i.int("max_epochs_per_lane", 64, 1, 1_000_000),
        queue_messages_per_store=i.int("queue_messages_per_store", 2000, 10, 10_000_000),
        queue_bytes_per_store=i.int(
            "queue_bytes_per_store", 64 * 1024 * 1024, 1024 * 1024, 64 * 1024 * 1024 * 1024
        ),
        leases=i.bool("leases", False),
        lease_ttl_s=i.num("lease_ttl_s", 2.0, 0.5, 60.0),
    )
    i.done()
    return ingest


def _check_leases(ingest: IngestConfig, broker: HoBrokerConfig, url: str | None) -> None:
    if ingest.leases and (broker.share_group or url is None):
        raise ConfigError(
            "ingest.leases: needs database.url (PostgreSQL) and no broker.share_group: the "
            "workers share the stores through leases in the database instead"
        )


def _catalog(c: Table) -> CatalogConfig:
    token_file = c.str("api_token_file", None)
    publish = c.bool("publish", True)
    poll_ms = c.int("poll_ms", 100, 10, 60_000)
    max_upload_bytes = c.int("max_upload_bytes", 256 * 1024 * 1024, 1024, 4 * 1024**3)
    c.done()
    return CatalogConfig(
        publish=publish,
        poll_ms=poll_ms,
        api_token_file=token_file,
        api_token=None if token_file is None else read_token(token_file),
        max_upload_bytes=max_upload_bytes,
    )


def _enrol(e: Table) -> EnrolConfig:
    d_e = EnrolConfig()  # the defaults (a slots dataclass has no class-level values)
    enrol = EnrolConfig(
        login=e.choice("login", "cert", ("cert", "password")),
        pki_dir=e.str("pki_dir", d_e.pki_dir),
        password_file=e.str("password_file", d_e.password_file),
        acl_file=e.str("acl_file", d_e.acl_file),
        out_dir=e.str("out_dir", d_e.out_dir),
        lane_broker_host=e.str("lane_broker_host", None),
        lane_broker_port=e.int("lane_broker_port", 8883, 1, 65535),
        lane_ca_file=e.str("lane_ca_file", d_e.lane_ca_file),
        lane_journal=e.str("lane_journal", d_e.lane_journal),
    )
    e.done()
    return enrol


DEFAULT_CONFIG = DefaultConfig("/etc/lanesync/headoffice.toml")  # LANESYNC_CONFIG replaces it


def load(path: str | Path | ConfigSource = DEFAULT_CONFIG) -> HeadOfficeConfig:
    """headoffice.toml from `path` (a --config), else $LANESYNC_CONFIG, else the default."""
    cfg, source = load_toml(path, parse, "headoffice.example.toml", DEFAULT_CONFIG)
    return dataclasses.replace(cfg, source=source)
