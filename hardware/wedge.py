"""Pure keyboard-wedge decoder: evdev key events in, complete scans or reported bad reads out.

It is fed one `InputEvent` at a time and keeps only key state, so recorded event streams replay
exactly; every timestamp comes from the events (or the `now` given to `expire`), never a clock.
Nothing is guessed: a read that is cut short, hits an unmapped key or spans a kernel overflow
(SYN_DROPPED) comes out as a `WedgeError` carrying what was discarded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from evdev import ecodes as e

from hardware.keymaps import Layout, get_layout

__all__ = ["KeyInput", "WedgeConfig", "WedgeDecoder", "WedgeError", "WedgeOutput", "WedgeScan"]

KEY_UP, KEY_DOWN, KEY_REPEAT = 0, 1, 2
MAX_ALT_DIGITS = 4

_SHIFTS = frozenset({e.KEY_LEFTSHIFT, e.KEY_RIGHTSHIFT})
_CTRLS = frozenset({e.KEY_LEFTCTRL, e.KEY_RIGHTCTRL})
# Keys that carry no data and must not end up as "unmapped key" faults.
_IGNORED = frozenset({e.KEY_NUMLOCK, e.KEY_SCROLLLOCK, e.KEY_LEFTMETA, e.KEY_RIGHTMETA})


class KeyInput(Protocol):
    """What the decoder needs of an event; `evdev.InputEvent` satisfies it."""

    @property
    def sec(self) -> int: ...
    @property
    def usec(self) -> int: ...
    @property
    def type(self) -> int: ...
    @property
    def code(self) -> int: ...
    @property
    def value(self) -> int: ...


@dataclass(frozen=True, slots=True)
class WedgeScan:
    """A complete read: prefix and terminator removed; `time` is the terminator's timestamp."""

    text: str
    time: float


@dataclass(frozen=True, slots=True)
class WedgeError:
    """A bad read: `partial` is what was discarded so a technician can see what arrived."""

    reason: str
    partial: str
    time: float


WedgeOutput = WedgeScan | WedgeError


@dataclass(frozen=True, slots=True)
class WedgeConfig:
    """How the scanner was programmed: layout, prefix and the suffix that ends a scan."""

    layout: str = "us"
    terminator: str = "\n"
    prefix: str = ""
    inter_key_timeout: float = 0.2
    max_length: int = 4096

    def __post_init__(self) -> None:
        get_layout(self.layout)
        if not self.terminator:
            raise ValueError("terminator: must not be empty; a scan needs an end marker")
        if self.inter_key_timeout <= 0:
            raise ValueError("inter_key_timeout: must be > 0 seconds")


def _key_name(code: int) -> str:
    name = e.KEY.get(code)
    if isinstance(name, tuple | list):
        name = name[0]
    return f"{name or 'KEY_?'} ({code})"


def _alt_code_char(digits: str) -> str | None:
    """Windows Alt+numpad: a leading 0 selects the ANSI page (cp1252), otherwise OEM (cp437)."""
    number = int(digits)
    if number > 255:
        return None
    if number < 128:
        return chr(number)
    try:
        return bytes([number]).decode("cp1252" if digits.startswith("0") else "cp437")
    except UnicodeDecodeError:
        return None


