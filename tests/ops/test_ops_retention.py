"""Retention and the disk budget, on a size-capped journal (item 7)."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest

from agent.journal import Journal, JournalFull
from agent.opsconfig import RetentionConfig
from agent.retention import Retention
from agent.verify import verify
from protocol.errors import ConfigError
from tests.ops.ops_helpers import LANE, fill, lane_config, sale


def _cfg(**kw: object) -> RetentionConfig:
    base: dict[str, object] = {
        "max_journal_mb": 1,
        "min_free_disk_mb": 0,
        "prune_interval_s": 3600,
        "keep_acked_days": 0,
        "prune_early_when_high": False,
    }
    base.update(kw)
    return RetentionConfig(**base)  # type: ignore[arg-type]


async def _fill_until_full(journal: Journal) -> tuple[int, JournalFull]:
    for i in range(2000):
        try:
            await journal.append("sale", sale(i, pad=4000))
        except JournalFull as exc:
            return i, exc
    raise AssertionError("the 1 MiB budget never filled")


async def test_full_journal_refuses_new_documents_and_keeps_confirmed_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.db"
    caplog.set_level(logging.WARNING)
    async with (
        Journal(path, LANE) as journal,
        Retention(journal, _cfg()) as retention,
        journal.guarded_by(retention),
    ):
        confirmed, exc = await _fill_until_full(journal)
        assert confirmed > 100
        assert "journal full" in str(exc)
        assert "retention.max_journal_mb" in str(exc)
        assert "NOT confirmed" in str(exc)
        assert retention.state.level == "full"
        assert retention.state.refused >= 1
        # The high watermark warned before the journal filled up.
        assert any("disk budget" in r.getMessage() for r in caplog.records)
        # Refused again while nothing was acked: nothing confirmed was dropped to make room.
        with pytest.raises(JournalFull):
            await journal.append("sale", sale(99_999, pad=4000))
        assert journal.last_seq == confirmed
        # Pruning with nothing acked deletes nothing.
        assert await retention.prune_once() == 0
    rep = verify(path)
    assert rep.ok, rep.problem
    assert (rep.first_seq, rep.last_seq) == (1, confirmed)


async def test_acked_entries_are_pruned_in_steps_and_space_comes_back(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    async with (
        Journal(path, LANE) as journal,
        Retention(journal, _cfg(prune_batch=50)) as retention,
        journal.guarded_by(retention),
    ):
        confirmed, _ = await _fill_until_full(journal)
        await journal.mark_acked(confirmed - 10)
        pages_before = sqlite3.connect(path).execute("PRAGMA page_count").fetchone()[0]
        steps = 0
        while await retention.prune_once():
            steps += 1
        assert steps >= (confirmed - 11) // 50  # small steps, not one big delete
        # The acked mark's own entry stays: the next batch chains to its hash.
        rows = sqlite3.connect(path).execute("SELECT min(seq), count(*) FROM entries").fetchone()
        assert rows == (confirmed - 10, 11)
        pages_after = sqlite3.connect(path).execute("PRAGMA page_count").fetchone()[0]
        assert pages_after < pages_before / 2  # incremental vacuum gave the pages back
        assert retention.state.level == "ok"
        # Room again: new documents are confirmed.
        appended = await journal.append("sale", sale(1_000_000, pad=4000))
        assert appended.seq == confirmed + 1
        assert await journal.hash_before(confirmed - 9)  # the chain link still resolves
    rep = verify(path)
    assert rep.ok, rep.problem


async def test_acked_entries_stay_for_the_configured_days(tmp_path: Path) -> None:
    async with (
        Journal(tmp_path / "j.db", LANE) as journal,
        Retention(journal, _cfg(max_journal_mb=0, keep_acked_days=14)) as retention,
        journal.guarded_by(retention),
    ):
        await fill(journal, 20)
        await journal.mark_acked(20)
        now = time.time()
        assert await retention.prune_once(now) == 0
        assert await retention.prune_once(now + 13 * 86400) == 0
        assert await retention.prune_once(now + 15 * 86400) == 19


async def test_above_high_watermark_prunes_acked_entries_early(tmp_path: Path) -> None:
    async with (
        Journal(tmp_path / "j.db", LANE) as journal,
        Retention(
            journal, _cfg(keep_acked_days=30, prune_early_when_high=True, high_watermark_pct=50)
        ) as retention,
        journal.guarded_by(retention),
    ):
        await fill(journal, 150, pad=4000)
        await journal.run_write(retention.budget.measure)
        assert retention.state.level == "high"
        await journal.mark_acked(100)
        assert await retention.prune_once() == 99


def test_retention_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"retention\.low_watermark_pct"):
        lane_config(tmp_path, retention={"high_watermark_pct": 50, "low_watermark_pct": 60})
    with pytest.raises(ConfigError, match=r"retention\.keep_acked_dayz: unknown key"):
        lane_config(tmp_path, retention={"keep_acked_dayz": 3})
    with pytest.raises(ConfigError, match=r"metrics\.listen"):
        lane_config(tmp_path, metrics={"listen": "nowhere"})
    cfg = lane_config(tmp_path, retention={"max_journal_mb": 64}, export={"key_file": "/k"})
    assert cfg.ops.retention.max_journal_mb == 64
    assert str(cfg.ops.export.key_file) == "/k"
