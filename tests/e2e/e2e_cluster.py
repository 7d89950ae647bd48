"""`Cluster`: a real broker, head office, agents, proxies and tills, all torn down by `close`.

Its own module (not conftest.py), so tests in any folder import it by a name no other module
shares; tests/e2e/conftest.py and tests/transit/conftest.py turn it into the `cluster` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lanesync import stack
from lanesync.broker import Broker
from lanesync.proxy import ProxyThread
from lanesync.stack import Component
from protocol.identity import LaneId
from tests.e2e.e2e_helpers import FAST_REPLICATION, Till, wait_caught_up, wait_drained


class Cluster:
    def __init__(self, workdir: Path, broker_factory: Any) -> None:
        self.workdir = workdir
        self._broker_factory = broker_factory
        self.broker: Broker | None = None
        self.ho: Component | None = None
        self.agents: dict[LaneId, Component] = {}
        self.proxies: list[ProxyThread] = []
        self.tills: list[Till] = []

    @property
    def ho_db(self) -> Path:
        return self.workdir / "headoffice.db"

    def journal(self, lane: LaneId) -> Path:
        return stack.journal_path(self.workdir, lane)

    def socket(self, lane: LaneId) -> Path:
        return stack.api_socket_path(self.workdir, lane)

    # -- starting ------------------------------------------------------------------------

    def start_broker(self, **kw: Any) -> Broker:
        self.broker = self._broker_factory(**kw)
        return self.broker

    def headoffice(self, *, start: bool = True, **ingest: Any) -> Component:
        assert self.broker is not None
        self.ho = stack.headoffice(self.workdir, self.broker.port, **ingest)
        if start:
            self.start(self.ho)
        return self.ho

    def agent(
        self,
        lane: LaneId,
        *,
        port: int | None = None,
        keepalive: int = 5,
        start: bool = True,
        **replication: Any,
    ) -> Component:
        assert self.broker is not None
        comp = stack.agent(
            self.workdir,
            lane,
            port if port is not None else self.broker.port,
            replication={**FAST_REPLICATION, **replication},
            keepalive=keepalive,
        )
        self.agents[lane] = comp
        if start:
            self.start(comp)
        return comp

    def start(self, comp: Component) -> Component:
        """(Re)start a component and wait until it is ready (head office: subscribed)."""
        comp.start()
        comp.wait_notify("STATUS=subscribed" if comp is self.ho else "READY=1", timeout=30)
        return comp

    def proxy(self, name: str = "wan") -> ProxyThread:
        assert self.broker is not None
        p = ProxyThread(self.broker.host, self.broker.port, name=name).start()
        self.proxies.append(p)
        return p

    def till(self, lane: LaneId, **kw: Any) -> Till:
        t = Till(lane, self.socket(lane), seed=len(self.tills) + 1, **kw).start()
        self.tills.append(t)
        return t

    # -- checking ------------------------------------------------------------------------

    def logs(self) -> str:
        parts = [
            f"--- {comp.name} log tail ---\n{comp.log_tail(25)}"
            for comp in [self.ho, *self.agents.values()]
            if comp is not None
        ]
        if self.broker is not None:
            parts.append(f"--- broker log tail ---\n{self.broker.log_tail(10)}")
        return "\n".join(parts)

    def wait_drained(self, lane: LaneId, timeout: float = 30.0) -> float:
        return wait_drained(self.ho_db, self.journal(lane), lane, timeout, self.logs)

    def wait_caught_up(self, lane: LaneId, timeout: float = 30.0) -> float:
        return wait_caught_up(self.ho_db, self.journal(lane), lane, timeout, self.logs)

    def stop_tills(self) -> None:
        for t in self.tills:
            t.stop()

    # -- teardown ------------------------------------------------------------------------

    def close(self) -> None:
        errors: list[BaseException] = []
        for t in self.tills:
            try:
                t.stop()
            except BaseException as exc:  # keep tearing down; raise the first
                errors.append(exc)
        for comp in [*self.agents.values(), self.ho]:
            if comp is not None:
                try:
                    comp.stop(timeout=5.0)
                except BaseException as exc:
                    errors.append(exc)
        for p in self.proxies:
            try:
                p.close()
            except BaseException as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def cluster(tmp_path: Path, broker_factory: Any) -> Iterator[Cluster]:
    c = Cluster(tmp_path, broker_factory)
    try:
        yield c
    finally:
        c.close()
