"""A RabbitMQ node of our own with its MQTT plugin on a loopback port, for tests and the demo.

The design promises the protocol works on any MQTT 3.1.1 broker, and RabbitMQ is the one a
chain's IT most often runs already. Its MQTT plugin maps MQTT onto queues: every QoS 1
subscription of a persistent session is a durable queue `mqtt-subscription-<client id>qos1`,
QoS 1 publishes are persistent messages, and retained messages live in a per-vhost DETS file.
(RabbitMQ 3.10 "MQTT Plugin" guide, rabbitmq/rabbitmq-website site/mqtt.md: "Subscription
Durability", "Retained Messages and Stores".)

Each broker is a node of its own, never the machine's: its own node data, config, enabled
plugins file, log and Erlang cookie in `workdir`, its MQTT listener on a free loopback port, no
AMQP listener, and its own epmd (the Erlang port mapper) on a free loopback port, started and
stopped with it. A node registers its name with epmd, and one the VM starts itself
(`epmd -daemon`) outlives the node; with an epmd each, nodes never see each other's names nor
the machine's `rabbit@...`.

Differences from Mosquitto that show in lanesync's tests (checked against Debian's 3.10.8):
- Retained messages are fetched for the subscription's filter as an exact topic name: a
  wildcard subscription (head office's `lanesync/v1/+/+/status`) gets no retained message
  (rabbit_mqtt_processor:maybe_send_retained_message in rabbitmq/rabbitmq-server; later
  versions say so: "Wildcards are currently not supported when fetching retained messages").
- No shared subscriptions: `$share/<group>/...` is an ordinary filter whose first segment is
  `$share`, and matches nothing lanesync publishes.
- QoS 2 is downgraded to QoS 1 (SUBACK grants 1, a QoS 2 PUBLISH is answered with PUBACK;
  site/mqtt.md: "RabbitMQ does not support QoS2 subscriptions").
- MQTT 3.1.1 only; MQTT 5 arrived in RabbitMQ 3.13 (rabbitmq.com/docs/3.13/mqtt).
- MQTT `/` becomes AMQP `.` in routing keys, so a topic segment with a dot would be routed
  wrongly (site/mqtt.md, "How it Works"); lanesync's segments are `[A-Za-z0-9_-]`
  (protocol.identity.SEGMENT_RE).
- A persistent session's queues expire after `mqtt.subscription_ttl` without a consumer (24 h
  by default): head office away longer than that loses what was queued for it, and its lanes
  resend everything it has not acknowledged.
- A QoS 1 PUBLISH is acknowledged once the message is on disk for its durable queues, so a
  kill -9 of the node loses nothing that was acknowledged (unlike Mosquitto between autosaves):
  the plugin publishes QoS 1 on a channel in confirm mode (rabbit_mqtt_processor:amqp_pub),
  and "for persistent messages routed to durable queues, this means persisting to disk"
  (site/confirms.md).
"""

from __future__ import annotations

import contextlib
import json
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
from typing import IO, Any, Self

from lanesync.broker import BrokerError, BrokerProcess, free_ports

__all__ = [
    "NODE_NAME",
    "RabbitMQBroker",
    "RabbitMQLease",
    "SharedRabbitMQ",
    "find_rabbitmq_server",
    "process_group_alive",
]

# Debian's /usr/sbin/rabbitmq-server is a wrapper that switches to the `rabbitmq` user, who
# could not write our work dir; the script it runs starts the node as whoever calls it.
DEBIAN_SCRIPT = "/usr/lib/rabbitmq/bin/rabbitmq-server"
# Booting the Erlang VM and RabbitMQ takes 4 s of CPU; on a loaded 2-core machine 10-20 s.
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
_PORT_GRACE = 1.0
_READY = re.compile(rb"Server startup complete")
# Every node has the same name: each registers it with an epmd of its own, so no two ever
# meet, and a node's data directory can only be reused under the name that made it
# (rabbitmq-website site/backup.md: "Internal node database stores node's name").
NODE_NAME = "lanesync@localhost"
VHOST = "lanesync"
# The user anonymous MQTT connections act as (`mqtt.default_user`), created with the vhost.
USER = "lanesync"


def find_rabbitmq_server() -> str:
    """Locate the script that starts a RabbitMQ node as the current user."""
    if os.access(DEBIAN_SCRIPT, os.X_OK):
        return DEBIAN_SCRIPT
    found = shutil.which("rabbitmq-server")
    if found:
        return found
    raise BrokerError(
        f"rabbitmq-server not found at {DEBIAN_SCRIPT} or on PATH; "
        "install Debian's package with `apt-get install rabbitmq-server` (./run test does this)"
    )


