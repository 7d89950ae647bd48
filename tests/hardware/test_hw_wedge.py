"""Keyboard-wedge decoding from recorded evdev streams (no hardware needed)."""

from __future__ import annotations

from collections.abc import Sequence

from evdev import InputEvent
from evdev import ecodes as e
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.wedge import WedgeConfig, WedgeDecoder, WedgeError, WedgeScan
from tests.hardware.hwfixtures import decode, load_events


def texts(outputs: Sequence[object]) -> list[str]:
    return [o.text for o in outputs if isinstance(o, WedgeScan)]


def errors(outputs: Sequence[object]) -> list[WedgeError]:
    return [o for o in outputs if isinstance(o, WedgeError)]


def key(code: int, value: int, t: float = 0.0) -> InputEvent:
    return InputEvent(int(t), round((t - int(t)) * 1e6), e.EV_KEY, code, value)


def test_us_shift_caps_keypad_repeat_and_autorepeat() -> None:
    out = decode(load_events("us_shifted.json"))
    # Overlapping left/right shift keeps shift held; autorepeat of "2" adds nothing; "111" kept;
    # caps lock inverts shift for letters only; keypad digits and KPENTER work.
    assert texts(out) == ["ABCD-1112" + "70." + "Xy3" + "z!", "40"]
    assert errors(out) == []
    first = next(o for o in out if isinstance(o, WedgeScan))
    assert first.time > 1_700_000_000


def test_german_layout_umlauts_altgr_dead_key_and_keypad_comma() -> None:
    out = decode(load_events("de_layout.json"), WedgeConfig(layout="de"))
    assert texts(out) == ["Zürich-Größe_Ä/#+*<>@€yê1,5"]


def test_same_stream_with_wrong_layout_differs() -> None:
    out = decode(load_events("de_layout.json"), WedgeConfig(layout="us"))
    assert texts(out) != ["Zürich-Größe_Ä/#+*<>@€yê1,5"]


def test_gs_as_ctrl_bracket_and_alt_numpad() -> None:
    out = decode(load_events("gs_variants.json"))
    assert texts(out) == ["]C10104006381333931\x1d10AB\x1d21X"]


def test_syn_dropped_resyncs_and_reports() -> None:
    out = decode(load_events("syn_dropped.json"))
    errs = errors(out)
    assert len(errs) == 2
    assert "SYN_DROPPED" in errs[0].reason
    assert errs[0].partial == "12"
    # The tail typed after the resync belongs to the damaged read and is not a scan; the
    # key "9" inside the dropped packet is discarded, and shift (held when events were lost)
    # is reset so the next scan is not typed in upper case.
    assert errs[1].partial == "34"
    assert "SYN_DROPPED" in errs[1].reason
    assert texts(out) == ["5449000000996"]


def test_inter_key_timeout_discards_partial() -> None:
    out = decode(load_events("timeout.json"))
    errs = errors(out)
    assert len(errs) == 1
    assert errs[0].partial == "40063"
    assert "inter-key timeout" in errs[0].reason
    assert texts(out) == ["4006381333931"]


def test_expire_reports_partial_when_stream_stops() -> None:
    decoder = WedgeDecoder(WedgeConfig(inter_key_timeout=0.05))
    decoder.feed(key(e.KEY_4, 1, 10.0))
    decoder.feed(key(e.KEY_4, 0, 10.001))
    assert decoder.deadline() == 10.001 + 0.05
    assert decoder.expire(10.02) == []
    (err,) = decoder.expire(10.2)
    assert isinstance(err, WedgeError)
    assert err.partial == "4"
    assert decoder.deadline() is None


def _typed(decoder: WedgeDecoder, codes: list[int], t: float = 1.0) -> list[object]:
    out: list[object] = []
    for i, code in enumerate(codes):
        out += decoder.feed(key(code, 1, t + i * 0.004))
        out += decoder.feed(key(code, 0, t + i * 0.004 + 0.001))
    return out


