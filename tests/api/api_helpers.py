"""Shared by the tests/api suites: an agent's local API on a Unix socket, and a client for it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp

from agent.api import LocalApi
from agent.config import (
    AgentConfig,
    ApiConfig,
    DocumentsConfig,
    PurchasingConfig,
    TransitConfig,
)
from agent.documents.envelope import DocContext
from agent.documents.tax import TaxRate, TaxTable
from agent.journal import Journal
from hardware.queue import ScanQueue
from protocol.identity import LaneId

LANE = LaneId("S1", "L1")
TAX = TaxTable(
    [
        TaxRate("VAT_STD", date(2000, 1, 1), 1900),
        TaxRate("VAT_STD", date(2024, 7, 1), 2000),  # a rate change: documents before keep 19 %
        TaxRate("VAT_RED", date(2000, 1, 1), 700),
        TaxRate("ZERO", date(2000, 1, 1), 0),
    ]
)
TRANSIT = TransitConfig(gs1_company_prefix="5703538", sscc_lane_prefix="01")


def context(**kw: Any) -> DocContext:
    base: dict[str, Any] = {"lane": LANE, "tax": TAX, "transit": TRANSIT}
    base.update(kw)
    return DocContext(**base)


def agent_config(tmp: Path, **kw: Any) -> AgentConfig:
    base: dict[str, Any] = {
        "lane": LANE,
        "journal_path": tmp / "journal.db",
        "api": ApiConfig(socket=str(tmp / "api.sock")),
        "documents": DocumentsConfig(currency="EUR"),
        "purchasing": PurchasingConfig(),
        "transit": TRANSIT,
        "tax": TAX,
    }
    base.update(kw)
    return AgentConfig(**base)


class Client:
    """JSON over the agent's Unix socket; returns (status, body, content type)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any, str]:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        async with self.session.request(
            method, f"http://lane{path}", data=data, headers=headers
        ) as r:
            text = await r.text()
            return r.status, (json.loads(text) if text else None), r.content_type


@contextlib.asynccontextmanager
async def running_api(
    tmp: Path, *, scans: ScanQueue | None = None, **kw: Any
) -> AsyncIterator[tuple[LocalApi, Client]]:
    cfg = agent_config(tmp, **kw)
    async with (
        Journal(cfg.journal_path, cfg.lane) as journal,
        LocalApi(cfg.api, journal, None, agent=cfg, scans=scans) as api,
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(cfg.api.socket))) as s,
    ):
        yield api, Client(s)


def sale(**kw: Any) -> dict[str, Any]:
    """A cash sale of two lines at 2024-08-01 rates (VAT_STD 20 %, VAT_RED 7 %)."""
    doc: dict[str, Any] = {
        "kind": "sale",
        "business_day": "2024-08-01",
        "time": "2024-08-01T10:00:00+02:00",
        "currency": "EUR",
        "customer": None,
        "lines": [
            {
                "item": "P1000",
                "qty": "2.000",
                "unit_price": 1899,
                "tax_code": "VAT_STD",
                "amount": 3798,
                "tax": 633,
            },
            {
                "item": "P3000",
                "qty": "1.000",
                "unit_price": 179,
                "tax_code": "VAT_RED",
                "amount": 179,
                "tax": 12,
            },
        ],
        "payments": [{"tender": "cash", "amount": 4000}],
        "total": 3977,
        "change": 23,
    }
    doc.update(kw)
    return doc
