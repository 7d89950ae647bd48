"""A full disk: the agent starts, serves lookups and status, drains its backlog to head office,
refuses documents with a clear 503, and resumes by itself once there is room (issue 12).

The disk is a small tmpfs the test mounts (as root); a ballast file fills it to the last byte,
the way a runaway log would. Real agent process, real broker, real head office.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.journal import Journal, JournalFull
from agent.verify import verify
from lanesync import samples, stack
from lanesync.broker import Broker
from lanesync.posclient import PosClient
from lanesync.stack import Component
from tests.ops.ops_helpers import LANE, sale

DISK_MB = 16
RESERVE_MB = 2


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs of the test's own, unmounted at teardown."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; run the suite as root to test a full disk")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (a container without CAP_SYS_ADMIN?): {res.stderr}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path) -> int:
    """Append to the ballast until the filesystem says no; returns the bytes written."""
    written = 0
    fd = os.open(disk / "ballast", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    try:
        for chunk in (1 << 20, 1 << 16, 4096, 512):
            with contextlib.suppress(OSError):
                while True:
                    written += os.write(fd, b"\1" * chunk)
    finally:
        os.close(fd)
    return written


def free_bytes(disk: Path) -> int:
    return os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize


def saved_acked_seq(journal: Path) -> int:
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT acked_seq FROM outbox").fetchone()[0])
    finally:
        db.close()


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (out := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(0.1)
    return out


# --- what an ack needs on a full disk ------------------------------------------------------


async def test_an_ack_on_a_full_disk_is_held_in_memory_and_written_when_there_is_room(
    small_disk: Path,
) -> None:
    """Writing acked_seq needs a free page (a WAL frame) like any SQLite write; with none left,
    the mark is held in memory (the replicator reads on from it) and written later."""
    path = small_disk / "journal.db"
    async with Journal(path, LANE) as journal:
        for i in range(50):
            await journal.append("sale", sale(i, pad=200))
        fill(small_disk)
        assert free_bytes(small_disk) < 4096
        with pytest.raises(JournalFull, match=r"disk full: \d+ bytes free.*NOT confirmed"):
            await journal.append("sale", sale(999))
        await journal.mark_acked(30)  # head office's ack: not an error, not lost
        assert (journal.acked_seq, journal.held_ack, journal.saved_acked_seq) == (30, 30, 0)
        assert saved_acked_seq(path) == 0
        assert journal.backlog == 20
        # The replicator reads on from the held mark.
        assert [e.seq for e in await journal.read_from(journal.acked_seq + 1, 100)] == list(
            range(31, 51)
        )
        await journal.save_held_ack()  # still no room: still held, no error
        assert journal.held_ack == 30
        (small_disk / "ballast").unlink()
        await journal.save_held_ack()
        assert (journal.held_ack, journal.saved_acked_seq, saved_acked_seq(path)) == (None, 30, 30)
        assert (await journal.append("sale", sale(1000))).seq == 51
    rep = verify(path)
    assert rep.ok, rep.problem


# --- the agent on a full disk ----------------------------------------------------------------


def _agent(tmp_path: Path, disk: Path, broker: Broker) -> Component:
    cfg = stack.write_toml(
        tmp_path / "agent.toml",
        {
            "store": LANE.store,
            "lane": LANE.lane,
            "journal": {"path": str(disk / "journal.db")},
            "broker": {"host": "127.0.0.1", "port": broker.port, "keepalive": 5},
            "replication": {
                "ack_timeout_s": 1.0,
                "publish_timeout_s": 3.0,
                "backoff_initial_s": 0.05,
                "backoff_max_s": 0.5,
                "linger_ms": 5,
            },
            "api": {"socket": str(tmp_path / "api.sock")},
            "retention": {
                "min_free_disk_mb": 0,
                "reserve_mb": RESERVE_MB,
                "prune_interval_s": 1.0,
                "keep_acked_days": 0,
            },
        },
    )
    return Component("agent", ["agent", "--config", str(cfg)], tmp_path)


def _status(tmp_path: Path, *extra: str) -> str:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "lanesync.cli",
            "status",
            "--config",
            str(tmp_path / "agent.toml"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode in (0, 1), res.stderr
    return res.stdout


def _ho_has(ho_db: Path, n: int) -> bool:
    if not ho_db.exists():
        return False
    db = sqlite3.connect(f"file:{ho_db}?mode=ro", uri=True)
    try:
        row = db.execute(
            "SELECT count(*) FROM journal WHERE store = ? AND lane = ?", (LANE.store, LANE.lane)
        ).fetchone()
    except sqlite3.OperationalError:
        return False
    finally:
        db.close()
    return int(row[0]) == n


def test_agent_starts_serves_and_drains_on_a_full_disk_then_resumes_by_itself(
    tmp_path: Path, small_disk: Path, broker: Broker
) -> None:
    journal = small_disk / "journal.db"
    agent = _agent(tmp_path, small_disk, broker)
    ho = stack.headoffice(tmp_path, broker.port)
    pos = PosClient(str(tmp_path / "api.sock"))
    rng = random.Random(7)
    try:
        agent.start().wait_notify("READY=1", 30)
        # Head office is away: the backlog builds up.
        confirmed = [pos.submit(samples.sale(rng, LANE.store, LANE.lane, n)) for n in range(200)]
        assert (small_disk / "journal.db.reserve").stat().st_size == RESERVE_MB << 20

        # Something else fills the disk, and keeps taking what is freed.
        fill(small_disk)
        status, prob = pos.request(
            "POST", "/v1/documents", samples.sale(rng, LANE.store, LANE.lane, 900)
        )
        assert status == 503, prob
        assert prob["title"] == "Journal full"
        assert "NOT confirmed" in prob["detail"]
        fill(small_disk)  # eats what the agent gave back of its reserve
        status, prob = pos.request(
            "POST", "/v1/documents", samples.sale(rng, LANE.store, LANE.lane, 901)
        )
        assert (status, prob["title"]) == (503, "Journal full")

        # The till reboots with the disk still full.
        assert agent.stop() == 0
        fill(small_disk)
        assert free_bytes(small_disk) < 4096
        agent.start().wait_notify("READY=1", 30)

        # It serves what it can: status, lookups; documents get the clear 503.
        status, st = pos.request("GET", "/v1/status")
        assert (status, st["last_seq"], st["backlog"]) == (200, 200, 200)
        status, found = pos.request("GET", f"/v1/documents/{confirmed[17]['txn_id']}")
        assert (status, found["seq"]) == (200, 18)
        status, prob = pos.request(
            "POST", "/v1/documents", samples.sale(rng, LANE.store, LANE.lane, 902)
        )
        assert (status, prob["title"]) == (503, "Journal full")
        text = _status(tmp_path)
        first = text.splitlines()[0]
        assert first.startswith(f"lane {LANE}: agent running, journal full ("), text
        assert first.endswith(" bytes free)"), text
        report = json.loads(_status(tmp_path, "--json"))
        assert report["running"] is True
        assert report["journal_full"] is True
        assert isinstance(report["disk"]["free_disk_bytes"], int)

        # Head office comes back: the backlog drains, and the acks are recorded or held.
        ho.start().wait_notify("STATUS=subscribed", 30)
        wait_for(lambda: _ho_has(tmp_path / "headoffice.db", 200), 60, "head office has all 200")
        wait_for(
            lambda: pos.request("GET", "/v1/status")[1]["acked_seq"] == 200,
            30,
            "lane knows the ack",
        )
        status, prob = pos.request(
            "POST", "/v1/documents", samples.sale(rng, LANE.store, LANE.lane, 903)
        )
        assert status == 503, prob  # still no room of its own

        # Space comes back: the agent takes its reserve again and resumes by itself.
        (small_disk / "ballast").unlink()

        def sells() -> bool:
            status, out = pos.request(
                "POST", "/v1/documents", samples.sale(rng, LANE.store, LANE.lane, 950)
            )
            assert status in (201, 503), out
            return status == 201

        wait_for(sells, 30, "documents accepted again")
        assert (small_disk / "journal.db.reserve").stat().st_size == RESERVE_MB << 20
        wait_for(lambda: saved_acked_seq(journal) >= 200, 30, "the ack written to the journal")
        wait_for(
            lambda: _ho_has(tmp_path / "headoffice.db", 201), 30, "the new sale at head office"
        )
        wait_for(
            lambda: "journal full" not in _status(tmp_path).splitlines()[0], 20, "status recovered"
        )
    finally:
        for comp in (agent, ho):
            comp.stop(timeout=10)
    rep = verify(journal)
    assert rep.ok, rep.problem
