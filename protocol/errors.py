"""The small exception hierarchy every lanesync package raises from.

Callers catch `LanesyncError` at the edges (CLI, API, ingest loop) and show its message: each
message names the field, key or byte at fault so an operator can act on it.
"""

from __future__ import annotations


class LanesyncError(Exception):
    """Base of every error lanesync raises on purpose."""


class ProtocolError(LanesyncError):
    """A message or document that cannot be accepted; `field` names the part at fault."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)


class ConfigError(LanesyncError):
    """A configuration file that cannot be used; the message names the key at fault."""
