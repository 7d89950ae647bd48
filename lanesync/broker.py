"""A real Mosquitto on a loopback port, for tests, the demo and benchmarks.

We test against the broker we ship against instead of a fake: session persistence, queue limits and
what a kill -9 loses are broker behaviour, and only the real thing shows them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, Self

__all__ = [
    "Broker",
    "BrokerError",
    "BrokerProcess",
    "MosquittoBroker",
    "find_mosquitto",
    "free_port",
    "wait_port",
]

# Where Debian installs mosquitto, tried when it is not on PATH (tests point it elsewhere).
FALLBACK_BINARY = "/usr/sbin/mosquitto"
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0
# A port picked by free_port() can be taken by someone else before mosquitto binds it.
_PORT_RETRIES = 3
_RUNNING = re.compile(rb"mosquitto version \S+ running")


class BrokerError(RuntimeError):
    """The broker could not be found, configured, started or stopped."""


# Parallel test workers (pytest-xdist) each pick ports from a range of their own, given as
# "LOW-HIGH" here (tests/conftest.py sets it). With the kernel's picks (bind to port 0), a port
# one worker picked for a broker it had yet to start was free to the kernel, so another worker
# could be handed it meanwhile: a RabbitMQ node books its vhost listeners' ports a boot (10-20 s)
# ahead, and lost one that way (connection refused). Below the kernel's ephemeral range
# (32768 and up), so no client socket takes one either.
PORT_RANGE_ENV = "LANESYNC_TEST_PORTS"
_next_in_range: list[int] = []


def _bind_free(sock: socket.socket, host: str) -> int:
    """Bind `sock` to a free port: the kernel's pick, or the next free one of PORT_RANGE_ENV."""
    spec = os.environ.get(PORT_RANGE_ENV)
    if not spec:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
    low, high = (int(x) for x in spec.split("-", 1))
    if not _next_in_range:
        _next_in_range.append(low)
    for _ in range(high - low):
        port = _next_in_range[0]
        _next_in_range[0] = port + 1 if port + 1 < high else low
        try:
            sock.bind((host, port))
        except OSError:
            continue
        return port
    raise BrokerError(f"no free port left in {PORT_RANGE_ENV}={spec}")


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return _bind_free(sock, host)


def free_ports(count: int, host: str = "127.0.0.1") -> tuple[int, ...]:
    """Return `count` distinct TCP ports that were free a moment ago.

    Each socket stays bound until all are picked: calling free_port() in a row can hand back
    the same port twice, since the kernel may give a just-closed ephemeral port out again (two
    equal listener ports made a RabbitMQ node fail its boot with duplicate_child_name)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            ports.append(_bind_free(sock, host))
        return tuple(ports)


def wait_port(host: str, port: int, timeout: float) -> None:
    """Block until `host:port` accepts a TCP connection; raise TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{host}:{port} not accepting connections: {exc}") from exc
            time.sleep(0.02)