class WedgeDecoder:
    """State machine from key events to scans; `feed` never raises on any event sequence."""

    def __init__(self, config: WedgeConfig | None = None) -> None:
        self.config = config or WedgeConfig()
        self._layout: Layout = get_layout(self.config.layout)
        self._shift: set[int] = set()
        self._ctrl: set[int] = set()
        self._alt: set[int] = set()
        self._altgr = False
        self._caps = False
        self._alt_digits = ""
        self._dead: str | None = None
        self._buf = ""
        self._fault: str | None = None
        self._tainted = False
        self._dropping = False
        self._last: float | None = None

    # -- public API -------------------------------------------------------------------------

    @property
    def in_progress(self) -> bool:
        """True while part of a read is buffered (the inter-key timeout is running)."""
        return bool(self._buf or self._alt_digits or self._dead or self._fault or self._tainted)

    def deadline(self) -> float | None:
        """Event time after which `expire` will discard the partial read, or None if idle."""
        if not self.in_progress or self._last is None:
            return None
        return self._last + self.config.inter_key_timeout

    def feed(self, event: KeyInput) -> list[WedgeOutput]:
        """Process one event; return the scans and errors it completes."""
        etype, code, value = event.type, event.code, event.value
        now = event.sec + event.usec / 1_000_000
        if self._dropping:
            # After SYN_DROPPED the kernel's packet is incomplete up to the next SYN_REPORT.
            if etype == e.EV_SYN and code == e.SYN_REPORT:
                self._dropping = False
            return []
        if etype == e.EV_SYN and code == e.SYN_DROPPED:
            return self._syn_dropped(now)
        if etype != e.EV_KEY or value not in (KEY_UP, KEY_DOWN):
            return []  # EV_MSC scancodes, LEDs, autorepeat (value 2): no data
        out: list[WedgeOutput] = []
        if value == KEY_DOWN:
            out.extend(self._check_gap(now))
        self._last = now
        if value == KEY_DOWN:
            out.extend(self._press(code, now))
        else:
            out.extend(self._release(code, now))
        return out

    def expire(self, now: float) -> list[WedgeOutput]:
        """Discard and report a partial read whose next key is overdue at `now`."""
        return self._check_gap(now)

    def reset(self, now: float, reason: str) -> list[WedgeOutput]:
        """Forget all state (device closed); report a partial read if one was buffered."""
        out: list[WedgeOutput] = []
        if self._buf or self._alt_digits or self._dead or self._fault:
            out.append(WedgeError(f"{reason}; partial read discarded", self._partial(), now))
        self._clear_scan()
        self._reset_modifiers()
        self._dropping = False
        self._last = None
        return out

    # -- internals --------------------------------------------------------------------------

    def _partial(self) -> str:
        alt = f"<Alt+{self._alt_digits}>" if self._alt_digits else ""
        return self._buf + (self._dead or "") + alt

    def _clear_scan(self) -> None:
        self._buf = ""
        self._fault = None
        self._tainted = False
        self._alt_digits = ""
        self._dead = None

    def _reset_modifiers(self) -> None:
        self._shift.clear()
        self._ctrl.clear()
        self._alt.clear()
        self._altgr = False
        self._caps = False

    def _syn_dropped(self, now: float) -> list[WedgeOutput]:
        partial = self._partial()
        self._clear_scan()
        self._reset_modifiers()
        self._dropping = True
        # Keys after the resync may be the tail of the damaged read: discard up to its end.
        self._tainted = True
        self._last = now
        return [
            WedgeError(
                "SYN_DROPPED: kernel dropped input events; read is corrupt, modifiers reset",
                partial,
                now,
            )
        ]

    def _check_gap(self, now: float) -> list[WedgeOutput]:
        if self._last is None or not self.in_progress:
            return []
        gap = now - self._last
        if gap <= self.config.inter_key_timeout:
            return []
        out: list[WedgeOutput] = []
        partial = self._partial()
        if partial or self._fault:
            ms = round(self.config.inter_key_timeout * 1000)
            out.append(
                WedgeError(
                    f"inter-key timeout: no key for {gap * 1000:.0f} ms (limit {ms} ms); "
                    "partial read discarded",
                    partial,
                    now,
                )
            )
        self._clear_scan()
        return out

    def _release(self, code: int, now: float) -> list[WedgeOutput]:
        self._shift.discard(code)
        self._ctrl.discard(code)
        if code == e.KEY_RIGHTALT and self._layout.has_altgr:
            self._altgr = False
            return []
        if code in self._alt:
            self._alt.discard(code)
            if not self._alt and self._alt_digits:
                digits, self._alt_digits = self._alt_digits, ""
                ch = _alt_code_char(digits)
                if ch is None:
                    self._set_fault(f"Alt+numpad {digits} is not a character code")
                    return []
                return self._add(ch, now)
        return []

    def _press(self, code: int, now: float) -> list[WedgeOutput]:
        layout = self._layout
        if code in _SHIFTS:
            self._shift.add(code)
            return []
        if code in _CTRLS:
            self._ctrl.add(code)
            return []
        if code == e.KEY_RIGHTALT and layout.has_altgr:
            self._altgr = True
            return []
        if code in (e.KEY_LEFTALT, e.KEY_RIGHTALT):
            self._alt.add(code)
            return []
        if code == e.KEY_CAPSLOCK:
            # The lock flips on the press edge only; releases and autorepeats never touch it.
            self._caps = not self._caps
            return []
        if code in _IGNORED:
            return []
        if self._alt:
            digit = layout.keypad.get(code)
            if digit is None or not digit.isdigit():
                self._set_fault(f"Alt+{_key_name(code)} is not part of an Alt+numpad code")
            elif len(self._alt_digits) >= MAX_ALT_DIGITS:
                self._set_fault(f"Alt+numpad code longer than {MAX_ALT_DIGITS} digits")
            else:
                self._alt_digits += digit
            return []
        ch = self._char_for(code)
        if ch is None:
            return []
        if self._ctrl:
            ctrl = self._control_char(code, ch)
            if ctrl is None:
                self._set_fault(f"Ctrl+{_key_name(code)} has no control character")
                return []
            return self._add(ctrl, now)
        dead = layout.dead.get((code, bool(self._shift))) if not self._altgr else None
        if dead is not None:
            if self._dead is None:
                self._dead = dead
                return []
            # Two dead keys in a row type the first one literally, like the console does.
            first, self._dead = self._dead, None
            return self._add(first, now) + self._add(dead, now)
        return self._add(ch, now)

    def _char_for(self, code: int) -> str | None:
        layout = self._layout
        if self._altgr:
            ch = layout.altgr.get(code)
            if ch is None:
                self._set_fault(f"AltGr+{_key_name(code)} is unmapped on layout {layout.name}")
            return ch
        if code in layout.keypad:
            return layout.keypad[code]
        pair = layout.keys.get(code)
        if pair is None:
            self._set_fault(f"unmapped key {_key_name(code)} on layout {layout.name}")
            return None
        plain, shifted = pair
        use_shift = bool(self._shift)
        if self._caps and plain.isalpha() and shifted == plain.upper() != plain:
            use_shift = not use_shift
        return shifted if use_shift else plain

    def _control_char(self, code: int, ch: str) -> str | None:
        explicit = self._layout.ctrl.get(code)
        if explicit is not None and not self._altgr:
            return explicit
        upper = ch.upper()
        if len(upper) == 1 and "@" <= upper <= "_":
            return chr(ord(upper) - 0x40)
        return None

    def _set_fault(self, reason: str) -> None:
        if self._fault is None:
            self._fault = reason

    def _add(self, ch: str, now: float) -> list[WedgeOutput]:
        if self._dead is not None:
            dead, self._dead = self._dead, None
            composed = self._layout.compose.get((dead, ch))
            if composed is not None:
                ch = composed
            elif ch == " ":
                ch = dead
            else:
                ch = dead + ch
        self._buf += ch
        terminator = self.config.terminator
        if self._buf.endswith(terminator):
            return [self._finish(self._buf[: -len(terminator)], now)]
        if len(self._buf) > self.config.max_length:
            partial = self._buf
            self._clear_scan()
            return [
                WedgeError(
                    f"no terminator {terminator!r} within {self.config.max_length} characters",
                    partial,
                    now,
                )
            ]
        return []

    def _finish(self, text: str, now: float) -> WedgeOutput:
        fault, tainted = self._fault, self._tainted
        self._clear_scan()
        if tainted:
            return WedgeError("rest of a read damaged by SYN_DROPPED discarded", text, now)
        if fault is not None:
            return WedgeError(fault, text, now)
        prefix = self.config.prefix
        if prefix:
            if not text.startswith(prefix):
                reason = f"read does not start with configured prefix {prefix!r}"
                return WedgeError(reason, text, now)
            text = text[len(prefix) :]
        if not text:
            return WedgeError("empty read: terminator without data", text, now)
        return WedgeScan(text, now)
