"""Strict msgpack codec for every lanesync message.

`decode` refuses, with a ProtocolError naming the reason: payloads over the size limit, bytes
that are not one complete msgpack value, non-string map keys, extension types (including the
msgpack timestamp), unknown protocol versions and anything the message schema rejects. It never
raises anything else, whatever bytes arrive.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NoReturn

import msgpack

from protocol import screen
from protocol.errors import ProtocolError
from protocol.messages import (
    REPLY_FIELDS,
    Ack,
    Message,
    Reply,
    from_map,
    reason_text,
    wire_version,
)

DEFAULT_MAX_MESSAGE = 1024 * 1024


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    raise ProtocolError(f"msgpack extension type {code} is not allowed", "payload")


def encode(msg: Message, on_withheld: Callable[[Reply], None] | None = None) -> bytes:
    """The bytes of `msg`, which never carry a card number (invariant 6).

    A Request cannot be made with one (messages.Request). A Reply whose result holds one is
    sent as a refusal naming the field instead (`code: withheld`): head office answers, the
    lane learns why, and raising here would only lose the answer. Free-text reasons are
    masked. `on_withheld` is told of a reply withheld so (the sender logs it: this module does
    no I/O), from the one screening the reply gets.
    """
    if isinstance(msg, Reply):
        safe = _safe_reply(msg)
        if on_withheld is not None and safe.ok != msg.ok:
            on_withheld(safe)
        msg = safe
    elif isinstance(msg, Ack) and msg.reason is not None:
        msg = dataclasses.replace(msg, reason=reason_text(msg.reason))
    m = msg.to_map()
    m["v"] = wire_version(msg.TYPE, m)  # the lowest version that holds it (messages.py)
    m["t"] = msg.TYPE
    return msgpack.packb(m, use_bin_type=True)


def _safe_reply(reply: Reply) -> Reply:
    """`reply`, or a refusal naming the field of its result that holds a card number (the
    sender logs that: this module does no I/O)."""
    error = None if reply.error is None else reason_text(reply.error)
    problem = screen.first_problem(reply.result, "result", REPLY_FIELDS)
    if problem is None:
        return (
            reply
            if error == reply.error
            else Reply(reply.lane, reply.corr, reply.ok, reply.result, error)
        )
    return Reply(
        reply.lane,
        reply.corr,
        False,
        {"code": "withheld", "field": problem.field},
        f"head office withheld its answer: {problem.field}: {problem.reason}",
    )


def unpack(buf: bytes, max_size: int = DEFAULT_MAX_MESSAGE) -> Any:
    """Decode one msgpack value with the limits every lanesync payload obeys.

    Bounds before anything walks the value: the size here; counts, because unpackb caps every
    array, map, str and bin length at the length of the buffer ("4294967295 exceeds
    max_array_len(5)" for a 5-byte header claiming 2**32 items, so a header cannot make it
    allocate); nesting, because the C unpacker keeps its own stack of 1024 levels
    (msgpack/unpack.h: MSGPACK_EMBED_STACK_SIZE) and raises StackError past it, without
    recursion. What it returns is walked only by protocol.screen, iteratively, which refuses
    more than 32 levels by field.
    """
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
        # (strict_map_key), for truncated input and for lengths past the buffer, StackError (a
        # ValueError) past 1024 levels, TypeError for unhashable keys.
        raise ProtocolError(f"not valid msgpack: {exc}", "payload") from None
    return value


def decode(buf: bytes, max_size: int = DEFAULT_MAX_MESSAGE) -> Message:
    value = unpack(buf, max_size)
    if type(value) is not dict:
        raise ProtocolError(f"must be a map, got {type(value).__name__}", "payload")
    for k in value:
        if type(k) is not str:
            raise ProtocolError(f"a map key is {type(k).__name__}, not a string", "payload")
    return from_map(value)
