"""Issue 16.3: behind a relay whose far side is down, connection attempts follow the backoff.

A TCP relay (load balancer, TLS terminator, stunnel) accepts the lane's connection and then
closes it (FIN), resets it (RST), or, with its far side hung, says nothing. aiomqtt alone waits
its whole `timeout` (the publish timeout, 10 s) for a CONNACK in all three cases. The listener
here is real and records when each attempt arrives; the agent's replicator and head office's
ingest run as in production against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent import config as agent_config
from agent.journal import Journal
from agent.replicator import Replicator
from headoffice import config as ho_config
from headoffice.ingest import Ingest
from protocol.errors import ConfigError
from protocol.runtime import brokerconn

PUBLISH_TIMEOUT_S = 10.0  # what each attempt cost before: far beyond every bound below
SLACK_S = 0.5  # connect, close and scheduling overhead per attempt on a busy test machine


class ClosingRelay:
    """A listener that accepts and then closes (`fin`), resets (`rst`) or holds (`silent`)
    every connection, noting the monotonic time of each accept."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.accepted: list[float] = []
        self._held: list[socket.socket] = []
        self._sock: socket.socket | None = None

    @property
    def bound(self) -> bool:
        """Whether serve() has bound its listening socket (port is known)."""
        return self._sock is not None

    @property
    def port(self) -> int:
        assert self._sock is not None
        port: int = self._sock.getsockname()[1]
        return port

    async def serve(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sock.setblocking(False)
        self._sock = sock
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            while True:
                conn, _ = await loop.sock_accept(sock)
                self.accepted.append(time.monotonic())
                conn.setblocking(False)
                if self.mode == "rst":
                    # SO_LINGER on with 0 s: close() sends RST instead of FIN.
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    conn.close()
                elif self.mode == "fin":
                    tg.create_task(self._fin(conn))
                else:
                    self._held.append(conn)

    @staticmethod
    async def _fin(conn: socket.socket) -> None:
        # FIN first, then read what the client sent until it closes: closing with unread
        # bytes in the receive buffer would make the kernel send RST instead.
        loop = asyncio.get_running_loop()
        conn.shutdown(socket.SHUT_WR)
        try:
            async with asyncio.timeout(5):
                while await loop.sock_recv(conn, 4096):
                    pass
        except (OSError, TimeoutError):
            pass
        finally:
            conn.close()

    def close(self) -> None:
        for conn in self._held:
            conn.close()
        if self._sock is not None:
            self._sock.close()


@contextlib.asynccontextmanager
async def relay(mode: str) -> AsyncIterator[ClosingRelay]:
    r = ClosingRelay(mode)
    task = asyncio.create_task(r.serve(), name=f"relay-{mode}")
    while not r.bound:  # bound before the first await of serve()
        await asyncio.sleep(0)
    try:
        yield r
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        r.close()


async def attempts(r: ClosingRelay, n: int, within: float) -> list[float]:
    async with asyncio.timeout(within):
        while len(r.accepted) < n:
            await asyncio.sleep(0.02)
    return r.accepted[:n]


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def full_jitter_caps(initial: float, cap: float, n: int) -> list[float]:
    """The longest sleep before retry k (tenacity.wait_random_exponential: uniform(0, cap_k))."""
    return [min(cap, initial * 2**k) for k in range(n)]


def agent_cfg(tmp_path: Path, port: int, **broker: float) -> agent_config.AgentConfig:
    return agent_config.parse(
        {
            "store": "S1",
            "lane": "L1",
            "journal": {"path": str(tmp_path / "journal.db")},
            "broker": {"port": port, "keepalive": 30} | broker,
            "replication": {
                "publish_timeout_s": PUBLISH_TIMEOUT_S,
                "backoff_initial_s": 0.1,
                "backoff_max_s": 0.4,
            },
            "api": {"socket": str(tmp_path / "api.sock")},
        }
    )


@pytest.mark.parametrize("mode", ["fin", "rst"])
async def test_agent_attempts_follow_the_backoff_when_a_relay_closes(
    tmp_path: Path, mode: str
) -> None:
    async with relay(mode) as r:
        cfg = agent_cfg(tmp_path, r.port, connack_timeout_s=3.0)
        async with Journal(cfg.journal_path, cfg.lane) as journal, Replicator(journal, cfg) as rep:
            times = await attempts(r, 7, within=6.0)
            last_error = rep.stats.last_error
        assert rep.stats.connects == 0
    caps = full_jitter_caps(0.1, 0.4, len(times) - 1)
    for k, (gap, cap) in enumerate(zip(gaps(times), caps, strict=True)):
        # Each attempt fails at the close, well before the 3 s CONNACK deadline, and the next
        # comes after at most the backoff's sleep for its turn.
        assert gap <= cap + SLACK_S, (k, gaps(times))
    assert last_error is not None
    assert "before CONNACK" in last_error, last_error


async def test_agent_silent_relay_costs_the_connack_deadline_not_the_publish_timeout(
    tmp_path: Path,
) -> None:
    async with relay("silent") as r:
        cfg = agent_cfg(tmp_path, r.port, connack_timeout_s=0.5)
        async with Journal(cfg.journal_path, cfg.lane) as journal, Replicator(journal, cfg) as rep:
            times = await attempts(r, 3, within=5.0)
            last_error = rep.stats.last_error
    caps = full_jitter_caps(0.1, 0.4, len(times) - 1)
    for gap, cap in zip(gaps(times), caps, strict=True):
        assert 0.5 - 0.05 <= gap <= 0.5 + cap + SLACK_S, gaps(times)
    assert last_error is not None
    assert "no CONNACK" in last_error, last_error
    assert "within 0.5s" in last_error, last_error


@pytest.mark.parametrize("mode", ["fin", "rst"])
async def test_headoffice_attempts_follow_the_backoff_when_a_relay_closes(
    tmp_path: Path, mode: str
) -> None:
    async with relay(mode) as r:
        cfg = ho_config.parse(
            {
                "database": {"path": str(tmp_path / "ho.db")},
                "broker": {"port": r.port, "connack_timeout_s": 3.0},
            }
        )
        async with Ingest(cfg) as ingest:
            times = await attempts(r, 4, within=6.0)
            assert not ingest.ready.is_set()
            assert ingest.stats.connects == 0
    # Head office's reconnect backoff: full jitter, 0.5 s doubling, capped at 15 s.
    caps = full_jitter_caps(0.5, 15, len(times) - 1)
    for gap, cap in zip(gaps(times), caps, strict=True):
        assert gap <= cap + SLACK_S, gaps(times)


async def test_client_names_a_close_before_connack_at_once() -> None:
    async with relay("fin") as r:
        started = time.monotonic()
        with pytest.raises(brokerconn.aiomqtt.MqttError, match="before CONNACK"):
            async with brokerconn.Client(
                "127.0.0.1", r.port, connack_timeout_s=3.0, timeout=PUBLISH_TIMEOUT_S
            ):
                pass
        assert time.monotonic() - started < 1.0


def test_connack_timeout_is_checked_where_the_broker_table_is_parsed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"broker\.connack_timeout_s: must be a number"):
        agent_cfg(tmp_path, 1883, connack_timeout_s=0.0)
    with pytest.raises(ConfigError, match=r"broker\.connack_timeout_s"):
        ho_config.parse({"broker": {"connack_timeout_s": "5"}})
    assert agent_cfg(tmp_path, 1883).broker.connack_timeout_s == 5.0
    assert ho_config.parse({}).broker.connack_timeout_s == 5.0


async def test_doctor_names_the_relay_at_once(tmp_path: Path) -> None:
    from agent.doctor import check_broker_and_clock  # noqa: PLC0415

    async with relay("fin") as r:
        cfg = agent_cfg(tmp_path, r.port)
        started = time.monotonic()
        broker, clock = await check_broker_and_clock(cfg, timeout=5.0)
        assert time.monotonic() - started < 2.0
    assert broker.outcome == "fail"
    assert "before CONNACK" in broker.found, broker
    assert clock.outcome == "warn"
