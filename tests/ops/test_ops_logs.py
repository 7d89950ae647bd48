"""Structured JSON logs that never hold a card number or a credential (item 5)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from protocol.runtime import logsetup

PAN = "4111 1111 1111 1111"


@pytest.fixture
def json_log() -> tuple[logging.Logger, io.StringIO]:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.addFilter(logsetup.RedactFilter())
    handler.setFormatter(logsetup.JsonFormatter())
    logger = logging.getLogger("lanesync.test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, buf
    logger.removeHandler(handler)


def _records(buf: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_card_numbers_and_credentials_are_redacted(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    log, buf = json_log
    logsetup.add_secret("s3cr3t-broker-pw")
    log.info("refused document with token %s", PAN)
    log.info("raw %s", "4111111111111111")
    log.warning("connect failed user=S1 password=hunter22 at mqtt://S1:pw123@broker:1883")
    log.error("api called with Authorization: Bearer abcdef123456")
    log.error("broker said: bad login for s3cr3t-broker-pw")
    log.info("receipt T10001 total 4999 EUR, gtin 4006381333931")
    text = buf.getvalue()
    for leaked in (PAN, "4111111111111111", "hunter22", "pw123", "abcdef123456", "s3cr3t"):
        assert leaked not in text
    recs = _records(buf)
    assert recs[0]["msg"] == "refused document with token [PAN redacted]"
    assert "password=[redacted]" in recs[2]["msg"]
    assert recs[5]["msg"] == "receipt T10001 total 4999 EUR, gtin 4006381333931"  # not a PAN
    assert {"ts", "level", "logger", "msg", "pid"} <= set(recs[0])


def test_exception_text_is_redacted_too(json_log: tuple[logging.Logger, io.StringIO]) -> None:
    log, buf = json_log
    try:
        raise ValueError(f"bad card {PAN}")
    except ValueError:
        log.exception("failed")
    rec = _records(buf)[0]
    assert "ValueError" in rec["exc"]
    assert PAN not in rec["exc"]


def test_configure_picks_json_under_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    root = logging.getLogger()
    level = root.level
    try:
        logsetup.configure("INFO", "auto")
        ours = [h for h in root.handlers if h.get_name() == "lanesync"]
        assert len(ours) == 1
        assert isinstance(ours[0].formatter, logsetup.JsonFormatter)
        logsetup.configure("INFO", "text")  # a second call replaces, never stacks
        assert len([h for h in root.handlers if h.get_name() == "lanesync"]) == 1
    finally:
        for h in [h for h in root.handlers if h.get_name() == "lanesync"]:
            root.removeHandler(h)
        root.setLevel(level)


# Card numbers as the one rule (protocol.pan) has them: every form a log line could carry.
PAN_FORMS = [
    "4111111111111111",  # Visa 16
    "4222222222222",  # Visa 13
    "378282246310005",  # Amex 15
    "3782-822463-10005",
    "6011 1111 1111 1117",  # Discover, spaced
    "6011000990139424",
    "4000-0566-5566-5556",
    "4111111111111111110",  # 19 digits
    "8000000000000003",  # any issuer prefix
    "\uff14" + "\uff11" * 15,  # fullwidth digits
    "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
]


@pytest.mark.parametrize("pan", PAN_FORMS)
def test_every_form_of_card_number_is_redacted(
    json_log: tuple[logging.Logger, io.StringIO], pan: str
) -> None:
    log, buf = json_log
    log.warning("refused %s", pan)
    log.warning("inside text:%sx and a ref 12 %s", pan, pan)
    digits = "".join(str(int(ch)) for ch in pan if ch.isdigit())
    log.info("as an integer %d", int(digits))
    text = buf.getvalue()
    assert pan not in text
    assert digits not in "".join(str(int(ch)) for ch in text if ch.isdigit())
    recs = _records(buf)
    assert recs[0]["msg"] == "refused [PAN redacted]"
    # (with one-digit groups, "12 4 1 1 ..." passes too: the 12 may go with it)
    assert recs[1]["msg"] in (
        "inside text:[PAN redacted]x and a ref 12 [PAN redacted]",
        "inside text:[PAN redacted]x and a ref [PAN redacted]",
    )
    assert recs[2]["msg"] == "as an integer [PAN redacted]"


def test_log_redaction_is_the_document_rule() -> None:
    """A number the screen refuses in a document is redacted in a log line, and what the
    screen lets through in text is left alone: one rule, in protocol.pan."""
    from protocol.documents import check_document  # noqa: PLC0415
    from protocol.errors import ProtocolError  # noqa: PLC0415

    for text in [*PAN_FORMS, "T10001", "4111 1111  1111 1111", "41111111111111110", "12/29"]:
        try:
            check_document({"kind": "sale", "note": text})
            refused = False
        except ProtocolError:
            refused = True
        assert refused == (logsetup.redact(text) != text), text


def test_refusal_logged_with_traceback_holds_no_card_number(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    log, buf = json_log
    try:
        try:
            raise KeyError(4111111111111111)
        except KeyError as inner:
            raise RuntimeError("while handling 3782 822463 10005") from inner
    except RuntimeError:
        log.exception("request failed for %r", {"pan": "6011000990139424"})
    text = buf.getvalue()
    for leaked in ("4111111111111111", "3782 822463 10005", "6011000990139424"):
        assert leaked not in text
    rec = _records(buf)[0]
    assert "KeyError" in rec["exc"]
    assert "RuntimeError" in rec["exc"]
