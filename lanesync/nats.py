"""A real NATS server with its MQTT listener on a loopback port, for tests and the demo.

The design promises the protocol works unchanged on NATS's MQTT 3.1.1 listener; the only way to
keep that promise is to run the end-to-end suite against the real server. NATS keeps every piece
of MQTT state (sessions, retained messages, QoS 1 messages awaiting delivery) in JetStream
streams, so JetStream must be on and the server must have a `server_name`
(https://docs.nats.io/running-a-nats-service/configuration/mqtt: "the user's account must be
JetStream enabled ... persistence is needed for the sessions and retained messages").

Differences from Mosquitto that show in lanesync's tests (checked against nats-server 2.9.10):
- There is no volatile mode: 2.9 keeps the MQTT streams (sessions, retained and QoS 1 messages)
  in JetStream's file store (only consumers may live in memory: `consumer_memory_storage`), and
  a kill -9 of the process loses none of it. `persistence=False` therefore empties the store
  directory before every start, which is what a Mosquitto restart without persistence looks like.
- `$share/<group>/...` subscriptions are not shared subscriptions on 2.9: the filter is taken as
  a literal topic and matches nothing lanesync publishes.
- A QoS 2 PUBLISH makes the server close the connection ("publish QoS=2 not supported").
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from lanesync.broker import BrokerError, BrokerProcess, free_port

__all__ = ["NatsBroker", "find_nats_server"]

# Where the distribution installs nats-server, tried when it is not on PATH.
FALLBACK_BINARY = "/usr/sbin/nats-server"
_START_TIMEOUT = 15.0
# Logged once every listener (MQTT included) is open.
_READY = re.compile(rb"Server is ready")


def find_nats_server() -> str:
    """Locate the nats-server binary (Debian puts it in /usr/sbin, often not on PATH)."""
    found = shutil.which("nats-server")
    if found:
        return found
    if os.access(FALLBACK_BINARY, os.X_OK):
        return FALLBACK_BINARY
    raise BrokerError(
        "nats-server binary not found on PATH or at /usr/sbin/nats-server; "
        "install Debian's package with `apt-get install nats-server`"
    )


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class NatsBroker(BrokerProcess):
    """One nats-server process serving MQTT, with its config, log and JetStream store in `workdir`.

    The shared lifecycle is lanesync.broker.BrokerProcess (the `Broker` protocol). `stop()`
    closes the clients and the JetStream store cleanly; after `kill()` too, sessions and queued
    messages survive, since JetStream's file store is already written to the OS (unlike
    Mosquitto between autosaves).
    """

    kind = "nats"
    program = "nats-server"
    conf_name = "nats.conf"
    log_name = "nats.log"  # nats-server logs to stderr when no log_file is set: one writer
    ready = _READY
    start_timeout = _START_TIMEOUT

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        persistence: bool = False,
        extra_config: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        super().__init__(
            Path(workdir),
            host=host,
            persistence=persistence,
            fixed_port=port is not None,
            binary=binary,
        )
        self._port = port if port is not None else free_port(host)
        self.extra_config = tuple(extra_config)

    @property
    def store_dir(self) -> Path:
        return self.workdir / "jetstream"

    def find_binary(self) -> str:
        return find_nats_server()

    def _prepare(self) -> None:
        if not self.persistence:
            # JetStream has no volatile mode for MQTT state: forget it the way a Mosquitto
            # without persistence forgets sessions and retained messages on restart.
            shutil.rmtree(self.store_dir, ignore_errors=True)

    # -- configuration --------------------------------------------------------------------

    def config_text(self) -> str:
        """The nats.conf we run with."""
        lines = [
            "# written by lanesync.nats.NatsBroker",
            # MQTT refuses to start without a server name (it keys JetStream state by it).
            f"server_name: {_quoted(f'lanesync-{self._port}')}",
            # The NATS client listener cannot be switched off; -1 lets the kernel pick a port,
            # so we never collide with a system nats-server on 4222.
            f"listen: {_quoted(f'{self._host}:-1')}",
            # 1 MiB is NATS's default max_payload, and an MQTT PUBLISH larger than it is refused.
            # It is why the agent caps replication.batch_max_bytes at 900 KiB.
            "max_payload: 1048576",
            "jetstream {",
            f"  store_dir: {_quoted(str(self.store_dir))}",
            # Without limits JetStream reserves a share of the machine's RAM and disk; MQTT state
            # for a test chain is a few MiB.
            "  max_memory_store: 268435456",
            "  max_file_store: 1073741824",
            "}",
            "mqtt {",
            f"  listen: {_quoted(f'{self._host}:{self._port}')}",
            # QoS 1 messages sent to one subscription without a PUBACK (default 1024; a filter
            # ending in # counts twice; docs.nats.io .../configuration/mqtt). Beyond it the
            # server holds messages back in JetStream instead of dropping them. Head office
            # PUBACKs on receipt, so this is only a flow-control window.
            "  max_ack_pending: 1024",
            # A QoS 1 message not PUBACKed within ack_wait is redelivered as a DUP (default 30s).
            '  ack_wait: "30s"',
            "}",
            *self.extra_config,
        ]
        return "\n".join(lines) + "\n"
