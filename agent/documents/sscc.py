"""SSCC numbers for transit parcels: GS1 company prefix, lane range, leased serial, check digit.

SSCC-18 = extension digit + company prefix + serial reference + check digit. The serial
reference starts with this lane's `sscc_lane_prefix` (from configuration) followed by a serial.
The check digit is protocol.screen's (GS1 7.9.1); the printed form comes from biip.

Serials are leased from head office in blocks (issue 15.5, `SsccLeases` below; head office:
headoffice/sscc/server.py, request op `sscc_lease`): head office hands out one chain-wide
counter, so a recreated journal (a new epoch) or a replaced box never prints a serial a parcel
already carries. The blocks the lane holds are rows of the journal database's `counters`
table (`sscc_block:<first>`: value = last, at_seq = first), next to `sscc` (the last serial
used), so taking a serial is one UPDATE in the transaction that stores it with the open
transit (agent/open_docs/store.py), and what remains of the blocks is usable offline. Once
the lease client has started (`sscc_leasing` row), a lane with no serial left refuses the
transit with a clear error rather than invent one; a lane that never leased keeps the local
counter of before (no head office to ask: a lab or an old configuration).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

from protocol import requests
from protocol.errors import ProtocolError
from protocol.runtime.tasks import Component, Loops
from protocol.screen import gs1_check_digit

log = logging.getLogger(__name__)

DEFAULT_BLOCK = 1000  # serials per lease
DEFAULT_LOW_WATER = 250  # ask for the next block when fewer than this remain
POLL_S = 1.0
EMPTY_RETRY_S = 0.2
REQUEST_TIMEOUT_S = 10.0


class NoSerialLeft(ProtocolError):
    """The lane has used every serial head office leased it and cannot reach head office."""


# Statements of the one transaction that takes the next serial (run by the lane tables'
# writer, agent/open_docs/store.py). The next serial is the lowest one past `sscc` inside a
# held block; the last one returns it (no row: nothing left, or no lease ever: see below).
TAKE_SERIAL: list[tuple[str, tuple[Any, ...]]] = [
    ("INSERT OR IGNORE INTO counters (name, value) VALUES ('sscc', 0)", ()),
    (
        "UPDATE counters SET value = CASE "
        "WHEN NOT EXISTS (SELECT 1 FROM counters WHERE name = 'sscc_leasing') "
        "AND NOT EXISTS (SELECT 1 FROM counters WHERE name LIKE 'sscc_block:%') "
        "THEN value + 1 "
        "ELSE (SELECT max(counters.value + 1, b.at_seq) FROM counters b "
        "WHERE b.name LIKE 'sscc_block:%' AND b.value > counters.value "
        "ORDER BY b.at_seq LIMIT 1) END "
        "WHERE name = 'sscc' AND ("
        "(NOT EXISTS (SELECT 1 FROM counters WHERE name = 'sscc_leasing') "
        "AND NOT EXISTS (SELECT 1 FROM counters WHERE name LIKE 'sscc_block:%')) "
        "OR EXISTS (SELECT 1 FROM counters b WHERE b.name LIKE 'sscc_block:%' "
        "AND b.value > counters.value)) RETURNING value",
        (),
    ),
]
NO_SERIAL_LEFT = (
    "no SSCC serial left: the lane has used every serial head office leased it and has not "
    "reached head office for the next block (it asks by itself once the link is back)"
)


def taken_serial(rows: list[Any]) -> int:
    """The serial TAKE_SERIAL's last statement returned, or NoSerialLeft."""
    if not rows:
        raise NoSerialLeft(NO_SERIAL_LEFT, "sscc")
    return int(rows[0][0])


REMAINING = (
    "SELECT coalesce(sum(b.value - max(c.value, b.at_seq - 1)), 0) FROM counters b, "
    "(SELECT coalesce(max(value), 0) AS value FROM counters WHERE name = 'sscc') c "
    "WHERE b.name LIKE 'sscc_block:%' AND b.value > c.value"
)


@dataclass(frozen=True, slots=True)
class SsccScheme:
    company_prefix: str  # 7..10 digits, from the chain's GS1 membership
    lane_prefix: str  # digits unique to this lane
    extension_digit: int = 0

    @property
    def counter_digits(self) -> int:
        return 16 - len(self.company_prefix) - len(self.lane_prefix)

    @property
    def max_serial(self) -> int:
        return int(10**self.counter_digits) - 1

    def make(self, serial: int) -> str:
        """The SSCC for counter value `serial` (1-based)."""
        if not 1 <= serial <= self.max_serial:
            raise ProtocolError(
                f"SSCC serial {serial} is outside 1..{self.max_serial} for company prefix "
                f"{self.company_prefix} and lane prefix {self.lane_prefix!r}; the lane's SSCC "
                "range is exhausted",
                "sscc",
            )
        payload = (
            f"{self.extension_digit}{self.company_prefix}{self.lane_prefix}"
            f"{serial:0{self.counter_digits}d}"
        )
        return payload + str(gs1_check_digit(payload))

    def hri(self, sscc: str) -> str:
        from biip.sscc import Sscc  # noqa: PLC0415 - biip costs a lane 16 MB: only for labels

        return Sscc.parse(sscc).as_hri(company_prefix_length=len(self.company_prefix))


