"""The operations side of a daemon, entered and left as one: listeners, contexts and loops.

Both daemons run the same kind of thing next to their real work: HTTP listeners for metrics
and status (protocol.runtime.httpserver), a few contexts (the agent's retention and live status
file) and loops (the systemd watchdog, clock and link checks). `Services` holds them: contexts
are entered in order and left in reverse, loops run through one `Tasks` (protocol.runtime.tasks,
which says what a failing loop does), and leaving stops the loops first, then the contexts, so
no loop ever sees a closed listener.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from protocol.runtime.httpserver import HttpServer
from protocol.runtime.tasks import Tasks

if TYPE_CHECKING:
    from aiohttp import web  # the agent uses Services with no aiohttp listener (issue 17.2)

T = TypeVar("T")


class Services:
    """Contexts and loops of one component (`owner` names its tasks)."""

    def __init__(self, owner: str) -> None:
        self.tasks = Tasks(owner)
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        await self.tasks.__aenter__()
        return self

    async def enter(self, cm: contextlib.AbstractAsyncContextManager[T]) -> T:
        """Enter `cm` now; it is left when the services are, in reverse order."""
        return await self._stack.enter_async_context(cm)

    async def serve(self, app: web.Application, listen: str) -> HttpServer:
        """Serve `app` on HOST:PORT until the services are left."""
        return await self.enter(HttpServer(app, listen))

    def start(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run a loop until the services are left (Tasks.start)."""
        return self.tasks.start(coro, name)

    async def stop(self) -> None:
        """Stop the loops, then leave the contexts (also after a failed start)."""
        try:
            await self.tasks.stop()
        finally:
            await self._stack.aclose()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
