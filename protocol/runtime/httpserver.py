"""The one small HTTP listener both daemons serve metrics and status on.

The agent's Prometheus `/metrics` and head office's status page and metrics each run an aiohttp
application on a `HOST:PORT` from the config; `check_listen` validates that setting with the
key named, `HttpServer` serves it as an async context manager.
"""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import TYPE_CHECKING, Self

from protocol.errors import ConfigError

if TYPE_CHECKING:
    from aiohttp import web

# RFC 9457: every refusal either daemon answers over HTTP (the local API, head office's ERP
# endpoint) carries this content type.
PROBLEM = "application/problem+json"


def check_listen(value: str | None, key: str, example: str) -> str | None:
    """A HOST:PORT to listen on, or None when empty (disabled); `example` goes in the error."""
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{key}: must be HOST:PORT like {example}, got {value!r}")
    return value


class HttpServer:
    """An aiohttp application on HOST:PORT (port 0: a free one, read back from `.port`)."""

    def __init__(self, app: web.Application, listen: str) -> None:
        # Imported here: the agent reads PROBLEM and check_listen from this module but serves
        # no aiohttp (agent.httpserver), and aiohttp costs about 15 MB at import (issue 17.2).
        from aiohttp import web  # noqa: PLC0415

        self.app = app
        host, _, port = listen.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self._runner = web.AppRunner(app, access_log=None)

    async def __aenter__(self) -> Self:
        from aiohttp import web  # noqa: PLC0415 - see __init__

        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise OSError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        for addr in self._runner.addresses:  # port 0 (tests): the one the kernel picked
            self.port = int(addr[1])
            break
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(Exception):
            await self._runner.cleanup()
