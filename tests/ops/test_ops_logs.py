"""Structured JSON logs that never hold a card number or a credential (item 5)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from protocol import logsetup

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
