"""Structured logs for both daemons: one JSON object per line, with secrets redacted.

Invariant 6 says no full card number is ever logged, and a credential in a log file is a
credential leaked to whoever reads the journal. So every record passes a redaction filter before
any handler formats it: card numbers (protocol.pan's one rule: Luhn-valid 13-19 digit runs,
plain, spaced, dashed, inside words, in any script's digits) become `[PAN redacted]`;
`password=`/`token=`/`Authorization: Bearer` values become `[redacted]`, and so does every
secret string a daemon registered from its configuration (`add_secret`).
Logging setup is process-wide configuration, like `notify`, so it lives beside it.

Redaction reads free text only, never the identifiers lanesync logs itself: a lane's epoch is a
random 19-digit number that passes the Luhn check in about 6 % of lanes, and it is the key a
technician matches a lane with head office by. A log call declares its identifiers as
`extra={"epoch": ..., "seq": ..., "sscc": ..., "txn_id": ...}` (the names in IDENTIFIERS):
- JSON output carries each as a field of its own, never redacted when it holds what its name
  says (epochs and seqs: ints >= 0; an SSCC: 18 digits with its GS1 check digit; a txn id: a
  UUID); one that does not is redacted like text;
- an argument of the message equal to a declared identifier (`"epoch %d", epoch`) is rendered
  after the text around it was redacted, in text and JSON output alike.
Everything else stays free text: an int argument that is not declared (a count, or a number
that came from a document) is redacted when it reads as a card number.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import traceback
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from protocol.pan import pan_spans, redact_text

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


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _sscc(value: Any) -> bool:
    # Imported here: protocol.screen loads biip (16 MB, 0.1 s), and every command imports this
    # module before it knows whether it will ever log an SSCC.
    from protocol.screen import sscc  # noqa: PLC0415

    return sscc(value, None)


def _txn_id(value: Any) -> bool:
    if type(value) is not str:
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


# Identifier fields a log call may pass in `extra=`, each with what it must hold to be shown
# as is (anything else is redacted like free text).
IDENTIFIERS: Mapping[str, Callable[[Any], bool]] = {
    "epoch": _count,
    "seq": _count,
    "first_seq": _count,
    "last_seq": _count,
    "acked_seq": _count,
    "hwm": _count,
    "sscc": _sscc,
    "txn_id": _txn_id,
}

# A %-conversion of the logging module's format strings (printf-style, docs.python.org
# library/stdtypes "printf-style String Formatting").
_SPEC = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[#0 +-]*(?P<width>\*|\d+)?(?:\.(?P<prec>\*|\d+))?[hlL]?"
    r"(?P<conv>[diouxXeEfFgGcrsa%])"
)
_MARK_OPEN, _MARK_CLOSE = "\ue000", "\ue001"  # private-use characters: no digits, no words
_MARKS = re.compile(f"({_MARK_OPEN}[a-z]+{_MARK_CLOSE})")


def _mark(n: int) -> str:
    letters = ""
    while True:
        n, r = divmod(n, 26)
        letters += chr(ord("a") + r)
        if n == 0:
            return f"{_MARK_OPEN}{letters}{_MARK_CLOSE}"


def declared(record: logging.LogRecord) -> dict[str, Any]:
    """The identifier fields a log call passed in `extra=` that hold what their name says."""
    fields = record.__dict__
    return {
        name: fields[name]
        for name, holds in IDENTIFIERS.items()
        if name in fields and holds(fields[name])
    }


def render(record: logging.LogRecord) -> str:
    """The record's message, redacted, with the arguments that are its declared identifiers
    rendered after redaction."""
    msg, args = str(record.msg), record.args
    if not args:
        return redact(msg)
    ids = {(type(v), v) for v in declared(record).values()}
    if not ids:
        return redact(record.getMessage())
    shown_after: dict[str, str] = {}
    template: list[str] = []
    rest: list[Any] = []
    named = isinstance(args, Mapping)
    at = pos = 0
    for m in _SPEC.finditer(msg):
        template.append(msg[at : m.start()])
        at = m.end()
        spec = m.group(0)
        if m.group("conv") == "%":
            template.append(spec)
            continue
        if "*" in (m.group("width") or "") + (m.group("prec") or ""):
            return redact(record.getMessage())  # rare: widths from args; nothing spared
        key = m.group("key")
        if named:
            value = args[key] if key is not None else args  # type: ignore[index]
        else:
            assert isinstance(args, tuple)
            if key is not None or pos >= len(args):
                return redact(record.getMessage())  # let getMessage name the mismatch
            value = args[pos]
            pos += 1
        if type(value) in (int, str) and (type(value), value) in ids:
            mark = _mark(len(shown_after))
            shown_after[mark] = (spec.replace(f"({key})", "") if key is not None else spec) % value
            template.append(mark)
        else:
            template.append(spec)
            if not named:
                rest.append(value)
    template.append(msg[at:])
    text = redact("".join(template) % (args if named else tuple(rest)))
    # A mark inside a value that redaction removed (`password=%d`) is gone: so is its value.
    parts: list[str] = []
    spared: list[tuple[int, int]] = []
    size = 0
    for piece in _MARKS.split(text):
        shown = shown_after.get(piece, piece)
        if shown is not piece:
            spared.append((size, size + len(shown)))
        parts.append(shown)
        size += len(shown)
    text = "".join(parts)
    # An identifier spares only itself: digits of the text around it that make a card number
    # with it ("4111 1111 1111 %d") are redacted with it.
    joined = [(a, b) for a, b in pan_spans(text) if not any(x <= a and b <= y for x, y in spared)]
    if not joined:
        return text
    out, at = [], 0
    for a, b in sorted(joined):
        if a < at:
            at = max(at, b)
            continue
        out += [text[at:a], "[PAN redacted]"]
        at = b
    out.append(text[at:])
    return "".join(out)


class RedactFilter(logging.Filter):
    """Rewrites a record's message (and exception text) before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = render(record)
        except (TypeError, ValueError, KeyError):  # a bad format string must not lose the record
            message = redact(f"{record.msg!r} {record.args!r}")
        record.msg, record.args = message, None
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
        ids = declared(record)
        for name in IDENTIFIERS:
            if name in ids:
                out[name] = ids[name]
            elif name in record.__dict__:  # not what its name says: text like any other
                out[name] = redact(str(record.__dict__[name]))
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
