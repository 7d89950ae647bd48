"""Helpers shared by the operations tests: lane configs and journals with real entries."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from agent import config as agent_config
from agent.config import AgentConfig
from agent.journal import Journal
from protocol.identity import LaneId

LANE = LaneId("S042", "L1")


def sale(n: int, pad: int = 0) -> dict[str, Any]:
    return {"kind": "sale", "register_no": f"T{10000 + n}", "total": 100 + n, "note": "x" * pad}


def lane_config(tmp_path: Path, **tables: dict[str, Any]) -> AgentConfig:
    data: dict[str, Any] = {
        "store": LANE.store,
        "lane": LANE.lane,
        "journal": {"path": str(tmp_path / "journal.db")},
        "api": {"socket": str(tmp_path / "api.sock")},
    }
    data.update(tables)
    return agent_config.parse(data)


async def fill(journal: Journal, n: int, pad: int = 0) -> None:
    for i in range(n):
        await journal.append("sale", sale(journal.last_seq + i + 1, pad))


def query(path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read a database through its own connection: only what was committed."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()
