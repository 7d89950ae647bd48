"""Issue 16.5: log redaction removes card numbers from free text, never lanesync's identifiers.

A lane's epoch is 63 random bits (agent/journal/schema/0001_initial.sql), a 19-digit number that
passes the Luhn check in about 6 % of lanes; it was logged as "[PAN redacted]" there, though it
is the key a technician matches a lane with head office by. Identifiers are declared in
`extra=` (protocol.runtime.logsetup.IDENTIFIERS): they are JSON fields and the message shows them,
while card numbers in the free text around them are still redacted, in text and JSON output.
"""

from __future__ import annotations

import io
import json
import logging
import random
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.journal import Journal
from protocol.identity import LaneId
from protocol.pan import luhn_ok
from protocol.runtime import logsetup
from protocol.screen import sscc as is_sscc
from tests.ops.agent_proc import READY_LINE, agent, write_config

PAN = "4111 1111 1111 1111"
REDACTED = "[PAN redacted]"


def luhn_epochs(n: int, seed: int = 16) -> list[int]:
    """Epochs as a journal makes them (odd, below 2**63) whose digits pass the Luhn check."""
    rng = random.Random(seed)
    found: list[int] = []
    while len(found) < n:
        epoch = (rng.getrandbits(63) & 0x7FFFFFFFFFFFFFFF) | 1
        if len(str(epoch)) == 19 and luhn_ok(str(epoch)):
            found.append(epoch)
    return found


EPOCHS = luhn_epochs(5)


def gs1_check(body: str) -> str:
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return str((10 - total % 10) % 10)


def luhn_sscc() -> str:
    """An SSCC (GS1 check digit) that passes the Luhn check too: redacted as text before."""
    for n in range(10**15, 10**15 + 1000):
        code = f"0{n}"
        code += gs1_check(code)
        if luhn_ok(code):
            assert is_sscc(code, None)
            return code
    raise AssertionError("no such SSCC in range")


