"""How agent and head office prove who they are to the broker, and check it is the broker.

One place for the `[broker]` security keys both daemons share (`tls`, `ca_file`, `cert_file`,
`key_file`, `tls_server_name`, `username`, `password`, `password_file`) and for the TLS context
handed to aiomqtt, so a lane, head office and `lanesync doctor` connect the same way.

Identity model: each lane has its own identity (`store-S001.L1`; a store hub's bridge one for
its store, `store-S001`): a client certificate whose Common Name is the MQTT username, which
Mosquitto maps with `use_identity_as_username true`, or a username and password in the broker's
password file. Head office has its own (`headoffice`). `lanesync headoffice acl` writes the
Mosquitto ACL that lets each lane write only its own journal/hello/status/request topics and
read only its own acks and replies; the broker makes each store-side identity its client id
(headoffice/acl.py says why and how).

Files are checked when the config is loaded (each error names the key), and the TLS context is
built again for every connection, so a certificate renewed in place is used at the next
reconnect without a restart. A file that breaks later (removed, wrong key) fails that connection
attempt like a dead link: the lane keeps journaling sales and retries with backoff.

`Client` is aiomqtt's client with a CONNACK deadline of its own (`connack_timeout_s`, a
`[broker]` key of both daemons), so a relay that accepts and closes costs one backoff step, not
the publish timeout (see the class).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

import aiomqtt
from paho.mqtt.client import Client as PahoClient
from paho.mqtt.client import DisconnectFlags
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from protocol.errors import ConfigError
from protocol.runtime.config import Table

PLAIN_PORT = 1883
TLS_PORT = 8883  # IANA's secure-mqtt port
# From opening TCP to the broker's CONNACK (TLS handshake included). A broker on a LAN or over
# TLS across the country answers in well under a second; a relay whose far side is down never
# does. Separate from the publish timeout, which waits for PUBACKs of large batches.
DEFAULT_CONNACK_TIMEOUT_S = 5.0

_T = TypeVar("_T")


class BrokerFileError(ConfigError, OSError):
    """A TLS or password file named in [broker] cannot be used; the message names the key.

    A ConfigError when the config is loaded; an OSError when a connection is being made, so
    the reconnect loops (which retry OSError) treat it like a dead link instead of crashing.
    """


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """[broker] TLS keys. Hostname checking is always on; there is no key to turn it off."""

    ca_file: str | None = None  # None: the system's trusted CAs (a broker with a public cert)
    cert_file: str | None = None  # this store's (or head office's) client certificate, PEM
    key_file: str | None = None  # its private key; None: the key is inside cert_file
    server_name: str | None = None  # name the broker's certificate must carry; None: host


@dataclass(frozen=True, slots=True)
class Credentials:
    """What [broker] says about logging in; `password` is already read from password_file."""

    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    tls: TlsConfig | None = None
    connack_timeout_s: float = DEFAULT_CONNACK_TIMEOUT_S

    @property
    def default_port(self) -> int:
        return TLS_PORT if self.tls is not None else PLAIN_PORT


def parse_credentials(b: Table) -> Credentials:
    """Read and check the security keys of a [broker] table (`b`), naming the key at fault,
    and `connack_timeout_s`, which both daemons' connections share."""
    connack_timeout_s = float(b.num("connack_timeout_s", DEFAULT_CONNACK_TIMEOUT_S, 0.1, 600))
    username = b.str("username", None) or None
    password = b.str("password", None) or None
    password_file = b.str("password_file", None) or None
    ca_file = b.str("ca_file", None) or None
    cert_file = b.str("cert_file", None) or None
    key_file = b.str("key_file", None) or None
    server_name = b.str("tls_server_name", None) or None
    tls = b.bool("tls", ca_file is not None or cert_file is not None)
    if not tls:
        for key, value in (
            ("ca_file", ca_file),
            ("cert_file", cert_file),
            ("key_file", key_file),
            ("tls_server_name", server_name),
        ):
            if value is not None:
                raise ConfigError(
                    f"broker.{key}: set, but broker.tls = false; remove one of the two"
                )
    if key_file is not None and cert_file is None:
        raise ConfigError("broker.key_file: needs broker.cert_file (the certificate it signs)")
    if password is not None and password_file is not None:
        raise ConfigError("broker.password_file: set together with broker.password; keep one")
    if password_file is not None:
        password = read_password(password_file)
    if password is not None and username is None:
        # MQTT 3.1.1 (3.1.2.9): a password without a user name is a protocol violation.
        key = "password_file" if password_file is not None else "password"
        raise ConfigError(f"broker.{key}: needs broker.username")
    tls_config = TlsConfig(ca_file, cert_file, key_file, server_name) if tls else None
    if tls_config is not None:
        tls_context(tls_config)  # fail at start, naming the key, not at the first connect
    return Credentials(username, password, password_file, tls_config, connack_timeout_s)