def test_tab_terminator_and_prefix() -> None:
    decoder = WedgeDecoder(WedgeConfig(terminator="\t", prefix="00"))
    out = _typed(decoder, [e.KEY_0, e.KEY_0, e.KEY_1, e.KEY_2, e.KEY_ENTER, e.KEY_TAB])
    assert texts(out) == ["12\n"]
    out = _typed(decoder, [e.KEY_9, e.KEY_1, e.KEY_TAB], t=5.0)
    (err,) = errors(out)
    assert "prefix '00'" in err.reason
    assert err.partial == "91"


def test_custom_suffix_terminator() -> None:
    decoder = WedgeDecoder(WedgeConfig(terminator="##"))
    shift = e.KEY_LEFTSHIFT
    out: list[object] = []
    out += _typed(decoder, [e.KEY_1, e.KEY_2])
    for t in (1.01, 1.02):
        out += decoder.feed(key(shift, 1, t))
        out += _typed(decoder, [e.KEY_3], t + 0.001)
        out += decoder.feed(key(shift, 0, t + 0.008))
    assert texts(out) == ["12"]


def test_unmapped_key_fails_the_whole_read() -> None:
    decoder = WedgeDecoder()
    out = _typed(decoder, [e.KEY_1, e.KEY_F1, e.KEY_2, e.KEY_ENTER])
    (err,) = errors(out)
    assert "KEY_F1" in err.reason
    assert err.partial == "12"
    assert texts(out) == []


def test_empty_read_is_reported() -> None:
    (err,) = _typed(WedgeDecoder(), [e.KEY_ENTER])
    assert isinstance(err, WedgeError)
    assert "empty" in err.reason


def test_release_without_press_and_foreign_events_are_harmless() -> None:
    decoder = WedgeDecoder()
    assert decoder.feed(key(e.KEY_LEFTSHIFT, 0, 1.0)) == []
    assert decoder.feed(InputEvent(1, 0, e.EV_LED, 1, 1)) == []
    assert texts(_typed(decoder, [e.KEY_A, e.KEY_ENTER], 1.1)) == ["a"]


_key_codes = st.sampled_from(
    [e.KEY_A, e.KEY_1, e.KEY_ENTER, e.KEY_LEFTSHIFT, e.KEY_RIGHTALT, e.KEY_LEFTALT, e.KEY_LEFTCTRL,
     e.KEY_CAPSLOCK, e.KEY_KP0, e.KEY_KP9, e.KEY_GRAVE, e.KEY_EQUAL, e.KEY_F1, e.KEY_TAB,
     e.KEY_RIGHTBRACE, e.KEY_SPACE]
)  # fmt: skip
_events = st.one_of(
    st.tuples(st.just(e.EV_KEY), _key_codes, st.integers(-1, 3)),
    st.tuples(st.just(e.EV_KEY), st.integers(0, 0x2FF), st.integers(-5, 5)),
    st.tuples(st.just(e.EV_SYN), st.sampled_from([e.SYN_REPORT, e.SYN_DROPPED]), st.just(0)),
    st.tuples(st.integers(0, 0x1F), st.integers(0, 0xFFFF), st.integers(-(2**31), 2**31 - 1)),
)


@settings(max_examples=300, deadline=None)
@given(
    layout=st.sampled_from(["us", "de"]),
    stream=st.lists(st.tuples(_events, st.floats(0, 0.5)), max_size=80),
)
def test_no_event_sequence_makes_the_decoder_raise(
    layout: str, stream: list[tuple[tuple[int, int, int], float]]
) -> None:
    decoder = WedgeDecoder(WedgeConfig(layout=layout, inter_key_timeout=0.1, max_length=16))
    t = 100.0
    for (etype, code, value), dt in stream:
        t += dt
        for out in decoder.feed(InputEvent(int(t), int((t % 1) * 1e6), etype, code, value)):
            assert isinstance(out, WedgeScan | WedgeError)
            if isinstance(out, WedgeScan):
                assert out.text
                assert len(out.text) <= 16
    decoder.expire(t + 10)
    assert not decoder.in_progress or decoder.deadline() is not None