def find_mosquitto() -> str:
    """Locate the mosquitto binary (it lives in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    if os.access(FALLBACK_BINARY, os.X_OK):
        return FALLBACK_BINARY
    raise BrokerError(
        "mosquitto binary not found on PATH or at /usr/sbin/mosquitto; "
        "install it with `apt-get install mosquitto` (./run does this)"
    )


class Broker(Protocol):
    """What tests, the demo and benchmarks need from a broker process, whichever server it is.

    Implemented by MosquittoBroker, lanesync.nats.NatsBroker and lanesync.rabbitmq's
    RabbitMQBroker (and RabbitMQLease, a vhost of a shared node), so one fault test runs on all.
    """

    kind: str  # "mosquitto", "nats" or "rabbitmq": for logs, and for tests that know its limits
    workdir: Path
    persistence: bool

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def pid(self) -> int | None: ...

    @property
    def is_running(self) -> bool: ...

    def start(self, timeout: float = ...) -> Self: ...

    def stop(self, timeout: float = ...) -> None: ...

    def kill(self) -> None: ...

    def restart(self, timeout: float = ...) -> Self: ...

    def log_tail(self, n: int = 20) -> str: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class BrokerProcess:
    """What every broker we run as a child process shares: Mosquitto, NATS and RabbitMQ.

    A config and a log in `workdir`; `start()` writes the config, spawns the server with its
    output appended to the log (startup errors included, so `log_tail()` shows them), and
    returns once this run has logged `ready` AND the MQTT port accepts a connection: a TCP
    connect alone is fooled by another process holding the port while ours is about to exit
    with "address in use". A port we picked ourselves is picked again when it turns out to be
    taken (up to _PORT_RETRIES); a fixed one, or one a lane has seen, never changes, so
    `restart()` after `kill()` comes back on the SAME port, the way a real broker restart
    looks to a lane. `stop()` is SIGTERM (a clean shutdown), `kill()` SIGKILL (the crash).

    A subclass names its server (`kind`, `program`, `conf_name`, `log_name`, `ready`, the
    timeouts) and writes `config_text()`; the hooks below cover what its start needs more.
    """

    kind: str
    program: str  # the server's name in messages
    conf_name: str
    log_name: str
    ready: re.Pattern[bytes]  # logged by this run once every listener is open
    start_timeout: float = _START_TIMEOUT
    stop_timeout: float = _STOP_TIMEOUT
    poll_s: float = 0.02

    def __init__(
        self,
        workdir: Path,
        *,
        host: str,
        persistence: bool,
        fixed_port: bool,
        binary: str | None,
    ) -> None:
        self.workdir = workdir
        self._host = host
        self._port = 0
        self._fixed_port = fixed_port
        self.persistence = persistence
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
        return self.workdir / self.conf_name

    @property
    def log_path(self) -> Path:
        return self.workdir / self.log_name

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return (
            f"<{type(self).__name__} {self._host}:{self._port} {state} "
            f"persistence={self.persistence}>"
        )

    # -- what a subclass provides -----------------------------------------------------------

    def config_text(self) -> str:
        raise NotImplementedError

    def find_binary(self) -> str:
        """The server's executable when none was given."""
        raise NotImplementedError

    def _prepare(self) -> None:
        """Before the first attempt of a start: files the server needs besides its config."""

    def _write_config(self) -> None:
        """Before each spawn: the config (and whatever goes with it)."""
        self.conf_path.write_text(self.config_text())

    def _argv(self, binary: str) -> list[str]:
        return [binary, "-c", str(self.conf_path)]

    def _popen_options(self) -> dict[str, Any]:
        """More subprocess.Popen arguments (an environment, a session of its own)."""
        return {}

    def _launch(self, binary: str, timeout: float) -> None:
        """One attempt to start (a subclass may start a helper process around it)."""
        self._spawn(binary, timeout)

    def _port_taken(self, exc: BrokerError) -> bool:
        """Whether a failed attempt failed because a port we picked was taken."""
        return "in use" in self.log_tail(5)

    def _repick_ports(self) -> None:
        self._port = free_port(self._host)

    def _exited(self, proc: subprocess.Popen[bytes]) -> None:
        """The server exited during startup (a subclass may reap what it left)."""

    def _startup_report(self, log_start: int) -> str:
        """What a failed start says after its reason."""
        return f"log tail:\n{self.log_tail(20)}"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float | None = None) -> Self:
        """Spawn the server and return once its MQTT port accepts TCP connections."""
        timeout = self.start_timeout if timeout is None else timeout
        if self.is_running:
            raise BrokerError(f"{self!r} is already running")
        binary = self._binary or self.find_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        attempts = 1 if (self._fixed_port or self._started_once) else _PORT_RETRIES
        for attempt in range(attempts):
            try:
                self._launch(binary, timeout)
            except BrokerError as exc:
                if attempt + 1 < attempts and self._port_taken(exc):
                    self._repick_ports()
                    continue
                raise
            break
        self._started_once = True
        return self

    def _spawn(self, binary: str, timeout: float) -> None:
        self._write_config()
        log: IO[bytes]
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                self._argv(binary),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
                **self._popen_options(),
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._exited(self._proc)
                self._proc = None
                raise BrokerError(
                    f"{self.program} exited with code {code} during startup on port "
                    f"{self._port}; {self._startup_report(log_start)}"
                )
            if self._logged_ready(log_start):
                try:
                    with socket.create_connection((self._host, self._port), timeout=0.5):
                        return
                except OSError:
                    pass
            if time.monotonic() >= deadline:
                self._terminate(signal.SIGKILL, self.stop_timeout)
                raise BrokerError(
                    f"{self.program} did not listen on {self._host}:{self._port} within "
                    f"{timeout} s; {self._startup_report(log_start)}"
                )
            time.sleep(self.poll_s)

    def _logged_ready(self, offset: int) -> bool:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return self.ready.search(f.read()) is not None
        except FileNotFoundError:
            return False

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM and wait: a clean shutdown (see the class for what each server keeps)."""
        self._terminate(signal.SIGTERM, self.stop_timeout if timeout is None else timeout)

    def kill(self) -> None:
        """SIGKILL: the crash case (see the class for what each server loses)."""
        self._terminate(signal.SIGKILL, self.stop_timeout)

    def restart(self, timeout: float | None = None) -> Self:
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
                    f"{self.program} on port {self._port} ignored {sig.name} for {timeout} s; "
                    "killed"
                ) from None

    def log_tail(self, n: int = 20) -> str:
        """The last `n` lines of the server's log (startup errors included)."""
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