class RabbitMQBroker(BrokerProcess):
    """One RabbitMQ node serving MQTT, with its config, data and log in `workdir`.

    Same surface as lanesync.broker.MosquittoBroker (the `Broker` protocol), and the same
    lifecycle (lanesync.broker.BrokerProcess): the MQTT port is fixed at construction, so
    `restart()` after `kill()` comes back on the SAME port. `stop()` has the script ask the
    node to stop, which closes the MQTT connections and the message stores cleanly; `kill()`
    is SIGKILL to the node's whole process group.

    `seed` is the data directory of a node that booted once and stopped cleanly (see
    `make_seed`); a broker starting without data of its own starts from a copy of it. That
    skips what only a node's first boot does, 3 to 6 s of it waiting for cluster peers before
    the MQTT plugin elects itself leader of its client-id tracker (mqtt_node:start in
    rabbitmq/rabbitmq-server deps/rabbitmq_mqtt). A copied data directory of a stopped node with
    the same name is how RabbitMQ documents restoring one (site/backup.md); the one absolute
    path inside it is moved along (_copy_seed).
    """

    kind = "rabbitmq"
    program = "rabbitmq-server"
    conf_name = "rabbitmq.conf"
    log_name = "rabbitmq.log"
    ready = _READY  # "Server startup complete": logged once every plugin has started
    start_timeout = _START_TIMEOUT
    stop_timeout = _STOP_TIMEOUT
    poll_s = 0.05

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        persistence: bool = False,
        extra_config: Sequence[str] = (),
        seed: Path | None = None,
        vhost_listeners: int = 0,
        binary: str | None = None,
    ) -> None:
        """`vhost_listeners`: that many more MQTT listeners, each serving a vhost of its own
        (`vhost_ports`), for SharedRabbitMQ."""
        # Absolute: the node records its data paths (see _copy_seed).
        super().__init__(
            Path(workdir).absolute(),
            host=host,
            persistence=persistence,
            fixed_port=port is not None,
            binary=binary,
        )
        self._vhost_ports: tuple[int, ...] = ()
        self._pick_ports(port, vhost_listeners)
        self.extra_config = tuple(extra_config)
        self.seed = seed
        self._epmd: subprocess.Popen[bytes] | None = None

    # -- paths and properties -------------------------------------------------------------

    @property
    def vhost_ports(self) -> tuple[int, ...]:
        """The ports of the vhost listeners; port P serves vhost `vhost-P`."""
        return self._vhost_ports

    @property
    def definitions_path(self) -> Path:
        return self.workdir / "definitions.json"

    @property
    def data_dir(self) -> Path:
        """RABBITMQ_MNESIA_BASE: the node's database, message stores, retained messages and
        feature flags, everything `persistence` keeps or forgets."""
        return self.workdir / "data"

    # -- configuration --------------------------------------------------------------------

    def config_text(self) -> str:
        """The rabbitmq.conf we run with (keys from the 3.10 schemas: rabbit's and
        rabbitmq_mqtt's priv/schema/*.schema; an unknown key fails the boot, naming it)."""
        lines = [
            "# written by lanesync.rabbitmq.RabbitMQBroker",
            # Nothing here speaks AMQP: one port fewer to collide with the machine's node.
            "listeners.tcp = none",
            f"mqtt.listeners.tcp.1 = {self._host}:{self._port}",
            "mqtt.tcp_listen_options.nodelay = true",
            # Created on the node's first boot (a seed carries them).
            f"default_vhost = {VHOST}",
            f"default_user = {USER}",
            f"default_pass = {USER}",
            # MQTT has no vhosts: connections without credentials act as this user in this
            # vhost (site/mqtt.md, "Anonymous Connections" and "Virtual Hosts").
            "mqtt.allow_anonymous = true",
            f"mqtt.default_user = {USER}",
            f"mqtt.default_pass = {USER}",
            f"mqtt.vhost = {VHOST}",
            # Unacknowledged QoS 1 messages delivered to one subscriber (default 10): as many
            # as Mosquitto's max_inflight_messages here, so head office drains at the same pace.
            "mqtt.prefetch = 100",
            # The default, said out loud: a persistent session's queues go after 24 h unused.
            "mqtt.subscription_ttl = 86400000",
            # Retained messages on disk (the default), in data_dir: they survive a restart.
            "mqtt.retained_message_store = rabbit_mqtt_retained_msg_store_dets",
        ]
        if self._vhost_ports:
            lines += [
                f"mqtt.listeners.tcp.{n} = {self._host}:{port}"
                for n, port in enumerate(self._vhost_ports, 2)
            ]
            # Connection acceptors per listener (default 10): a test connects a few clients.
            lines.append("mqtt.num_acceptors.tcp = 2")
            # Imported at every boot: the vhosts, our user's rights on them, and the
            # mqtt_port_to_vhost_mapping global parameter that puts a connection on a port in
            # its vhost (site/mqtt.md, "Port to Virtual Host Mapping").
            lines.append(f"load_definitions = {self.definitions_path}")
        lines += self.extra_config
        return "\n".join(lines) + "\n"

    def definitions(self) -> dict[str, Any]:
        """The definitions file for the vhost listeners (site/definitions.md format)."""
        vhosts = [f"vhost-{port}" for port in self._vhost_ports]
        return {
            "users": [{"name": USER, "password": USER, "tags": ""}],
            "vhosts": [{"name": v} for v in [VHOST, *vhosts]],
            "permissions": [
                {"user": USER, "vhost": v, "configure": ".*", "write": ".*", "read": ".*"}
                for v in [VHOST, *vhosts]
            ],
            "global_parameters": [
                {
                    "name": "mqtt_port_to_vhost_mapping",
                    "value": {
                        str(port): v for port, v in zip(self._vhost_ports, vhosts, strict=True)
                    },
                }
            ],
        }

    def _environment(self) -> dict[str, str]:
        """The node's environment: nothing inherited from the machine's RabbitMQ or Erlang
        settings, every path in workdir."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            # The Erlang cookie (.erlang.cookie) is created in $HOME.
            HOME=str(self.workdir),
            # Instead of /etc/rabbitmq/rabbitmq-env.conf, which names the machine's node.
            RABBITMQ_CONF_ENV_FILE=str(self.workdir / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(self.conf_path),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.workdir / "enabled_plugins"),
            RABBITMQ_NODENAME=NODE_NAME,
            RABBITMQ_MNESIA_BASE=str(self.data_dir),
            RABBITMQ_LOG_BASE=str(self.workdir / "log"),
            RABBITMQ_LOGS="-",  # to stdout, which is our log file
            RABBITMQ_PID_FILE=str(self.workdir / "rabbitmq.pid"),
            RABBITMQ_DIST_PORT=str(self._dist_port),
            # Our epmd, never the machine's on 4369; and should it be gone, the VM must not
            # start one of its own that would outlive the node.
            ERL_EPMD_PORT=str(self._epmd_port),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=(
                "-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}"
            ),
        )
        return env

    # -- lifecycle ------------------------------------------------------------------------

    def find_binary(self) -> str:
        return find_rabbitmq_server()

    def _prepare(self) -> None:
        (self.workdir / "rabbitmq-env.conf").write_text(
            "# empty: lanesync.rabbitmq sets the node's environment itself\n"
        )
        (self.workdir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        if not self.persistence or not self.data_dir.exists():
            # Forget everything, the way a Mosquitto restart without persistence does.
            shutil.rmtree(self.data_dir, ignore_errors=True)
            if self.seed is not None:
                _copy_seed(self.seed, self.data_dir)

    def _launch(self, binary: str, timeout: float) -> None:
        """Our own epmd, then the node (whose boot fails without it)."""
        try:
            self._start_epmd()
            self._spawn(binary, timeout)
        except BrokerError:
            self._stop_epmd()
            raise

    def _port_taken(self, exc: BrokerError) -> bool:
        return "eaddrinuse" in str(exc)

    def _repick_ports(self) -> None:
        self._pick_ports(None, len(self._vhost_ports))

    def _pick_ports(self, port: int | None, vhost_listeners: int) -> None:
        """Pick the MQTT, distribution, epmd and vhost listener ports, all distinct."""
        picked = list(free_ports(3 + vhost_listeners, self._host))
        if port is not None:
            while port in picked:
                picked = list(free_ports(3 + vhost_listeners, self._host))
        self._port = port if port is not None else picked[0]
        self._dist_port, self._epmd_port = picked[1], picked[2]
        self._vhost_ports = tuple(picked[3:])

    def _start_epmd(self) -> None:
        epmd = shutil.which("epmd") or "/usr/bin/epmd"
        log: IO[bytes]
        with self.log_path.open("ab") as log:
            self._epmd = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [epmd, "-port", str(self._epmd_port), "-address", self._host],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10.0
        while True:
            if self._epmd.poll() is not None:
                self._epmd = None
                raise BrokerError(
                    f"epmd for the RabbitMQ node exited during startup on port "
                    f"{self._epmd_port} (eaddrinuse?); log tail:\n{self.log_tail(5)}"
                )
            try:
                with socket.create_connection((self._host, self._epmd_port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() >= deadline:
                    self._stop_epmd()
                    raise BrokerError(
                        f"epmd did not listen on {self._host}:{self._epmd_port}"
                    ) from None
                time.sleep(0.01)

    def _stop_epmd(self) -> None:
        epmd, self._epmd = self._epmd, None
        if epmd is not None and epmd.poll() is None:
            epmd.kill()
            epmd.wait()

    def _check_ports(self) -> None:
        """Refuse a taken port before booting: the node would take its full boot (4 s of CPU)
        to find out. SO_REUSEADDR as Erlang's listeners use it, so only a bound socket counts.
        A killed node's listeners linger for some milliseconds after its processes are gone
        (measured: 11 ms), hence the short grace."""
        for port in [self._port, self._dist_port, *self._vhost_ports]:
            deadline = time.monotonic() + _PORT_GRACE
            while True:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        sock.bind((self._host, port))
                        break
                    except OSError as exc:
                        if time.monotonic() >= deadline:
                            raise BrokerError(
                                f"RabbitMQ node cannot listen on {self._host}:{port}: {exc} "
                                "(eaddrinuse)"
                            ) from None
                time.sleep(0.01)

    def _write_config(self) -> None:
        self._check_ports()
        self.conf_path.write_text(self.config_text())
        if self._vhost_ports:
            self.definitions_path.write_text(json.dumps(self.definitions(), indent=1))

    def _argv(self, binary: str) -> list[str]:
        return [binary]

    def _popen_options(self) -> dict[str, Any]:
        # A session of its own: kill() takes the node's whole process group (the script's
        # shell, beam.smp, erl_child_setup, inet_gethost) down at once.
        return {"env": self._environment(), "start_new_session": True}

    def _exited(self, proc: subprocess.Popen[bytes]) -> None:
        self._reap_group(proc.pid)

    def _startup_report(self, log_start: int) -> str:
        return self._boot_report(log_start)

    def _boot_report(self, offset: int) -> str:
        """This run's first errors (the line naming what failed comes long before the crash
        report's end) and the log's last lines."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                lines = f.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            return "no log"
        errors = [line for line in lines if "[error]" in line][:12]
        first = "first errors:\n" + "\n".join(errors) + "\n" if errors else ""
        return first + "log tail:\n" + "\n".join(lines[-12:])

    def _terminate(self, sig: signal.Signals, timeout: float) -> None:
        try:
            self._terminate_node(sig, timeout)
        finally:
            self._stop_epmd()

    def _terminate_node(self, sig: signal.Signals, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if proc.poll() is None:
            if sig == signal.SIGKILL:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.send_signal(sig)  # the script's shell forwards it to the node and waits
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._reap_group(proc.pid)
                proc.wait()
                raise BrokerError(
                    f"rabbitmq-server on port {self._port} ignored {sig.name} for {timeout} s; "
                    "killed"
                ) from None
        self._reap_group(proc.pid)

    @staticmethod
    def _reap_group(pgid: int) -> None:
        """SIGKILL whatever is left of the node's process group and wait until it is gone, so
        its ports are free for a restart."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + _STOP_TIMEOUT
        while process_group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.02)

    @classmethod
    def make_seed(cls, workdir: str | os.PathLike[str], *, binary: str | None = None) -> Path:
        """Boot a node once in `workdir` and stop it cleanly; returns its data directory, to
        give to brokers as `seed`."""
        node = cls(workdir, persistence=True, binary=binary)
        with node:
            pass
        return node.data_dir


class SharedRabbitMQ:
    """One node whose vhost listeners are handed out, one per test, as `RabbitMQLease`s.

    A node takes 4 s of CPU to boot (10-20 s of a loaded 2-core machine), more than most
    tests it serves. A test that neither kills nor restarts its broker can have a vhost of a
    shared node instead: a vhost has its own queues (so its own persistent sessions), its own
    `amq.topic` exchange and its own retained message store (site/vhosts.md: "logical groups
    of entities"; site/mqtt.md "Retained Message Stores": "a limit of 2 GB per vhost"), and
    each lease gets one nobody used before, so no test sees another's sessions or messages.
    What the vhosts share is the node: its log, its resources, and the MQTT client-id tracker,
    which is node-wide (3.10 registers the bare client id: rabbit_mqtt_collector:register(
    ClientId, self()) in rabbit_mqtt_processor), so a client id connecting in one vhost closes
    the same id in another; leases never overlap in time, so that only ever closes what an
    earlier test left behind.
    """

    def __init__(self, workdir: str | os.PathLike[str], *, slots: int, **node: Any) -> None:
        self.node = RabbitMQBroker(workdir, vhost_listeners=slots, **node)
        self._free = list(self.node.vhost_ports)

    def lease(self, workdir: str | os.PathLike[str]) -> RabbitMQLease | None:
        """A vhost of the node nobody used before (the node is started on the first), or
        None once all are used."""
        if not self._free:
            return None
        if not self.node.is_running:
            self.node.start()
        return RabbitMQLease(self.node, self._free.pop(0), Path(workdir))

    def close(self) -> None:
        self.node.stop()


class RabbitMQLease:
    """A vhost of a SharedRabbitMQ node, seen as a broker of its own (the `Broker` protocol).

    It cannot be stopped, killed or restarted: the node serves other tests. `release()` is
    the end of the lease; the vhost is never handed out again.
    """

    kind = "rabbitmq"
    persistence = False

    def __init__(self, node: RabbitMQBroker, port: int, workdir: Path) -> None:
        self.node = node
        self.workdir = workdir
        self._port = port
        self._released = False

    @property
    def host(self) -> str:
        return self.node.host

    @property
    def port(self) -> int:
        return self._port

    @property
    def vhost(self) -> str:
        return f"vhost-{self._port}"

    @property
    def pid(self) -> int | None:
        return None if self._released else self.node.pid

    @property
    def is_running(self) -> bool:
        return not self._released and self.node.is_running

    def __repr__(self) -> str:
        return f"<RabbitMQLease {self.host}:{self._port} vhost {self.vhost} of {self.node!r}>"

    def start(self, timeout: float = _START_TIMEOUT) -> Self:
        if not self.is_running:
            raise BrokerError(f"{self!r} was released or its node is down")
        return self

    def _refuse(self, what: str) -> BrokerError:
        return BrokerError(
            f"{self!r} is a vhost of a node shared by other tests and cannot be {what}; "
            "ask for a node of your own (broker_factory with any option, e.g. persistence=False)"
        )

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        raise self._refuse("stopped")

    def kill(self) -> None:
        raise self._refuse("killed")

    def restart(self, timeout: float = _START_TIMEOUT) -> Self:
        raise self._refuse("restarted")

    def release(self) -> None:
        self._released = True

    def log_tail(self, n: int = 20) -> str:
        """The node's log, shared with the other vhosts' tests."""
        return self.node.log_tail(n)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _copy_seed(seed: Path, data_dir: Path) -> None:
    """Copy a stopped node's data directory to `data_dir`, moving it there.

    Ra (the Raft library behind the MQTT plugin's client-id tracker) writes each server's
    `config` with its system's absolute data_dir, and a restarted server reads its log from
    there: a plain copy would read and write the seed's files. So the seed's path is replaced
    by the new one in those files, and the copy is refused if the path is found anywhere else
    (a RabbitMQ that keeps it elsewhere would share state through it).
    """
    old, new = str(seed.absolute()) + "/", str(data_dir.absolute()) + "/"
    if any(c in new for c in '"\\'):
        raise BrokerError(f"cannot seed a RabbitMQ node at {data_dir}: quote in the path")
    shutil.copytree(seed, data_dir, symlinks=True)
    moved = 0
    for path in sorted(data_dir.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if old.encode() not in data:
            continue
        if path.name != "config":
            raise BrokerError(
                f"RabbitMQ seed {seed} names its own path in {path.relative_to(data_dir)}; "
                "start without a seed"
            )
        path.write_bytes(data.replace(old.encode(), new.encode()))
        moved += 1
    if moved == 0:
        raise BrokerError(
            f"RabbitMQ seed {seed} has no Ra server config naming its path (a node that never "
            "booted, or a RabbitMQ that keeps Ra's data elsewhere); start without a seed"
        )


def process_group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies do not count: their sockets are
    closed, and in a container nobody may ever reap them)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command: state, ppid, pgrp (proc(5)).
        if fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False