def check_sscc(value: object, field: str) -> str:
    """An 18-digit SSCC with a valid GS1 check digit.

    The refusal says what is wrong without the value (biip's message quotes it, and what a
    POS sends as an SSCC may be a card number).
    """
    if type(value) is not str:
        raise ProtocolError(f"must be an 18-digit SSCC string, got {type(value).__name__}", field)
    if value != value.strip():
        raise ProtocolError("must not have surrounding spaces", field)
    if len(value) != 18 or not value.isascii() or not value.isdigit():
        raise ProtocolError(f"an SSCC is 18 digits, got {len(value)} characters", field)
    if gs1_check_digit(value[:-1]) != int(value[-1]):
        raise ProtocolError("not an SSCC: the GS1 check digit does not match", field)
    return value


def label_text(
    sscc: str,
    hri: str,
    source_store: str,
    dest_store: str,
    by: str,
    register_no: str,
    lines: int,
    units: str,
) -> str:
    """Plain text for the parcel label printer: what a person at the other store reads."""
    return "\n".join(
        [
            f"TRANSIT {register_no}",
            f"FROM {source_store}  TO {dest_store}",
            f"BY {by}",
            f"{lines} LINES  {units} UNITS",
            f"(00) {sscc}",
            f"SSCC {hri}",
        ]
    )


class LeaseReply(Protocol):
    """What the replicator's request() returns (protocol.messages.Reply)."""

    @property
    def ok(self) -> bool: ...

    @property
    def result(self) -> dict[str, Any]: ...

    @property
    def error(self) -> str | None: ...


Request = Callable[[str, dict[str, Any], float], Awaitable[LeaseReply]]


class SsccLeases(Component):
    """The lane's lease client: keeps at least `low_water` serials leased, asking head office
    for `block` more over the replicator's request() whenever fewer remain (and once at start
    with none). Async context manager owning one task; its own connection to the journal file
    writes only `counters` rows `sscc_leasing` and `sscc_block:*` (WAL, synchronous=FULL: a
    block is on disk before it is used). Offline it waits and retries; what remains of the
    blocks keeps serving transits meanwhile."""

    def __init__(
        self,
        path: str | Path,
        epoch: int,
        request: Request,
        scheme: SsccScheme,
        *,
        block: int = DEFAULT_BLOCK,
        low_water: int = DEFAULT_LOW_WATER,
        poll_s: float = POLL_S,
    ) -> None:
        if not 1 <= low_water <= block:
            raise ValueError(f"low water {low_water} must be 1..block ({block})")
        self.path = Path(path)
        self.epoch = epoch
        self.request = request
        self.scheme = scheme
        self.block = block
        self.low_water = low_water
        self.poll_s = poll_s
        self.leased = 0  # blocks received since start (for status and tests)
        self.last_error: str | None = None
        self._db: aiosqlite.Connection | None = None
        super().__init__("sscc-leases")
        self._wake = asyncio.Event()

    async def setup(self) -> None:
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=FULL")
        await self._db.execute("PRAGMA busy_timeout=5000")
        await self._db.execute(
            "INSERT OR IGNORE INTO counters (name, value) VALUES ('sscc_leasing', 1)"
        )

    def loops(self) -> Loops:
        return [("renew", self._run())]

    async def teardown(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    def wake(self) -> None:
        """Look again now (after a serial was taken, or the link came back)."""
        self._wake.set()

    async def remaining(self) -> int:
        assert self._db is not None
        rows = list(await self._db.execute_fetchall(REMAINING))
        return int(rows[0][0])

    async def _run(self) -> None:
        while True:
            try:
                if await self.remaining() < self.low_water:
                    await self.lease_once()
                    continue  # one more look: a block smaller than the gap asks again
            except sqlite3.Error as exc:
                log.error("lane: SSCC leases: journal database: %s", exc)
                self.last_error = str(exc)
            except Exception as exc:  # noqa: BLE001 - no link, a timeout: try again later
                self.last_error = str(exc)
                log.warning("lane: SSCC lease not renewed yet: %s", exc)
            self._wake.clear()
            # With nothing left a transit is refused: ask again soon (the link may just be
            # coming up at start), else look every poll_s.
            pause = min(self.poll_s, EMPTY_RETRY_S) if await self.remaining() == 0 else self.poll_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    async def lease_once(self) -> tuple[int, int]:
        """Ask head office for one block and keep it durably; returns (first, last)."""
        assert self._db is not None
        # The epoch as [high, low] 32-bit halves: request args are screened for card numbers,
        # and a 63-bit integer has 19 digits that pass Luhn one time in ten.
        epoch = [self.epoch >> 32, self.epoch & 0xFFFFFFFF]
        args = {"count": self.block, "epoch": epoch, "max": self.scheme.max_serial}
        reply = await self.request(requests.OP_SSCC_LEASE, args, REQUEST_TIMEOUT_S)
        if not reply.ok:
            raise ProtocolError(
                f"head office refused an SSCC lease: {reply.error or reply.result}", "sscc"
            )
        first, last = reply.result.get("first"), reply.result.get("last")
        if type(first) is not int or type(last) is not int or not 1 <= first <= last:
            raise ProtocolError(f"head office's SSCC lease reply is malformed: {reply.result}")
        if last > self.scheme.max_serial:
            raise ProtocolError(f"SSCC lease {first}..{last} passes {self.scheme.max_serial}")
        await self._db.execute(
            "INSERT OR IGNORE INTO counters (name, value, at_seq) VALUES (?, ?, ?)",
            (f"sscc_block:{first}", last, first),
        )
        self.leased += 1
        self.last_error = None
        log.info("lane: SSCC serials %d..%d leased from head office", first, last)
        return first, last