def read_password(path: str) -> str:
    """The secret in `path` (one line; a trailing newline is not part of it)."""
    try:
        secret = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except FileNotFoundError:
        raise BrokerFileError(f"broker.password_file: no such file {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerFileError(f"broker.password_file: cannot read {path}: {_why(exc)}") from None
    if not secret or "\n" in secret:
        raise BrokerFileError(
            f"broker.password_file: {path} must hold the password on one non-empty line"
        )
    return secret


class _NamedServerContext(ssl.SSLContext):
    """An SSLContext that checks the broker's certificate for a fixed name.

    paho always passes the host it dials as `server_hostname` (paho.mqtt.client
    `_ssl_wrap_socket`), so a broker reached by IP address or through a tunnel would be checked
    against the wrong name; `tls_server_name` puts the right one in its place (SNI included).
    """

    expected_name: str | None = None

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        return super().wrap_socket(
            sock,
            server_side,
            do_handshake_on_connect,
            suppress_ragged_eofs,
            self.expected_name or server_hostname,
            session,
        )


def tls_context(tls: TlsConfig | None) -> ssl.SSLContext | None:
    """A fresh client context for one connection, or None for plain MQTT.

    TLS 1.2 or later, the broker's certificate verified against `ca_file` (or the system's
    CAs) and its name checked; our client certificate presented when one is configured.
    """
    if tls is None:
        return None
    ctx = _NamedServerContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.expected_name = tls.server_name
    if tls.ca_file is None:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        _readable("ca_file", tls.ca_file)
        try:
            ctx.load_verify_locations(cafile=tls.ca_file)
        except (ssl.SSLError, ValueError) as exc:
            raise BrokerFileError(
                f"broker.ca_file: {tls.ca_file} holds no PEM CA certificate: {_why(exc)}"
            ) from None
    if tls.cert_file is not None:
        _readable("cert_file", tls.cert_file)
        if tls.key_file is not None:
            _readable("key_file", tls.key_file)
        key = "key_file" if tls.key_file is not None else "cert_file"
        key_path = tls.key_file or tls.cert_file

        def encrypted_key() -> str:
            # Without this callback OpenSSL would prompt on the terminal: a daemon would hang.
            raise BrokerFileError(
                f"broker.{key}: the private key in {key_path} is encrypted; give the service "
                "an unencrypted key readable only by its user"
            )

        try:
            ctx.load_cert_chain(tls.cert_file, tls.key_file, password=encrypted_key)
        except ssl.SSLError as exc:
            reason = str(exc.reason or exc)
            if "KEY_VALUES_MISMATCH" in reason:
                raise BrokerFileError(
                    f"broker.{key}: the private key in {key_path} does not belong to the "
                    f"certificate in {tls.cert_file}"
                ) from None
            raise BrokerFileError(
                f"broker.cert_file: cannot load a PEM certificate from {tls.cert_file} and its "
                f"private key from {key_path}: {reason}"
            ) from None
    return ctx


def _readable(key: str, path: str) -> None:
    if not os.path.exists(path):
        raise BrokerFileError(f"broker.{key}: no such file {path}")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise BrokerFileError(f"broker.{key}: cannot read {path}: {_why(exc)}") from None


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)


_CLIENT_LIBRARIES = (f"{os.sep}aiomqtt{os.sep}", f"{os.sep}paho{os.sep}")


def is_client_socket_race(exc: BaseException) -> bool:
    """An AttributeError on a vanished socket raised inside the MQTT client library: a link
    failure, not a bug of ours.

    aiomqtt 2.5 runs paho's blocking connect() on an executor thread while paho's socket
    callbacks run on the event loop (aiomqtt/client.py, "[3] Run connect() within an executor
    thread"). A connection reset between the two leaves paho's socket None under the other
    thread, and aiomqtt then calls `sock.fileno()` (on_socket_register_write) or sets socket
    options on None. Seen when a link dropped 1000 lanes at once (lanesync bench fleet): the
    replicator took it for a bug and stopped. Only such errors count: the attribute is looked
    up on None, and the innermost frame is aiomqtt's or paho's.
    """
    if not isinstance(exc, AttributeError) or exc.name is None or exc.obj is not None:
        return False
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    path = tb.tb_frame.f_code.co_filename
    return any(lib in path for lib in _CLIENT_LIBRARIES)


def socket_race_failure(group: BaseExceptionGroup[AttributeError]) -> str:
    """What a group of AttributeErrors caught around an MQTT session means as a link failure;
    raises the group of those that are not the client's socket race (bugs stay bugs)."""
    races, bugs = group.split(is_client_socket_race)
    if bugs is not None:
        raise bugs
    assert races is not None
    return "; ".join(f"socket closed under the client ({e})" for e in races.exceptions)


