"""Structured logs for both daemons: one JSON object per line, with secrets redacted.

Invariant 6 says no full card number is ever logged, and a credential in a log file is a
credential leaked to whoever reads the journal. So every record passes a redaction filter before
any handler formats it: card numbers (protocol.pan's one rule: Luhn-valid 13-19 digit runs,
plain, spaced, dashed, inside words, in any script's digits) become `[PAN redacted]`;
`password=`/`token=`/`Authorization: Bearer` values become `[redacted]`, and so does every
secret string a daemon registered from its configuration (`add_secret`).
Logging setup is process-wide configuration, like `notify`, so it lives beside it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from protocol.pan import redact_text

_CREDENTIAL = re.compile(
    r"(?i)\b(password|passwd|pwd|token|secret|api[_-]?key)(\s*[=:]\s*|\"\s*:\s*\")([^\s\",;&]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]+):([^\s@/]+)@")

_secrets: set[str] = set()


def add_secret(value: str | None) -> None:
    """Redact this exact string from every later log record (passwords, tokens, keys)."""
    if value and len(value) >= 4:
        _secrets.add(value)


def redact(text: str) -> str:
    """Text with card numbers and credentials replaced; everything else unchanged."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "[redacted]")
    text = redact_text(text, "[PAN redacted]")
    text = _CREDENTIAL.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} [redacted]", text)
    return _URL_USERINFO.sub(lambda m: f"{m.group(1)}:[redacted]@", text)


class RedactFilter(logging.Filter):
    """Rewrites a record's message (and exception text) before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what journald, Loki or jq read without a parser of ours."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_text:
            out["exc"] = record.exc_text
        elif record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


def configure(level: str = "WARNING", fmt: str = "auto") -> None:
    """Set up the root logger once per process: stderr, redacted, text or JSON.

    `auto` picks JSON when stderr goes to the systemd journal ($JOURNAL_STREAM), text otherwise.
    """
    if fmt == "auto":
        fmt = "json" if os.environ.get("JOURNAL_STREAM") else "text"
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactFilter())
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.set_name("lanesync")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "lanesync":  # ours from an earlier call; leave others' (pytest)
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.WARNING))
