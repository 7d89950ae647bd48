"""Shared fixtures: leak checks, a real broker (Mosquitto, or NATS or RabbitMQ where a directory
opts in), a failing-link proxy, and the soak switch."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lanesync.broker import PORT_RANGE_ENV, Broker, BrokerError, MosquittoBroker
from lanesync.nats import NatsBroker
from lanesync.proxy import TcpProxy
from lanesync.rabbitmq import RabbitMQBroker, RabbitMQLease, SharedRabbitMQ

# How long a thread or task that is already on its way out gets before we call it leaked.
_GRACE_S = 2.0

# Threads we do not count as leaks, by name prefix, and why:
# - "asyncio_": the event loop's default ThreadPoolExecutor (loop.run_in_executor,
#   asyncio.to_thread, getaddrinfo) names its workers "asyncio_N". They are pooled by the loop
#   and shut down only when the loop closes, which happens after this fixture's teardown.
# Deliberately NOT ignored: aiosqlite. Version 0.22 runs one non-daemon worker thread per
# connection ("Thread-N (_connection_worker_thread)") that exits when the connection is closed,
# so one that outlives the grace period is an unclosed journal connection: a real bug.
_IGNORED_THREAD_PREFIXES = ("asyncio_",)

# Each pytest-xdist worker picks its ports from a range of its own (lanesync.broker.free_port):
# gw0 20000-22999, gw1 23000-25999, ... A port one worker picked for a broker it had yet to
# start could otherwise be handed to another worker meanwhile.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER.startswith("gw"):
    _base = 20000 + 3000 * int(_WORKER[2:])
    os.environ.setdefault(PORT_RANGE_ENV, f"{_base}-{_base + 3000}")


def pytest_configure(config: pytest.Config) -> None:
    """Let LANESYNC_SOAK=1 run the soak tests.

    pyproject's addopts carries `-m 'not soak'`, so soak tests are deselected by default. With
    LANESYNC_SOAK=1 we clear exactly that default marker expression (so everything runs,
    soak included); any other `-m` the user typed (e.g. `-m soak`) is left alone.
    """
    if os.environ.get("LANESYNC_SOAK") == "1" and config.option.markexpr == "not soak":
        config.option.markexpr = ""


# -- leak checks (the pymodbus conftest habit) -----------------------------------------------


def _leaked_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t not in before
        and t.is_alive()
        and not t.daemon
        and not t.name.startswith(_IGNORED_THREAD_PREFIXES)
    ]


@pytest.fixture(autouse=True)
def _no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves new non-daemon threads behind, or (async tests) asyncio tasks.

    Cheap when nothing leaks: one threading.enumerate() before and after.
    """
    if inspect.iscoroutinefunction(getattr(request.node, "function", None)):
        # Set up before the test's own fixtures, so torn down after them, on the test's loop.
        request.getfixturevalue("_no_leaked_tasks")
    before = set(threading.enumerate())
    yield
    leaked = _leaked_threads(before)
    deadline = time.monotonic() + _GRACE_S
    for thread in leaked:
        thread.join(max(0.0, deadline - time.monotonic()))
    leaked = _leaked_threads(before)
    if leaked:
        pytest.fail(f"test left threads running: {leaked}", pytrace=False)


@pytest.fixture
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fail an async test that leaves tasks on its loop; they are cancelled so others run clean.

    Runs on the default (function-scoped) fixture loop: a test that opts into a wider
    loop_scope gets no task check, only the thread check.
    """
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    deadline = time.monotonic() + _GRACE_S
    while True:
        leaked = {t for t in asyncio.all_tasks() - before if t is not current and not t.done()}
        if not leaked or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.01)
    if leaked:
        names = sorted(f"{t.get_name()}: {t.get_coro()!r}" for t in leaked)
        for task in leaked:
            task.cancel()
        await asyncio.wait(leaked, timeout=_GRACE_S)
        pytest.fail("test left asyncio tasks running:\n  " + "\n  ".join(names), pytrace=False)


# -- a real broker --------------------------------------------------------------------------

BrokerFactory = Callable[..., Broker]

# The MQTT servers a test directory can run against, by `broker_kind`.
BROKER_KINDS: dict[str, type[MosquittoBroker] | type[NatsBroker] | type[RabbitMQBroker]] = {
    "mosquitto": MosquittoBroker,
    "nats": NatsBroker,
    "rabbitmq": RabbitMQBroker,
}


@pytest.fixture
def broker_kind() -> str:
    """Which server `broker` and `broker_factory` start. Mosquitto here; tests/e2e overrides
    this fixture to run every test on Mosquitto, NATS's MQTT listener and RabbitMQ's."""
    return "mosquitto"


@pytest.fixture(scope="session")
def rabbitmq_seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data directory of a RabbitMQ node that booted once, for every RabbitMQ broker of the
    session to start from (lanesync.rabbitmq.RabbitMQBroker, `seed`): a fresh node spends 3 to
    6 s of its first boot waiting for cluster peers that never come."""
    return RabbitMQBroker.make_seed(tmp_path_factory.mktemp("rabbitmq-seed"))


