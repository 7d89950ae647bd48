"""Strict msgpack codec for every lanesync message.

`decode` refuses, with a ProtocolError naming the reason: payloads over the size limit, bytes
that are not one complete msgpack value, non-string map keys, extension types (including the
msgpack timestamp), unknown protocol versions and anything the message schema rejects. It never
raises anything else, whatever bytes arrive.
"""

from __future__ import annotations

from typing import Any, NoReturn

import msgpack

from protocol.errors import ProtocolError
from protocol.messages import PROTOCOL_VERSION, Message, from_map

DEFAULT_MAX_MESSAGE = 1024 * 1024


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    raise ProtocolError(f"msgpack extension type {code} is not allowed", "payload")


def encode(msg: Message) -> bytes:
    m = msg.to_map()
    m["v"] = PROTOCOL_VERSION
    m["t"] = msg.TYPE
    return msgpack.packb(m, use_bin_type=True)


def unpack(buf: bytes, max_size: int = DEFAULT_MAX_MESSAGE) -> Any:
    """Decode one msgpack value with the limits every lanesync payload obeys."""
    if len(buf) > max_size:
        raise ProtocolError(
            f"payload of {len(buf)} bytes exceeds the {max_size} byte limit", "payload"
        )
    try:
        value = msgpack.unpackb(
            buf,
            raw=False,
            strict_map_key=True,
            ext_hook=_refuse_ext,
            # timestamp=0 hands the reserved timestamp extension (-1) back as msgpack.Timestamp
            # instead of calling ext_hook; check_plain and the schemas refuse it by type.
            timestamp=0,
            use_list=True,
        )
    except ProtocolError:
        raise
    except msgpack.ExtraData as exc:
        # ExtraData carries the decoded value and the unread rest (msgpack/exceptions.py);
        # the msgpack-types stubs do not declare the attribute.
        extra = len(getattr(exc, "extra", b""))
        raise ProtocolError(f"{extra} trailing bytes after the message", "payload") from None
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        # UnicodeDecodeError (a ValueError) for bad UTF-8, ValueError for non-str keys
        # (strict_map_key) and for truncated input, TypeError for unhashable keys.
        raise ProtocolError(f"not valid msgpack: {exc}", "payload") from None
    return value


def decode(buf: bytes, max_size: int = DEFAULT_MAX_MESSAGE) -> Message:
    value = unpack(buf, max_size)
    if type(value) is not dict:
        raise ProtocolError(f"must be a map, got {type(value).__name__}", "payload")
    for k in value:
        if type(k) is not str:
            raise ProtocolError(f"map key {k!r} is not a string", "payload")
    return from_map(value)
