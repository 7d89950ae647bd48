"""Pure serial framing: cut a scanner's byte stream into complete frames.

`decode(buf)` reports how many bytes it consumed, so the stateful `Framer` is a thin loop and
byte-at-a-time input frames exactly like bulk input. A partial frame is never emitted; bytes that
cannot belong to a frame come out as an error frame naming what was discarded and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["FRAMINGS", "Frame", "Framer", "FramingMode", "FramingSpec", "decode"]

FramingMode = Literal["cr", "lf", "crlf", "stx_etx", "suffix"]
FRAMINGS: tuple[str, ...] = get_args(FramingMode)

STX = 0x02
ETX = 0x03
_DELIMITERS: dict[str, bytes] = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n"}


@dataclass(frozen=True, slots=True)
class FramingSpec:
    """Frame format of one scanner: a terminator mode, or STX/ETX, or a custom suffix."""

    mode: FramingMode = "cr"
    suffix: bytes = b""
    max_frame: int = 4096

    def __post_init__(self) -> None:
        if self.mode not in FRAMINGS:
            raise ValueError(f"framing: unknown mode {self.mode!r}; expected one of: {FRAMINGS}")
        if self.mode == "suffix" and not self.suffix:
            raise ValueError("suffix: required and non-empty when framing = 'suffix'")
        if self.max_frame < 1:
            raise ValueError("max_frame: must be >= 1")

    @property
    def delimiter(self) -> bytes:
        return self.suffix if self.mode == "suffix" else _DELIMITERS.get(self.mode, b"")


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame's payload, or (with `error` set) bytes that were discarded and why."""

    payload: bytes
    error: str | None = None
    overflow: bool = False  # the frame was cut at max_frame: skip to the next delimiter


def decode(buf: bytes, spec: FramingSpec) -> tuple[int, Frame | None]:
    """Take at most one frame off the front of `buf`.

    Returns (consumed, frame). (0, None) means "need more bytes"; the caller drops `consumed`
    bytes from the front in every other case.
    """
    if spec.mode == "stx_etx":
        return _decode_stx_etx(buf, spec)
    delim = spec.delimiter
    end = buf.find(delim)
    if end >= 0:
        used = end + len(delim)
        if end > spec.max_frame:
            reason = f"frame of {end} bytes exceeds max_frame {spec.max_frame}"
            return used, Frame(buf[:end], reason)
        if end == 0:
            return used, Frame(b"", f"empty frame: terminator {delim!r} without data")
        return used, Frame(buf[:end])
    # Keep a possible partial delimiter at the tail; otherwise give up on an endless line.
    keep = len(delim) - 1
    if len(buf) - keep > spec.max_frame:
        used = len(buf) - keep
        reason = f"no terminator {delim!r} within {spec.max_frame} bytes; discarded {used} bytes"
        return used, Frame(buf[:used], reason, overflow=True)
    return 0, None


def _decode_stx_etx(buf: bytes, spec: FramingSpec) -> tuple[int, Frame | None]:
    start = buf.find(STX)
    if start > 0:
        garbage = buf[:start]
        return start, Frame(garbage, f"discarded {start} bytes before STX: {garbage[:32]!r}")
    if start < 0:
        # Garbage is reported once an STX shows where it ends (or it grows too long), so that
        # byte-at-a-time and bulk input report it identically.
        if len(buf) > spec.max_frame:
            return len(buf), Frame(buf, f"discarded {len(buf)} bytes without STX")
        return 0, None
    for i in range(1, len(buf)):
        byte = buf[i]
        if byte == ETX:
            payload = buf[1:i]
            if not payload:
                return i + 1, Frame(b"", "empty frame: STX immediately followed by ETX")
            return i + 1, Frame(payload)
        if byte == STX:
            partial = buf[1:i]
            return i, Frame(partial, f"STX at byte {i} before ETX; partial frame discarded")
        if i > spec.max_frame:
            return i, Frame(buf[1:i], f"no ETX within {spec.max_frame} bytes after STX")
    return 0, None


class Framer:
    """Buffers bytes between reads and applies `decode` until it needs more."""

    def __init__(self, spec: FramingSpec | None = None) -> None:
        self.spec = spec or FramingSpec()
        self._buf = bytearray()
        self._skipping = False

    @property
    def pending(self) -> bytes:
        """Bytes received but not yet part of a complete frame."""
        return bytes(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes; return the complete frames and error frames they finish."""
        self._buf += data
        frames: list[Frame] = []
        while self._buf:
            if self._skipping and not self._skip_rest():
                break
            used, frame = decode(bytes(self._buf), self.spec)
            if used == 0:
                break
            del self._buf[:used]
            if frame is not None:
                frames.append(frame)
                self._skipping = frame.overflow
        return frames

    def _skip_rest(self) -> bool:
        """Drop the tail of an overlong frame; True once its delimiter has gone by."""
        delim = self.spec.delimiter
        end = self._buf.find(delim)
        if end < 0:
            del self._buf[: max(0, len(self._buf) - (len(delim) - 1))]
            return False
        del self._buf[: end + len(delim)]
        self._skipping = False
        return True

    def flush(self, reason: str) -> list[Frame]:
        """Discard buffered bytes (device gone, line idle); report them if there were any."""
        if not self._buf:
            return []
        data = bytes(self._buf)
        self._buf.clear()
        self._skipping = False
        return [Frame(data, f"{reason}; incomplete frame of {len(data)} bytes discarded")]
