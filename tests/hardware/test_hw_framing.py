"""Serial framing: every mode, byte-at-a-time equals bulk, garbage around frames."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.framing import Frame, Framer, FramingSpec, decode


def good(frames: list[Frame]) -> list[bytes]:
    return [f.payload for f in frames if f.error is None]


def bad(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if f.error is not None]


def byte_at_a_time(spec: FramingSpec, data: bytes) -> list[Frame]:
    framer = Framer(spec)
    out: list[Frame] = []
    for i in range(len(data)):
        out += framer.feed(data[i : i + 1])
    return out


@pytest.mark.parametrize(
    ("spec", "stream", "expected"),
    [
        (FramingSpec("cr"), b"123\rABC\r45", [b"123", b"ABC"]),
        (FramingSpec("lf"), b"123\nABC\n45", [b"123", b"ABC"]),
        (FramingSpec("crlf"), b"12\r3\r\nABC\r\n4\r", [b"12\r3", b"ABC"]),
        (FramingSpec("suffix", suffix=b"<E>"), b"12<E>A<B<E><E", [b"12", b"A<B"]),
        (FramingSpec("stx_etx"), b"\x0212\x03\x02A\x1dB\x03\x024", [b"12", b"A\x1dB"]),
    ],
)
def test_modes_bulk_and_byte_at_a_time(
    spec: FramingSpec, stream: bytes, expected: list[bytes]
) -> None:
    bulk = Framer(spec)
    assert good(bulk.feed(stream)) == expected
    assert good(byte_at_a_time(spec, stream)) == expected
    assert bulk.pending  # the trailing partial frame is held, never emitted


def test_decode_reports_consumed_bytes() -> None:
    spec = FramingSpec("crlf")
    assert decode(b"12\r", spec) == (0, None)
    assert decode(b"12\r\n34", spec) == (4, Frame(b"12"))
    used, frame = decode(b"\r\nX", spec)
    assert used == 2
    assert frame is not None
    assert frame.error is not None
    assert "empty" in frame.error


def test_stx_etx_garbage_around_frames_is_reported() -> None:
    stream = b"noise\x02OK1\x03\r\n\x02PART\x02OK2\x03tail"
    for frames in (
        Framer(FramingSpec("stx_etx")).feed(stream),
        byte_at_a_time(FramingSpec("stx_etx"), stream),
    ):
        assert good(frames) == [b"OK1", b"OK2"]
        errors = [f.error for f in bad(frames)]
        assert errors[0] == "discarded 5 bytes before STX: b'noise'"
        assert any("before STX" in e and "2 bytes" in e for e in errors if e)
        assert any("before ETX" in e for e in errors if e)


def test_overlong_frame_is_discarded_up_to_its_terminator() -> None:
    spec = FramingSpec("cr", max_frame=8)
    stream = b"0123456789ABCDEF\rOK\r"
    for frames in (Framer(spec).feed(stream), byte_at_a_time(spec, stream)):
        assert good(frames) == [b"OK"]
        assert len(bad(frames)) == 1


def test_flush_reports_partial() -> None:
    framer = Framer(FramingSpec("cr"))
    assert framer.feed(b"4006") == []
    (frame,) = framer.flush("device disconnected")
    assert frame.payload == b"4006"
    assert frame.error is not None
    assert "device disconnected" in frame.error
    assert framer.flush("again") == []


def test_spec_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="suffix"):
        FramingSpec("suffix")
    with pytest.raises(ValueError, match="framing"):
        FramingSpec("etx")  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    mode=st.sampled_from(["cr", "lf", "crlf", "stx_etx"]),
    payloads=st.lists(
        st.binary(min_size=1, max_size=12).filter(lambda b: not set(b) & {2, 3, 10, 13}), max_size=6
    ),
    cuts=st.lists(st.integers(1, 7), max_size=40),
)
def test_any_chunking_gives_the_same_frames(
    mode: str, payloads: list[bytes], cuts: list[int]
) -> None:
    spec = FramingSpec(mode)  # type: ignore[arg-type]
    if mode == "stx_etx":
        stream = b"".join(b"\x02" + p + b"\x03" for p in payloads)
    else:
        stream = b"".join(p + spec.delimiter for p in payloads)
    framer = Framer(spec)
    out: list[Frame] = []
    pos = 0
    for cut in cuts:
        out += framer.feed(stream[pos : pos + cut])
        pos += cut
    out += framer.feed(stream[pos:])
    assert good(out) == payloads
    assert bad(out) == []
