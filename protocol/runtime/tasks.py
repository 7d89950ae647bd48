"""How every long-lived component runs its tasks: one helper that owns the TaskGroup.

The journal writer, replicator, local API, retention, status, operations and ingest each keep
a `Tasks` and start their loops through it instead of writing their own TaskGroup lifecycle.

What happens when a task fails, said once for all of them: the failure is logged with the
task's name and propagates. The TaskGroup cancels the component's other tasks and the error
reaches whoever entered the component (the daemon), which stops the process so that systemd
restarts it. A loop that must outlive its own errors (a reconnect loop) catches them inside.
Leaving a `Tasks` cancels whatever still runs and waits until all of it has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` until it ends.

    On Python 3.11 asyncio.wait_for (which aiomqtt uses for every MQTT call) can swallow a
    cancellation that lands as the awaited operation completes (CPython gh-86296, fixed in
    3.12); one cancel() is then lost and a TaskGroup exit would wait forever.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("task %s failed; stopping its component", task.get_name(), exc_info=exc)


class Tasks:
    """The tasks of one component, named `"{owner}: {name}"`, in one TaskGroup it owns."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    @property
    def running(self) -> bool:
        return self._group is not None

    async def __aenter__(self) -> Self:
        if self._group is not None:
            raise RuntimeError(f"{self.owner}: tasks already running")
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        return self

    def start(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run `coro` until it ends or the component stops."""
        if self._group is None:
            coro.close()
            raise RuntimeError(f"{self.owner}: start({name!r}) outside `async with`")
        full = f"{self.owner}: {name}"
        # A done callback rather than a wrapping coroutine: a task cancelled before it ever ran
        # (its component failed to start) then leaves no "coroutine was never awaited" behind.
        task = self._group.create_task(coro, name=full)
        task.add_done_callback(_log_failure)
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(task)
        return task

    async def stop(self) -> None:
        """Cancel every task still running and wait for all of them (the `async with` exit)."""
        group, self._group = self._group, None
        if group is None:
            return
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks.clear()
        with contextlib.suppress(asyncio.CancelledError):
            await group.__aexit__(None, None, None)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


# What Component.loops() returns: (name, coroutine) of each loop.
Loops = Iterable[tuple[str, Coroutine[Any, Any, Any]]]


class Component:
    """A long-lived part whose loops run in a `Tasks` of its own: the `async with` lifecycle
    written once for all of them.

    A subclass calls `super().__init__(owner)`, names its loops in `loops()`, and puts what the
    loops need in `setup()` (before they start) and `teardown()` (after they stopped: it runs
    whatever happened, also when `setup()` failed half-way, so it releases only what is held).
    """

    def __init__(self, owner: str) -> None:
        self._tasks = Tasks(owner)

    def loops(self) -> Loops:
        """(name, coroutine) of each loop to run while the component is entered."""
        return ()

    async def setup(self) -> None:
        """Acquire what the loops need."""

    async def teardown(self) -> None:
        """Release what `setup` acquired."""

    async def __aenter__(self) -> Self:
        try:
            await self.setup()
            await self._tasks.__aenter__()
            for name, coro in self.loops():
                self._tasks.start(coro, name)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._tasks.stop()
        finally:
            await self.teardown()
