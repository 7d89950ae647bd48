"""SIGHUP: re-read the config file and apply what can change without a restart.

systemd's `ExecReload=/bin/kill -HUP $MAINPID` sends it (`systemctl reload lanesync-agent`).
The new file is read and checked whole first: a file with faults is refused, its faults logged,
and the daemon goes on with the config it runs. Otherwise each key that changed (compared in
the file's own terms, `replication.linger_ms`) is either applied at once, when the daemon
registered an applier for it (`live`), or logged as "needs a restart" and left at its running
value, so what runs is always what the log says runs.

Around the reload the service manager hears RELOADING=1 (with MONOTONIC_USEC, as
Type=notify-reload units require) and READY=1 again, so `systemctl reload` waits for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from protocol.errors import LanesyncError
from protocol.runtime.config import ConfigSource
from protocol.runtime.notify import notify_soon

log = logging.getLogger(__name__)


class FromFile(Protocol):
    @property
    def source(self) -> ConfigSource | None: ...


C = TypeVar("C", bound=FromFile)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"replication": {"linger_ms": 5}}` -> `{"replication.linger_ms": 5}` (arrays whole)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= flatten(value, f"{name}.")
        else:
            out[name] = value
    return out


def changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The keys set, unset or given another value (flattened, sorted)."""
    return sorted(k for k in old.keys() | new.keys() if old.get(k, ...) != new.get(k, ...))


def set_log_level(level: str | None, start_level: int) -> None:
    """`[log] level`, or the level the daemon started with (--log-level) when it is unset."""
    root = logging.getLogger()
    root.setLevel(getattr(logging, level) if level else start_level)


class Reloader(Generic[C]):
    """Holds what the daemon runs on (`running`: the file's keys as applied) and reloads it."""

    def __init__(
        self,
        config: C,
        load: Callable[[], C],
        live: Mapping[str, Callable[[C], None]],
        name: str,
    ) -> None:
        self.load = load
        self.live = live  # key of the file -> applies that key of a new config
        self.name = name
        self.running = flatten(config.source.data) if config.source is not None else {}
        self.reloads = 0  # reloads that read a valid file

    async def reload(self) -> list[tuple[str, str]]:
        """Re-read and apply; (key, "applied" | "needs a restart") for each changed key."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        await notify_soon("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the config")
        try:
            return self._reload()
        finally:
            await notify_soon("READY=1", f"STATUS={self.name}: config reloaded")

    def _reload(self) -> list[tuple[str, str]]:
        try:
            new = self.load()
        except LanesyncError as exc:  # a config fault, a secret file unreadable, ...
            log.error(
                "%s: reload refused, running on the config it had; the file's faults:\n%s",
                self.name,
                exc,
            )
            return []
        data = flatten(new.source.data) if new.source is not None else {}
        outcome: list[tuple[str, str]] = []
        appliers: list[Callable[[C], None]] = []
        for key in changed(self.running, data):
            apply = self.live.get(key)
            if apply is None:
                log.warning(
                    "%s: reload: %s changed: needs a restart (running on the old value until "
                    "then: systemctl restart)",
                    self.name,
                    key,
                )
                outcome.append((key, "needs a restart"))
                continue
            if apply not in appliers:
                appliers.append(apply)
            if key in data:
                self.running[key] = data[key]
            else:
                self.running.pop(key, None)
            log.warning("%s: reload: %s changed: applied", self.name, key)
            outcome.append((key, "applied"))
        for apply in appliers:
            apply(new)
        self.reloads += 1
        if not outcome:
            log.warning("%s: reload: no key changed", self.name)
        # After the appliers: at the level just set (a reload to WARNING hides this line).
        log.info(
            "%s: reload done: %d key(s) applied, %d need a restart",
            self.name,
            sum(how == "applied" for _, how in outcome),
            sum(how != "applied" for _, how in outcome),
        )
        return outcome
