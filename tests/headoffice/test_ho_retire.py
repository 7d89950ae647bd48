"""Replacing a till box (issue 18 item 5): `lanesync headoffice lane retire S001/L01 --epoch E`.

The old box's epoch is never the lane's current one on the status page or in `lanesync
headoffice status`, not even after `lanesync import` of its USB export (which applies its
documents exactly once); the old box sending again is refused with a reason naming the retire.
Both backends, through the real ingest applier and the real CLI.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from headoffice import importer, statuspage
from headoffice.health import HeadOfficeHealth, read_database
from headoffice.ingest import Ingest
from lanesync.cli import main
from protocol import codec, exportfile
from protocol.identity import Channel, Topics
from protocol.messages import Ack, Hello
from tests.headoffice.ho_helpers import LANE, LaneSim
from tests.pgutil import Backend

TOPICS = Topics()
JOURNAL = TOPICS.topic(LANE, Channel.JOURNAL)
HELLO = TOPICS.topic(LANE, Channel.HELLO)
OLD, NEW = 1001, 2002


@pytest.fixture
def ingest(backend: Backend) -> Iterator[Ingest]:
    store = backend.store()
    ing = Ingest(backend.config(), database_factory=lambda: store)
    ing.applier.database = store  # what __aenter__ does on the writer thread, minus MQTT
    try:
        yield ing
    finally:
        store.close()
        ing.shutdown_threads()


def hello(epoch: int, last_seq: int) -> bytes:
    return codec.encode(Hello(LANE, epoch, last_seq, 1, "0.1.0", 0))


def ho_toml(tmp_path: Path, backend: Backend, key_dir: Path) -> Path:
    where = backend.database_table()
    key, value = next(iter(where.items()))
    path = tmp_path / "headoffice.toml"
    path.write_text(f'[database]\n{key} = "{value}"\n[import]\nkey_dir = "{key_dir}"\n')
    return path


def export_of(sim: LaneSim, first: int, tmp_path: Path) -> tuple[Path, Path]:
    """The old box's USB export of entries first.. and head office's key directory."""
    key = secrets.token_bytes(32)
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    (key_dir / f"{LANE.store}.key").write_text(key.hex())
    data = exportfile.encode(
        LANE, sim.epoch, first - 1, sim.prev_hash(first), sim.entries[first - 1 :], 1, key
    )
    path = tmp_path / "old-box.export"
    path.write_bytes(data)
    return path, key_dir


def current_lane(backend: Backend) -> dict[str, object]:
    data = statuspage.collect(backend.target)
    (lane,) = data["lanes"]
    return dict(lane)


def test_retired_epoch_is_never_current_imports_once_and_is_refused_live(
    ingest: Ingest, backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = LaneSim(epoch=OLD), LaneSim(epoch=NEW)
    old.add_many(6)
    new.add_many(2)
    apply = ingest.applier.apply_group
    # The old box sent 3 of its 6 entries, then died; the new box starts its own journal.
    assert apply([(HELLO, hello(OLD, 6)), (JOURNAL, codec.encode(old.batch(1, 3)))]) == [
        Ack(LANE, OLD, 3)
    ]
    assert apply([(HELLO, hello(NEW, 2)), (JOURNAL, codec.encode(new.batch(1, 2)))]) == [
        Ack(LANE, NEW, 2)
    ]
    export, key_dir = export_of(old, 4, tmp_path)
    config = ho_toml(tmp_path, backend, key_dir)

    with pytest.raises(SystemExit, match="2"):  # argparse: --epoch is required
        main(["headoffice", "--config", str(config), "lane", "retire", "S001/L01"])
    assert "required: --epoch" in capsys.readouterr().err
    args = ["headoffice", "--config", str(config), "lane", "retire", "S001/L01", "--epoch"]
    assert main([*args, str(OLD), "--note", "box swapped, ticket 4711"]) == 0
    said = capsys.readouterr().out
    assert f"epoch {OLD} retired; its current epoch: {NEW}" in said
    assert backend.query("SELECT epoch, note FROM retired_epochs") == [
        (OLD, "box swapped, ticket 4711")
    ]

    # The old box's export still applies, exactly once, and its epoch stays retired.
    assert main(["import", str(export), "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["applied"] == 3
    again = importer.apply(export, backend.target, key_dir)
    assert (again.applied, again.redelivered, again.hwm) == (0, 3, 6)
    assert backend.query("SELECT count(*) FROM documents") == [(8,)]
    lane = current_lane(backend)
    assert (lane["epoch"], lane["hwm"], lane["epochs"], lane["retired_epochs"]) == (NEW, 2, 2, 1)
    page = statuspage.render_fragment(statuspage.collect(backend.target))
    assert f"<td>{NEW}</td>" in page
    assert f"<td>{OLD}</td>" not in page
    assert "2 (1 retired)" in page

    # `lanesync headoffice status` reads the same: the new epoch, no lag from the old box.
    rep = HeadOfficeHealth()
    read_database(rep, backend.target, 60.0)
    assert (rep.lane_epochs, rep.lanes_with_retired_epochs, rep.lag_entries) == (
        {"S001/L01": NEW},
        1,
        0,
    )

    # The old box switched on by mistake: its hello and batches are refused, naming the retire.
    old.add_many(1)
    out = apply([(HELLO, hello(OLD, 7)), (JOURNAL, codec.encode(old.batch(7, 7)))])
    assert out == []
    assert apply([(JOURNAL, codec.encode(old.batch(7, 7)))]) == []  # and again
    rows = backend.query("SELECT topic, reason, times FROM quarantine ORDER BY topic")
    assert [(t, n) for t, _, n in rows] == [(HELLO, 1), (JOURNAL, 2)]  # folded per channel
    for _, reason, _ in rows:
        assert f"lane S001/L01 epoch {OLD} was retired at head office on" in reason
        assert "lanesync headoffice lane retire" in reason
    assert backend.query("SELECT count(*) FROM documents") == [(8,)]
    assert backend.query("SELECT hwm, lane_last_seq FROM lanes WHERE epoch = ?", (OLD,)) == [(6, 6)]
    assert ingest.stats.epochs_refused == 3
    assert current_lane(backend)["epoch"] == NEW
    # The new box goes on as before.
    new.add_many(1)
    assert apply([(JOURNAL, codec.encode(new.batch(3, 3)))]) == [Ack(LANE, NEW, 3)]


def test_retire_refuses_an_unknown_epoch_and_twice_changes_nothing(
    ingest: Ingest, backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = LaneSim(epoch=OLD)
    old.add_many(2)
    ingest.applier.apply_group([(JOURNAL, codec.encode(old.batch(1, 2)))])
    config = ho_toml(tmp_path, backend, tmp_path)
    args = ["headoffice", "--config", str(config), "lane", "retire", "S001/L01", "--epoch"]

    assert main([*args, "1010"]) == 1  # a mistyped epoch: refused, the known ones listed
    err = capsys.readouterr().err
    assert (
        f"head office has no epoch 1010 of lane S001/L01 (its epochs, oldest first: {OLD})" in err
    )
    assert backend.query("SELECT count(*) FROM retired_epochs") == [(0,)]
    assert (
        main(["headoffice", "--config", str(config), "lane", "retire", "L01", "--epoch", "1"]) == 1
    )
    assert "name the lane as STORE/LANE" in capsys.readouterr().err

    assert main([*args, str(OLD), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["already"], first["seen"], first["current"]) == (False, True, None)
    assert main([*args, str(OLD), "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert (second["already"], second["retired_at"]) == (True, first["retired_at"])

    # Every epoch retired and the new box not heard yet: the lane shows no current epoch.
    lane = current_lane(backend)
    assert (lane["epoch"], lane["hwm"], lane["lag_entries"], lane["retired_epochs"]) == (
        None,
        0,
        0,
        1,
    )
    assert "none yet (retired)" in statuspage.render_fragment(statuspage.collect(backend.target))

    # An epoch that never reached head office (only its export will): --unseen retires it.
    assert main([*args, "3003", "--unseen"]) == 0
    assert "epoch 3003 retired" in capsys.readouterr().out
    assert ingest.applier.apply_group([(HELLO, hello(3003, 0))]) == []
    (reason,) = backend.query("SELECT reason FROM quarantine WHERE reason LIKE '%3003%'")
    assert "epoch 3003 was retired at head office" in reason[0]