class Client(aiomqtt.Client):
    """aiomqtt's client with a CONNACK deadline of its own, separate from `timeout`.

    aiomqtt 2.5 waits for CONNACK with its one `timeout` for all communication (`__aenter__`
    awaits `self._connected` through `_wait_for(..., timeout=None)`, i.e. `self.timeout`, 10 s
    by default), and its `_on_disconnect` returns early while `_connected` is not done ("Return
    early if we are not connected yet", empicano/aiomqtt aiomqtt/client.py). paho does report a
    connection closed before CONNACK: its reader sees EOF or ECONNRESET, `_loop_rc_handle`
    closes the socket and calls on_disconnect (paho/mqtt/client.py). So behind a load balancer,
    TLS terminator or TCP relay whose broker is down, every attempt waited the whole publish
    timeout for a CONNACK that could never come. Here:

    - a close before CONNACK fails the connect at once (MqttError naming it);
    - TCP connect, TLS handshake and CONNACK together get `connack_timeout_s` (paho's blocking
      connect on aiomqtt's executor thread is bounded by paho's `connect_timeout`, the wait for
      CONNACK by what is left of the deadline), then MqttError;
    - a failed attempt closes paho's socket (aiomqtt leaves it open after a CONNACK timeout,
      until paho's keepalive check closes it);

    and `timeout` keeps its meaning for publish, subscribe and disconnect.
    """

    def __init__(self, *args: Any, connack_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connack_timeout_s = connack_timeout_s
        self._connack_deadline: float | None = None
        self._client.connect_timeout = connack_timeout_s

    @property
    def _where(self) -> str:
        return f"{self._hostname}:{self._port}"

    async def __aenter__(self) -> Self:
        self._connack_deadline = time.monotonic() + self.connack_timeout_s
        try:
            return await super().__aenter__()
        except AttributeError as exc:
            self._abandon()
            if not is_client_socket_race(exc):
                raise
            raise aiomqtt.MqttError(
                f"connection to {self._where} closed before CONNACK (socket closed under "
                f"the client: {exc})"
            ) from None
        except aiomqtt.MqttError as exc:
            self._abandon()
            if type(exc) is not aiomqtt.MqttError or "CONNACK" in str(exc):
                raise  # a broker's refusal (MqttConnectError), or ours, already named
            # aiomqtt's text of an OSError from paho's connect (a reset during the send of
            # CONNECT, a refused port, a TLS failure) does not say where or when.
            raise aiomqtt.MqttError(
                f"connection to {self._where} failed before CONNACK: {exc}"
            ) from None
        except BaseException:
            self._abandon()
            raise
        finally:
            self._connack_deadline = None

    def _abandon(self) -> None:
        """Close paho's socket of a failed attempt (its callbacks remove aiomqtt's reader
        and misc task first)."""
        self._client._sock_close()

    async def _wait_for(self, fut: Awaitable[_T], timeout: float | None) -> _T:
        deadline = self._connack_deadline
        if fut is not self._connected or deadline is None or timeout is not None:
            return await super()._wait_for(fut, timeout)
        left = max(0.0, deadline - time.monotonic())
        try:
            return await asyncio.wait_for(fut, left)
        except TimeoutError:
            raise aiomqtt.MqttError(
                f"no CONNACK from {self._where} within {self.connack_timeout_s:g}s "
                "(broker.connack_timeout_s)"
            ) from None

    def _on_disconnect(
        self,
        client: PahoClient,
        userdata: Any,
        flags: DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        fut = self._connected
        if not fut.done():
            fut.set_exception(
                aiomqtt.MqttError(
                    f"connection to {self._where} closed before CONNACK ({reason_code}); "
                    "a relay or load balancer whose broker is down, or a broker refusing "
                    "this client"
                )
            )
            # Seen: __aenter__ raises it when it awaits; when the attempt failed otherwise
            # first (connect() itself got the reset), asyncio would log it as never retrieved.
            fut.exception()
            return
        super()._on_disconnect(client, userdata, flags, reason_code, properties)


class BrokerSettings(Protocol):
    """What the lane's and head office's [broker] tables both say about the connection."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def keepalive(self) -> int: ...
    @property
    def tls(self) -> TlsConfig | None: ...
    @property
    def connack_timeout_s(self) -> float: ...


ClientT = TypeVar("ClientT", bound=Client)


def connect(
    broker: BrokerSettings,
    identifier: str,
    *,
    cls: type[ClientT] = Client,  # type: ignore[assignment]  # the default is the bound
    connack_timeout_s: float | None = None,
    **options: Any,
) -> ClientT:
    """The one way every part (replicator, doctor, ingest, the catalog publisher) opens its
    broker connection: address, login, a TLS context made afresh (renewed certificates are
    picked up at each reconnect), keepalive and the CONNACK deadline from the [broker] table;
    `options` are the part's own (will, clean_session, inflight window, socket options...)."""
    return cls(
        broker.host,
        broker.port,
        connack_timeout_s=broker.connack_timeout_s
        if connack_timeout_s is None
        else connack_timeout_s,
        identifier=identifier,
        username=broker.username,
        password=broker.password,
        tls_context=tls_context(broker.tls),
        keepalive=broker.keepalive,
        **options,
    )