class MosquittoBroker(BrokerProcess):
    """One mosquitto process with its config, log and persistence db in `workdir`.

    `stop()` saves the db when persistence is on; `kill()` loses whatever changed since the
    last autosave.
    """

    kind = "mosquitto"
    program = "mosquitto"
    conf_name = "mosquitto.conf"
    log_name = "mosquitto.log"
    ready = _RUNNING  # logged only after mosquitto opened its listeners

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        persistence: bool = False,
        autosave_interval: int = 60,
        extra_config: Sequence[str] = (),
        extra_listeners: Sequence[Sequence[str]] = (),
        preamble: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        """`extra_config` follows the listener's line, so listener options in it apply to it.
        Each of `extra_listeners` is the options of one more listener, on a port of its own
        (`extra_ports`). `preamble` comes before everything: `per_listener_settings true` must
        precede every security option (mosquitto refuses it after one, src/conf.c).
        """
        super().__init__(
            Path(workdir),
            host=host,
            persistence=persistence,
            fixed_port=port is not None,
            binary=binary,
        )
        self._port = port if port is not None else free_port(host)
        self.autosave_interval = autosave_interval
        self.extra_config = tuple(extra_config)
        self.extra_listeners = tuple(tuple(lines) for lines in extra_listeners)
        self.preamble = tuple(preamble)
        self._extra_ports = tuple(free_port(host) for _ in self.extra_listeners)

    @property
    def extra_ports(self) -> tuple[int, ...]:
        """The ports of `extra_listeners`, in their order (fixed once started, like `port`)."""
        return self._extra_ports

    @property
    def db_path(self) -> Path:
        return self.workdir / "mosquitto.db"

    def find_binary(self) -> str:
        return find_mosquitto()

    def _repick_ports(self) -> None:
        self._port = free_port(self._host)
        self._extra_ports = tuple(free_port(self._host) for _ in self._extra_ports)

    # -- configuration --------------------------------------------------------------------

    def config_text(self) -> str:
        """The mosquitto.conf we run with; every option checked against mosquitto.conf(5)."""
        lines = [
            "# written by lanesync.broker.MosquittoBroker",
            *self.preamble,
            # With `listener` given, the default listener on 1883 is not started.
            f"listener {self._port} {self._host}",
            # Mosquitto 2.0 defaults allow_anonymous to false once a listener is configured.
            "allow_anonymous true",
            # Run as root, mosquitto drops privileges to user `mosquitto` (or `nobody`) and could
            # then not write the log or the db in our work dir; naming ourselves keeps it as is.
            # Has no effect when not run as root.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            f"log_dest file {self.log_path}",
            "log_timestamp true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "connection_messages true",
            # Per client, QoS 1/2 messages queued ABOVE those in flight (default 1000). A lane
            # offline for hours must not have its head-office replies dropped by the broker.
            # (max_queued_bytes stays at its default 0 = no byte limit; past either limit the
            # broker drops further messages silently.)
            "max_queued_messages 100000",
            # Outgoing QoS 1/2 in flight per client (default 20). The man page notes only 1
            # guarantees in-order delivery when retries happen; ingest checks seq order anyway.
            "max_inflight_messages 100",
            # Applies to ALL clients: an MQTT 3.1.1 client sending a larger packet is simply
            # disconnected (only v5 clients are told the limit). 4 MiB >> our batch byte cap.
            f"max_packet_size {4 * 1024 * 1024}",
            "set_tcp_nodelay true",
        ]
        if self.persistence:
            lines += [
                "persistence true",
                # Mosquitto 1.x concatenated location and file name without a separator; 2.0.11
                # adds one (checked). The trailing slash works with both.
                f"persistence_location {self.workdir}/",
                "persistence_file mosquitto.db",
                # Seconds between saves (default 1800). SIGTERM also saves; SIGKILL loses
                # whatever changed since the last autosave.
                f"autosave_interval {self.autosave_interval}",
            ]
        else:
            lines.append("persistence false")
        lines += self.extra_config
        for port, options in zip(self._extra_ports, self.extra_listeners, strict=True):
            lines += [f"listener {port} {self._host}", *options]
        return "\n".join(lines) + "\n"
