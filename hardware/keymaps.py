"""Keyboard layouts for decoding keyboard-wedge scanners.

A wedge scanner types its data as key presses for the layout it was programmed for, so the
decoder must map key codes back to characters with the same layout, not the host's one.
Tables follow the Linux console keymaps (`us`, `de`) because those are what a store box runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from evdev import ecodes as e

__all__ = ["LAYOUTS", "Layout", "get_layout"]


@dataclass(frozen=True)
class Layout:
    """Key code -> character tables for one keyboard layout.

    `keys` holds (plain, shifted) per key; `altgr` the third level (Right Alt is AltGr only on
    layouts that have one); `dead` the dead keys by (code, shifted) and `compose` what they
    combine into; `ctrl` the control characters not derivable from a letter (GS and friends).
    """

    name: str
    keys: Mapping[int, tuple[str, str]]
    keypad: Mapping[int, str]
    altgr: Mapping[int, str] = field(default_factory=dict)
    dead: Mapping[tuple[int, bool], str] = field(default_factory=dict)
    compose: Mapping[tuple[str, str], str] = field(default_factory=dict)
    ctrl: Mapping[int, str] = field(default_factory=dict)
    has_altgr: bool = False


def _letters(codes_and_letters: str, order: list[int]) -> dict[int, tuple[str, str]]:
    return {code: (ch, ch.upper()) for code, ch in zip(order, codes_and_letters, strict=True)}


# Physical letter keys in QWERTY order; the German table swaps KEY_Y and KEY_Z.
_LETTER_CODES = [
    e.KEY_Q, e.KEY_W, e.KEY_E, e.KEY_R, e.KEY_T, e.KEY_Y, e.KEY_U, e.KEY_I, e.KEY_O, e.KEY_P,
    e.KEY_A, e.KEY_S, e.KEY_D, e.KEY_F, e.KEY_G, e.KEY_H, e.KEY_J, e.KEY_K, e.KEY_L,
    e.KEY_Z, e.KEY_X, e.KEY_C, e.KEY_V, e.KEY_B, e.KEY_N, e.KEY_M,
]  # fmt: skip

_COMMON_KEYS: dict[int, tuple[str, str]] = {
    e.KEY_SPACE: (" ", " "),
    e.KEY_ENTER: ("\n", "\n"),
    e.KEY_KPENTER: ("\n", "\n"),
    e.KEY_TAB: ("\t", "\t"),
}

_KEYPAD_DIGITS: dict[int, str] = {
    e.KEY_KP0: "0", e.KEY_KP1: "1", e.KEY_KP2: "2", e.KEY_KP3: "3", e.KEY_KP4: "4",
    e.KEY_KP5: "5", e.KEY_KP6: "6", e.KEY_KP7: "7", e.KEY_KP8: "8", e.KEY_KP9: "9",
}  # fmt: skip

_KEYPAD_OPS: dict[int, str] = {
    e.KEY_KPSLASH: "/",
    e.KEY_KPASTERISK: "*",
    e.KEY_KPMINUS: "-",
    e.KEY_KPPLUS: "+",
}

# Spelled as an escape because it is easily mistaken for a backtick.
ACUTE = "\u00b4"

_US_KEYS: dict[int, tuple[str, str]] = {
    **_COMMON_KEYS,
    **_letters("qwertyuiopasdfghjklzxcvbnm", _LETTER_CODES),
    e.KEY_GRAVE: ("`", "~"),
    e.KEY_1: ("1", "!"), e.KEY_2: ("2", "@"), e.KEY_3: ("3", "#"), e.KEY_4: ("4", "$"),
    e.KEY_5: ("5", "%"), e.KEY_6: ("6", "^"), e.KEY_7: ("7", "&"), e.KEY_8: ("8", "*"),
    e.KEY_9: ("9", "("), e.KEY_0: ("0", ")"), e.KEY_MINUS: ("-", "_"), e.KEY_EQUAL: ("=", "+"),
    e.KEY_LEFTBRACE: ("[", "{"), e.KEY_RIGHTBRACE: ("]", "}"), e.KEY_BACKSLASH: ("\\", "|"),
    e.KEY_SEMICOLON: (";", ":"), e.KEY_APOSTROPHE: ("'", '"'),
    e.KEY_COMMA: (",", "<"), e.KEY_DOT: (".", ">"), e.KEY_SLASH: ("/", "?"),
    e.KEY_102ND: ("\\", "|"),
}  # fmt: skip

US = Layout(
    name="us",
    keys=MappingProxyType(_US_KEYS),
    keypad=MappingProxyType({**_KEYPAD_DIGITS, **_KEYPAD_OPS, e.KEY_KPDOT: "."}),
    # Ctrl+] is how a US-programmed scanner types GS (FNC1); the rest complete ASCII C0.
    ctrl=MappingProxyType(
        {
            e.KEY_2: "\x00",
            e.KEY_LEFTBRACE: "\x1b",
            e.KEY_BACKSLASH: "\x1c",
            e.KEY_RIGHTBRACE: "\x1d",
            e.KEY_6: "\x1e",
            e.KEY_MINUS: "\x1f",
        }
    ),
)

_DE_KEYS: dict[int, tuple[str, str]] = {
    **_COMMON_KEYS,
    **_letters("qwertzuiopasdfghjklyxcvbnm", _LETTER_CODES),
    e.KEY_GRAVE: ("^", "°"),  # plain ^ is a dead key, see `dead`
    e.KEY_1: ("1", "!"), e.KEY_2: ("2", '"'), e.KEY_3: ("3", "§"), e.KEY_4: ("4", "$"),
    e.KEY_5: ("5", "%"), e.KEY_6: ("6", "&"), e.KEY_7: ("7", "/"), e.KEY_8: ("8", "("),
    e.KEY_9: ("9", ")"), e.KEY_0: ("0", "="), e.KEY_MINUS: ("ß", "?"), e.KEY_EQUAL: (ACUTE, "`"),
    e.KEY_LEFTBRACE: ("ü", "Ü"), e.KEY_RIGHTBRACE: ("+", "*"),
    e.KEY_SEMICOLON: ("ö", "Ö"), e.KEY_APOSTROPHE: ("ä", "Ä"), e.KEY_BACKSLASH: ("#", "'"),
    e.KEY_102ND: ("<", ">"),
    e.KEY_COMMA: (",", ";"), e.KEY_DOT: (".", ":"), e.KEY_SLASH: ("-", "_"),
}  # fmt: skip


def _compose(accent: str, pairs: str) -> dict[tuple[str, str], str]:
    """Pairs is 'aâeê...': base letter followed by its composed form."""
    return {(accent, pairs[i]): pairs[i + 1] for i in range(0, len(pairs), 2)}


DE = Layout(
    name="de",
    keys=MappingProxyType(_DE_KEYS),
    # The German keypad decimal key types a comma (KP_Separator in the `de` keymap).
    keypad=MappingProxyType({**_KEYPAD_DIGITS, **_KEYPAD_OPS, e.KEY_KPDOT: ","}),
    altgr=MappingProxyType(
        {
            e.KEY_Q: "@",
            e.KEY_E: "€",
            e.KEY_M: "µ",
            e.KEY_2: "²",
            e.KEY_3: "³",
            e.KEY_7: "{",
            e.KEY_8: "[",
            e.KEY_9: "]",
            e.KEY_0: "}",
            e.KEY_MINUS: "\\",
            e.KEY_RIGHTBRACE: "~",
            e.KEY_102ND: "|",
        }
    ),
    dead=MappingProxyType(
        {(e.KEY_GRAVE, False): "^", (e.KEY_EQUAL, False): ACUTE, (e.KEY_EQUAL, True): "`"}
    ),
    compose=MappingProxyType(
        {
            **_compose("^", "aâeêiîoôuûAÂEÊIÎOÔUÛ"),
            **_compose(ACUTE, "aáeéiíoóuúyýAÁEÉIÍOÓUÚYÝ"),
            **_compose("`", "aàeèiìoòuùAÀEÈIÌOÒUÙ"),
        }
    ),
    # Linux `de` keymap: Control on the `+` key (US `]` position) is Control_bracketright = GS.
    ctrl=MappingProxyType({e.KEY_RIGHTBRACE: "\x1d", e.KEY_LEFTBRACE: "\x1b"}),
    has_altgr=True,
)

LAYOUTS: Mapping[str, Layout] = MappingProxyType({"de": DE, "us": US})


def get_layout(name: str) -> Layout:
    """Look a layout up by its config name; the error lists the valid ones."""
    try:
        return LAYOUTS[name]
    except KeyError:
        known = ", ".join(sorted(LAYOUTS))
        raise ValueError(f"unknown layout {name!r}; expected one of: {known}") from None