@pytest.fixture(params=["text", "json"])
def log_out(request: pytest.FixtureRequest) -> Iterator[tuple[logging.Logger, io.StringIO, str]]:
    """A logger with the daemons' handler set-up (filter, then formatter) in either format."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.addFilter(logsetup.RedactFilter())
    handler.setFormatter(
        logsetup.JsonFormatter()
        if request.param == "json"
        else logging.Formatter("%(levelname)s %(name)s: %(message)s")
    )
    logger = logging.getLogger(f"lanesync.test.ids.{request.param}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, buf, str(request.param)
    logger.removeHandler(handler)


def lines(buf: io.StringIO, fmt: str) -> list[dict[str, Any]]:
    """Each line as JSON would carry it; a text line as {"msg": the whole line}."""
    out = buf.getvalue().splitlines()
    return [json.loads(line) if fmt == "json" else {"msg": line} for line in out]


def test_luhn_epochs_are_real_cases() -> None:
    # Before declaring them, each of these epochs came out as "[PAN redacted]".
    for epoch in EPOCHS:
        assert logsetup.redact(f"epoch {epoch}") == f"epoch {REDACTED}"


@pytest.mark.parametrize("epoch", EPOCHS)
def test_declared_epoch_and_seq_are_never_redacted(
    log_out: tuple[logging.Logger, io.StringIO, str], epoch: int
) -> None:
    log, buf, fmt = log_out
    log.info(
        "lane %s: journal %s epoch %d at seq %d (%d unacked)",
        LaneId("S1", "L1"),
        "/var/lib/lanesync/journal.db",
        epoch,
        12,
        0,
        extra={"epoch": epoch, "seq": 12},
    )
    (rec,) = lines(buf, fmt)
    assert f"epoch {epoch} at seq 12 (0 unacked)" in rec["msg"]
    assert REDACTED not in rec["msg"]
    if fmt == "json":
        assert (rec["epoch"], rec["seq"]) == (epoch, 12)


def test_card_number_in_free_text_is_still_redacted_beside_an_epoch(
    log_out: tuple[logging.Logger, io.StringIO, str],
) -> None:
    log, buf, fmt = log_out
    epoch = EPOCHS[0]
    log.warning(
        "lane %s: refused %s in epoch %d; note %s",
        "S1/L1",
        f"card {PAN}",
        epoch,
        "4111111111111111",
        extra={"epoch": epoch},
    )
    # the same epoch, not declared: free text like any other number
    log.warning("lane S1/L1: old epoch %d", epoch)
    rec, undeclared = lines(buf, fmt)
    assert PAN not in buf.getvalue()
    assert "4111111111111111" not in buf.getvalue()
    assert f"refused card {REDACTED} in epoch {epoch}; note {REDACTED}" in rec["msg"]
    assert undeclared["msg"].endswith(f"old epoch {REDACTED}")
    if fmt == "json":
        assert rec["epoch"] == epoch
        assert "epoch" not in undeclared


def test_an_identifier_spares_only_itself(
    log_out: tuple[logging.Logger, io.StringIO, str],
) -> None:
    log, buf, fmt = log_out
    # digits of the free text that make a card number with a declared seq go with it
    log.warning("card 4111 1111 1111 %d", 1111, extra={"seq": 1111})
    # a declared value inside a credential is the credential's
    log.warning("login password=%d", 123456, extra={"seq": 123456})
    # a declared name holding something else (a card number in "txn_id") is text
    log.warning("txn %s refused", "4111111111111111", extra={"txn_id": "4111111111111111"})
    card, login, txn = lines(buf, fmt)
    assert card["msg"].endswith(f"card {REDACTED}")
    assert login["msg"].endswith("login password=[redacted]")
    assert txn["msg"].endswith(f"txn {REDACTED} refused")
    assert "4111111111111111" not in buf.getvalue()
    assert "123456" not in login["msg"]
    if fmt == "json":
        assert txn["txn_id"] == REDACTED


def test_sscc_and_txn_id_are_identifiers(
    log_out: tuple[logging.Logger, io.StringIO, str],
) -> None:
    log, buf, fmt = log_out
    code = luhn_sscc()
    assert logsetup.redact(code) == REDACTED  # what an undeclared SSCC came out as
    txn_id = str(uuid.UUID(int=random.Random(5).getrandbits(128)))
    log.info(
        "transit %s received, sale %s, card %s",
        code,
        txn_id,
        PAN,
        extra={"sscc": code, "txn_id": txn_id},
    )
    (rec,) = lines(buf, fmt)
    assert rec["msg"].endswith(f"transit {code} received, sale {txn_id}, card {REDACTED}")
    if fmt == "json":
        assert (rec["sscc"], rec["txn_id"]) == (code, txn_id)


def test_named_arguments_and_odd_format_strings() -> None:
    epoch = EPOCHS[1]
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%(e)d / %(n)s / %(p)s", None, None)
    record.args = {"e": epoch, "n": 7, "p": PAN}
    record.epoch = epoch
    assert logsetup.render(record) == f"{epoch} / 7 / {REDACTED}"
    # a bad format string keeps the record, redacted
    bad = logging.LogRecord("x", logging.INFO, __file__, 1, "%d %d", (epoch,), None)
    bad.epoch = epoch
    assert logsetup.RedactFilter().filter(bad)
    assert str(epoch) not in str(bad.msg)


async def _journal_with_epoch(tmp_path: Path, epoch: int) -> None:
    path = tmp_path / "journal.db"
    async with Journal(path, LaneId("S042", "L1")):
        pass
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'epoch'", (epoch,))
    db.close()


@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_a_real_agent_logs_its_luhn_epoch(tmp_path: Path, fmt: str) -> None:
    """`lanesync agent`'s start line (agent/daemon.py) is the one a technician reads."""
    epoch = EPOCHS[2]
    await _journal_with_epoch(tmp_path, epoch)
    config = write_config(tmp_path)
    with agent(config, log=("--log-level", "INFO", "--log-format", fmt)) as proc:
        line = proc.wait_for(lambda line: READY_LINE in line)
    assert f"epoch {epoch} at seq 0" in line, line
    assert REDACTED not in line
    if fmt == "json":
        rec = json.loads(line)
        assert (rec["epoch"], rec["seq"]) == (epoch, 0)