# Vhosts of the shared RabbitMQ node: one per test that takes the default broker (tests/e2e has
# 12 today). Past them each such test gets a node of its own: slower, never wrong.
RABBITMQ_SHARED_SLOTS = 32


@pytest.fixture(scope="session")
def rabbitmq_shared(
    tmp_path_factory: pytest.TempPathFactory, rabbitmq_seed: Path
) -> Iterator[SharedRabbitMQ]:
    """One RabbitMQ node for the session whose vhosts are lent to tests that neither kill nor
    restart their broker (lanesync.rabbitmq.SharedRabbitMQ says why that is sound); started on
    the first lease."""
    shared = SharedRabbitMQ(
        tmp_path_factory.mktemp("rabbitmq-shared"),
        slots=RABBITMQ_SHARED_SLOTS,
        seed=rabbitmq_seed,
    )
    yield shared
    shared.close()


@pytest.fixture
def broker_factory(
    request: pytest.FixtureRequest, tmp_path: Path, broker_kind: str
) -> Iterator[BrokerFactory]:
    """Make started brokers, each in its own work dir: `broker_factory(persistence=True)`.

    Keyword arguments go to the broker class (MosquittoBroker, NatsBroker or RabbitMQBroker;
    `persistence`, `port` and `extra_config` mean the same on all). All are stopped at
    teardown. On RabbitMQ, `broker_factory()` without options lends the test a fresh vhost of
    the session's shared node, which refuses stop, kill and restart; with any option (say
    `persistence=False`) the test gets a node of its own to kill and restart.
    """
    brokers: list[Broker] = []
    leases: list[RabbitMQLease] = []
    cls = BROKER_KINDS[broker_kind]
    defaults: dict[str, Any] = {}
    if cls is RabbitMQBroker:
        defaults["seed"] = request.getfixturevalue("rabbitmq_seed")

    def make(**options: Any) -> Broker:
        workdir = tmp_path / f"broker{len(brokers) + len(leases)}"
        if cls is RabbitMQBroker and not options:
            shared: SharedRabbitMQ = request.getfixturevalue("rabbitmq_shared")
            lease = shared.lease(workdir)
            if lease is not None:
                leases.append(lease)
                return lease
        broker: Broker = cls(workdir, **{**defaults, **options})
        brokers.append(broker)
        return broker.start()

    yield make
    for lease in leases:
        lease.release()
    errors: list[BrokerError] = []
    for broker in brokers:
        try:
            broker.stop()  # kills it if it ignores SIGTERM, then raises
        except BrokerError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def broker(broker_factory: BrokerFactory) -> Broker:
    """A started broker (Mosquitto unless `broker_kind` says otherwise) without persistence on
    a free loopback port."""
    return broker_factory()


# -- a link that can fail --------------------------------------------------------------------

ProxyFactory = Callable[..., Awaitable[TcpProxy]]


@pytest.fixture
async def proxy() -> AsyncIterator[ProxyFactory]:
    """Make started TcpProxy instances in front of a broker: `p = await proxy(broker)`.

    Accepts a broker or an upstream port. All are closed at teardown.
    """
    async with contextlib.AsyncExitStack() as stack:

        async def make(target: Broker | int, *, name: str = "proxy") -> TcpProxy:
            if isinstance(target, int):
                host, port = "127.0.0.1", target
            else:
                host, port = target.host, target.port
            return await stack.enter_async_context(TcpProxy(host, port, name=name))

        yield make


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """schemathesis (tests/api/test_api_schemathesis.py) makes one item per API operation but
    gives each its function's node id, without the operation (on pytest 9 a Function's id is
    its original name plus its callspec's params, and schemathesis's items have no callspec).
    pytest-xdist schedules by node id, so under `-n` it ran one operation per function and
    reported 2 tests where there are 36. The operation, from the item's name, goes into its
    node id (pytest 9's Node._id; `with_params` is how pytest itself adds parameters)."""
    for item in items:
        if "[" in item.name and "[" not in item.nodeid:
            item._id = item._id.with_params(item.name.split("[", 1)[1].removesuffix("]"))
    # Two items with one node id would again be one test under pytest-xdist: refuse to run.
    seen: set[str] = set()
    twice = sorted({i.nodeid for i in items if i.nodeid in seen or seen.add(i.nodeid)})
    if twice:
        raise pytest.UsageError(
            f"{len(twice)} node ids are collected more than once, so pytest-xdist would run "
            f"only one of each: {', '.join(twice[:5])}"
        )
