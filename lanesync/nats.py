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

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from lanesync.broker import BrokerError, free_port

__all__ = ["NatsBroker", "find_nats_server"]

_FALLBACK_BINARY = "/usr/sbin/nats-server"
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 10.0
_PORT_RETRIES = 3
# Logged once every listener (MQTT included) is open.
_READY = re.compile(rb"Server is ready")


def find_nats_server() -> str:
    """Locate the nats-server binary (Debian puts it in /usr/sbin, often not on PATH)."""
    found = shutil.which("nats-server")
    if found:
        return found
    if os.access(_FALLBACK_BINARY, os.X_OK):
        return _FALLBACK_BINARY
    raise BrokerError(
        "nats-server binary not found on PATH or at /usr/sbin/nats-server; "
        "install Debian's package with `apt-get install nats-server`"
    )


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class NatsBroker:
    """One nats-server process serving MQTT, with its config, log and JetStream store in `workdir`.

    Same surface as lanesync.broker.MosquittoBroker (the `Broker` protocol): the MQTT port is
    fixed at construction, so `restart()` after `kill()` comes back on the SAME port.
    """

    kind = "nats"

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
        self.workdir = Path(workdir)
        self._host = host
        self._fixed_port = port is not None
        self._port = port if port is not None else free_port(host)
        self.persistence = persistence
        self.extra_config = tuple(extra_config)
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_once = False

    # -- paths and properties -------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def conf_path(self) -> Path:
        return self.workdir / "nats.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "nats.log"

    @property
    def store_dir(self) -> Path:
        return self.workdir / "jetstream"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<NatsBroker {self._host}:{self._port} {state} persistence={self.persistence}>"

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

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = _START_TIMEOUT) -> Self:
        """Spawn nats-server and return once its MQTT port accepts TCP connections."""
        if self.is_running:
            raise BrokerError(f"{self!r} is already running")
        binary = self._binary or find_nats_server()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.persistence:
            # JetStream has no volatile mode for MQTT state: forget it the way a Mosquitto
            # without persistence forgets sessions and retained messages on restart.
            shutil.rmtree(self.store_dir, ignore_errors=True)
        attempts = 1 if (self._fixed_port or self._started_once) else _PORT_RETRIES
        for attempt in range(attempts):
            try:
                self._spawn(binary, timeout)
            except BrokerError:
                if attempt + 1 < attempts and "in use" in self.log_tail(5):
                    self._port = free_port(self._host)
                    continue
                raise
            break
        self._started_once = True
        return self

    def _spawn(self, binary: str, timeout: float) -> None:
        self.conf_path.write_text(self.config_text())
        log: IO[bytes]
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        # nats-server logs to stderr when no log_file is set: one writer, startup errors included.
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [binary, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise BrokerError(
                    f"nats-server exited with code {code} during startup on port {self._port}; "
                    f"log tail:\n{self.log_tail(20)}"
                )
            # A TCP connect alone could reach another process holding the port: also wait for
            # this run's "Server is ready", logged after all listeners are open.
            if self._logged_ready(log_start):
                try:
                    with socket.create_connection((self._host, self._port), timeout=0.5):
                        return
                except OSError:
                    pass
            if time.monotonic() >= deadline:
                self._terminate(signal.SIGKILL, _STOP_TIMEOUT)
                raise BrokerError(
                    f"nats-server did not listen on {self._host}:{self._port} within {timeout} s; "
                    f"log tail:\n{self.log_tail(20)}"
                )
            time.sleep(0.02)

    def _logged_ready(self, offset: int) -> bool:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return _READY.search(f.read()) is not None
        except FileNotFoundError:
            return False

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """SIGTERM and wait: nats-server closes its clients and the JetStream store cleanly."""
        self._terminate(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: the crash case. JetStream's file store is already written to the OS, so
        (unlike Mosquitto between autosaves) sessions and queued messages survive it."""
        self._terminate(signal.SIGKILL, _STOP_TIMEOUT)

    def restart(self, timeout: float = _START_TIMEOUT) -> Self:
        """Start again on the same port (stopping cleanly first if still running)."""
        if self.is_running:
            self.stop()
        return self.start(timeout)

    def _terminate(self, sig: signal.Signals, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise BrokerError(
                    f"nats-server on port {self._port} ignored {sig.name} for {timeout} s; killed"
                ) from None

    def log_tail(self, n: int = 20) -> str:
        """The last `n` lines of the server log (startup errors included)."""
        with contextlib.suppress(FileNotFoundError):
            lines = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join(lines[-n:])
        return ""

    def __enter__(self) -> Self:
        if not self.is_running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
