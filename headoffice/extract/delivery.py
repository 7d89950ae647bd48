"""HTTP delivery of purchase records, at least once, deduplicated by the receiver.

Each record is POSTed as JSON (the exact bytes recorded at emit time) with `Idempotency-Key` set
to its record id, so a retry after a lost response cannot create a second purchase. Transient
failures (connection errors, timeouts, 408/425/429/5xx) are retried with capped exponential
backoff (tenacity); a record that still fails stays undelivered and is tried again next run.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import NamedTuple

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from headoffice.db.sql import Sql
from headoffice.extract.config import DeliveryConfig
from protocol.errors import LanesyncError
from protocol.runtime import clock

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class TransientError(LanesyncError):
    """A failure worth retrying."""

    code = "delivery_transient"


class PermanentError(LanesyncError):
    """The receiver refused the record (4xx); retrying the same bytes will not help."""

    code = "delivery_refused"


class PendingRecord(NamedTuple):
    """A purchase record not delivered yet: its id (the Idempotency-Key) and its JSON body."""

    record_id: str
    body: str


@dataclass(frozen=True, slots=True)
class Outcome:
    record_id: str
    ok: bool
    attempts: int
    error: str | None


async def _post(session: aiohttp.ClientSession, url: str, record_id: str, body: str) -> None:
    headers = {"Content-Type": "application/json", "Idempotency-Key": record_id}
    try:
        async with session.post(url, data=body.encode(), headers=headers) as resp:
            if resp.status < 300:
                return
            text = (await resp.text())[:200]
            msg = f"HTTP {resp.status}: {text}"
            if resp.status in RETRY_STATUS:
                raise TransientError(msg)
            raise PermanentError(msg)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TransientError(f"{type(exc).__name__}: {exc}") from exc


async def deliver_one(
    session: aiohttp.ClientSession, cfg: DeliveryConfig, record_id: str, body: str
) -> Outcome:
    assert cfg.url is not None
    attempts = 0
    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(cfg.retries + 1),
            wait=wait_exponential(multiplier=cfg.backoff_s, max=max(cfg.backoff_s, 30.0)),
            retry=retry_if_exception_type(TransientError),
            reraise=False,
        ):
            with attempt:
                attempts += 1
                await _post(session, cfg.url, record_id, body)
    except RetryError as exc:
        return Outcome(record_id, False, attempts, str(exc.last_attempt.exception()))
    except PermanentError as exc:
        return Outcome(record_id, False, attempts, str(exc))
    return Outcome(record_id, True, attempts, None)


async def deliver(cfg: DeliveryConfig, records: list[PendingRecord]) -> list[Outcome]:
    """POST each record with bounded concurrency; outcomes in input order."""
    if cfg.url is None or not records:
        return []
    sem = asyncio.Semaphore(cfg.concurrency)
    timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)

    async def one(session: aiohttp.ClientSession, rid: str, body: str) -> Outcome:
        async with sem:
            return await deliver_one(session, cfg, rid, body)

    async with aiohttp.ClientSession(timeout=timeout) as session, asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(one(session, r.record_id, r.body), name=f"deliver-{r.record_id}")
            for r in records
        ]
    return [t.result() for t in tasks]


def pending(db: Sql, limit: int = 100_000) -> list[PendingRecord]:
    """The undelivered purchase records, oldest run first."""
    return [
        PendingRecord(r[0], r[1])
        for r in db.fetchall(
            "SELECT record_id, body FROM extract_purchases WHERE delivered_at IS NULL "
            "ORDER BY run, record_id LIMIT ?",
            (limit,),
        )
    ]


def save(db: Sql, outcomes: list[Outcome]) -> None:
    now = clock.now_ms()
    db.begin()
    db.executemany(
        "UPDATE extract_purchases SET attempts = attempts + ?, last_error = ?, "
        "delivered_at = CASE WHEN ? THEN ? ELSE delivered_at END WHERE record_id = ?",
        [(o.attempts, o.error, o.ok, now, o.record_id) for o in outcomes],
    )
    db.commit()
