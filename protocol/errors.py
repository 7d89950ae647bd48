"""The small exception hierarchy every lanesync package raises from.

Callers catch `LanesyncError` at the edges (CLI, API, ingest loop) and show its message: each
message names the field, key or byte at fault so an operator can act on it. Every error also
carries a `code`, a stable name that the edges decide from (the local API's status table, a
refusal's `code`, an exit status), so no domain error needs to know about HTTP.
"""

from __future__ import annotations

from protocol.pan import mask_text


class LanesyncError(Exception):
    """Base of every error lanesync raises on purpose.

    `code` names the kind of failure; a subclass sets its own, and an instance may carry a
    more precise one (`LanesyncError("...", code="sscc_unknown")`)."""

    code: str = "error"

    def __init__(self, *args: object, code: str | None = None) -> None:
        super().__init__(*args)
        if code is not None:
            self.code = code


class ProtocolError(LanesyncError):
    """A message or document that cannot be accepted; `field` names the part at fault.

    Reason and field are masked (protocol.pan.mask_text) as they are made: a refusal is
    shown to a POS, logged and kept, and must never carry the card number it refuses, even
    when a message quotes a value by mistake or a path runs through an odd map key.
    """

    code = "invalid"

    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason = mask_text(reason)
        self.field = field = None if field is None else mask_text(field)
        super().__init__(f"{field}: {reason}" if field else reason)


class ConfigError(LanesyncError):
    """A configuration file that cannot be used; the message names the key at fault."""

    code = "config"
