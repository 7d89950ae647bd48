"""An operator repairs held entries (issue 16 item 1): release applies one once, as if it had
arrived in order; void closes it with who, when and why. Both idempotent, on SQLite and
PostgreSQL (the `backend` fixture), through the store (Database.release_held / void_held) and the
`lanesync held` command.
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from headoffice.db.base import HeldOutcome
from headoffice.held import cli as held_cli
from headoffice.ingest import IngestStats
from headoffice.metrics import HoMetrics
from headoffice.transit import bodies
from lanesync import stack
from protocol.identity import LaneId
from protocol.messages import Ack
from tests.headoffice.ho_helpers import LaneSim, journal_msg, sale_doc, writer_ingest
from tests.pgutil import Backend

PAN = "4111111111111111"
A = LaneId("S001", "L01")
RECALLED = "P-RECALL"


def adjustment(item: str, qty: str) -> dict[str, Any]:
    return {"kind": "stock_adjustment", "reason": "COUNT", "lines": [{"item": item, "qty": qty}]}


@pytest.fixture
def recall_rule(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """A rule head office enforces that the lane did not: no stock moves for a recalled
    item. Set `rule[0] = False` to lift it (the rule fixed); the check itself is the real one."""
    real = bodies.parse
    rule = [True]

    def parse(kind: str, body: bytes, store: str) -> bodies.Parsed:
        doc = real(kind, body, store)
        recalled = isinstance(doc, bodies.Adjustment) and any(
            line.item == RECALLED for line in doc.lines
        )
        if rule[0] and recalled:
            raise bodies.BodyError("$.lines[0].item", "item is recalled")
        return doc

    monkeypatch.setattr(bodies, "parse", parse)
    return rule


def held(backend: Backend) -> list[tuple[Any, ...]]:
    return backend.query(
        "SELECT id, seq, code, state, closed_by, close_reason FROM held ORDER BY id"
    )


def stock(backend: Backend) -> list[tuple[Any, ...]]:
    return backend.query("SELECT location, item, qty FROM stock ORDER BY item")


def release(backend: Backend, ids: list[int], by: str = "ops") -> list[HeldOutcome]:
    store = backend.store()
    try:
        out = store.release_held(ids, by, "rule fixed", 1_800_000_000_000)
        store.commit()
        return out
    finally:
        store.close()


def void(backend: Backend, ids: list[int], reason: str = "entered twice") -> list[HeldOutcome]:
    store = backend.store()
    try:
        out = store.void_held(ids, "ops", reason, 1_800_000_000_000)
        store.commit()
        return out
    finally:
        store.close()


def test_release_applies_a_held_entry_once_with_its_projection(
    backend: Backend, recall_rule: list[bool]
) -> None:
    sim = LaneSim(A)
    sim.add()
    sim.add(adjustment(RECALLED, "4.000"), kind="stock_adjustment")
    sim.add(adjustment("P1", "1.000"), kind="stock_adjustment")
    with writer_ingest(backend) as ing:
        assert ing.applier.apply_group([journal_msg(sim, 1, 3)]) == [Ack(A, sim.epoch, 3)]
    [(hid, seq, code, state, _, _)] = held(backend)
    assert (seq, code, state) == (2, "invalid_body", "held")
    # the rule still holds it: release refuses, the entry stays held with today's reason
    [out] = release(backend, [hid])
    assert (out.state, out.changed, out.code) == ("held", False, "invalid_body")
    assert out.refused is not None
    assert "is still refused" in out.refused
    assert "item is recalled" in out.refused
    assert backend.query("SELECT count(*) FROM journal WHERE seq = 2") == [(0,)]
    recall_rule[0] = False  # the rule is fixed
    [out] = release(backend, [hid])
    assert (out.state, out.changed, out.refused, out.applied) == ("released", True, None, 1)
    assert backend.query("SELECT seq, applied FROM journal ORDER BY seq") == [
        (1, 1),
        (2, 1),
        (3, 1),
    ]
    assert stock(backend) == [("S001", "P-RECALL", 4000), ("S001", "P1", 1000)]
    # released twice: a no-op, nothing applied again
    [again] = release(backend, [hid])
    assert (again.state, again.changed, again.refused) == ("released", False, None)
    assert backend.query("SELECT count(*) FROM journal") == [(3,)]
    assert stock(backend) == [("S001", "P-RECALL", 4000), ("S001", "P1", 1000)]
    assert held(backend) == [(hid, 2, "invalid_body", "released", "ops", "rule fixed")]
    # the lane's mark and chain did not move (they were past it already); a voided release
    # is refused
    assert backend.query("SELECT hwm, last_hash FROM lanes") == [(3, sim.entries[2].hash)]
    [v] = void(backend, [hid])
    assert v.refused is not None
    assert "cannot be voided" in v.refused
    counters = dict(backend.query("SELECT name, value FROM counters"))
    assert counters["entries_released"] == 1


def test_a_card_number_entry_can_only_be_voided(backend: Backend) -> None:
    sim = LaneSim(A)
    sim.add(sale_doc(1, note=f"card {PAN}", total=998, currency="EUR"))
    sim.add()
    with writer_ingest(backend) as ing:
        ing.applier.apply_group([journal_msg(sim, 1, 2)])
    [(hid, _, code, _, _, _)] = held(backend)
    assert code == "card_number"
    [out] = release(backend, [hid])
    assert out.refused is not None
    assert "carries a card number" in out.refused
    assert f"lanesync held void {hid} --reason" in out.refused
    assert out.state == "held"
    [v] = void(backend, [hid], reason=f"customer card {PAN} typed into the note")
    assert (v.state, v.changed, v.refused) == ("voided", True, None)
    [again] = void(backend, [hid])
    assert (again.state, again.changed, again.refused) == ("voided", False, None)
    [(_, _, _, state, by, reason)] = held(backend)
    assert (state, by) == ("voided", "ops")
    assert PAN not in reason  # the audit text is masked like every reason
    [after] = release(backend, [hid])
    assert after.refused is not None
    assert "was voided by ops" in after.refused
    assert backend.query("SELECT count(*) FROM documents") == [(1,)]
    [(closed_at,)] = backend.query("SELECT closed_at FROM held")
    assert closed_at == 1_800_000_000_000
    assert dict(backend.query("SELECT name, value FROM counters"))["entries_voided"] == 1


async def test_metrics_count_held_entries_by_code_and_their_repairs(
    backend: Backend, recall_rule: list[bool]
) -> None:
    sim = LaneSim(A)
    sim.add(sale_doc(1, note=f"card {PAN}", total=998, currency="EUR"))
    sim.add(adjustment(RECALLED, "1.000"), kind="stock_adjustment")
    sim.add(adjustment(RECALLED, "2.000"), kind="stock_adjustment")
    with writer_ingest(backend) as ing:
        ing.applier.apply_group([journal_msg(sim, 1, 3)])
    metrics = HoMetrics(IngestStats(), backend.target)
    text = (await metrics.render()).decode()
    assert 'lanesync_ho_held_open_entries{code="card_number"} 1.0' in text
    assert 'lanesync_ho_held_open_entries{code="invalid_body"} 2.0' in text
    assert 'lanesync_ho_held_open_entries{code="unregistered"} 0.0' in text
    assert 'lanesync_ho_lane_held_entries{lane="L01",store="S001"} 3.0' in text
    assert "lanesync_ho_entries_released_total 0.0" in text
    recall_rule[0] = False
    ids = [r[0] for r in held(backend)]
    release(backend, ids[1:2])
    void(backend, ids[:1])
    metrics.collector.expire()  # a scrape a second later
    text = (await metrics.render()).decode()
    assert 'lanesync_ho_held_open_entries{code="card_number"} 0.0' in text
    assert 'lanesync_ho_held_open_entries{code="invalid_body"} 1.0' in text
    assert "lanesync_ho_held_entries 1.0" in text
    assert "lanesync_ho_entries_released_total 1.0" in text
    assert "lanesync_ho_entries_voided_total 1.0" in text


def test_a_txn_conflict_is_released_only_as_a_duplicate_of_its_own_store(
    backend: Backend,
) -> None:
    """A txn_id another store's lane owns: release refuses (naming the owner) and the entry
    stays held. Nothing else changes."""
    txn = str(uuid.uuid4())
    owner, other = LaneSim(LaneId("S002", "L01")), LaneSim(A)
    owner.add(sale_doc(1), txn_id=txn)
    other.add(sale_doc(1, total=5), txn_id=txn)
    with writer_ingest(backend) as ing:
        ing.applier.apply_group([journal_msg(owner, 1, 1)])
        ing.applier.apply_group([journal_msg(other, 1, 1)])
    [(hid, _, code, _, _, _)] = held(backend)
    assert code == "txn_conflict"
    [out] = release(backend, [hid])
    assert out.refused is not None
    assert "belongs to lane S002/L01" in out.refused
    assert held(backend)[0][3] == "held"
    assert backend.query("SELECT count(*) FROM journal") == [(1,)]
    [missing] = release(backend, [hid + 100])
    assert (missing.state, missing.refused) == (None, f"no held entry {hid + 100}")


def test_concurrent_releases_apply_an_entry_once(backend: Backend, recall_rule: list[bool]) -> None:
    """Several releasers at once (operators, ingest workers): the row lock or the file's
    write lock lets one apply it; the others see it released."""
    sim = LaneSim(A)
    sim.add(adjustment(RECALLED, "2.000"), kind="stock_adjustment")
    with writer_ingest(backend) as ing:
        ing.applier.apply_group([journal_msg(sim, 1, 1)])
    [(hid, _, _, _, _, _)] = held(backend)
    recall_rule[0] = False
    results: list[HeldOutcome] = []
    errors: list[BaseException] = []
    go = threading.Barrier(4)

    def one() -> None:
        try:
            go.wait()
            results.extend(release(backend, [hid]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r.changed for r in results) == [False, False, False, True]
    assert all(r.state == "released" and r.refused is None for r in results)
    assert backend.query("SELECT count(*) FROM journal") == [(1,)]
    assert stock(backend) == [("S001", "P-RECALL", 2000)]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="lanesync")
    held_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    rc = int(args.handler(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_the_held_command(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str], recall_rule: list[bool]
) -> None:
    cfg = stack.write_toml(tmp_path / "ho.toml", {"database": backend.database_table()})
    sim = LaneSim(A)
    sim.add(sale_doc(1, note=f"card {PAN}", total=998, currency="EUR"))
    sim.add(adjustment(RECALLED, "3.000"), kind="stock_adjustment")
    with writer_ingest(backend) as ing:
        ing.applier.apply_group([journal_msg(sim, 1, 2)])
    conf = ["--config", str(cfg)]
    rc, out, _ = run_cli(["held", "list", *conf, "--json"], capsys)
    assert rc == 0
    rows = json.loads(out)
    assert [(r["seq"], r["code"], r["releasable"]) for r in rows] == [
        (1, "card_number", False),
        (2, "invalid_body", True),
    ]
    card, bad = rows[0]["id"], rows[1]["id"]
    rc, out, _ = run_cli(["held", "list", *conf], capsys)
    assert rc == 0
    assert "2 held entries" in out
    assert "item is recalled" in out
    rc, out, _ = run_cli(["held", "show", str(card), *conf, "--json"], capsys)
    assert rc == 0
    shown = json.loads(out)
    assert shown["body_is_masked_copy"] is True
    assert PAN not in out
    assert shown["body"]["note"].endswith("1111")
    assert (shown["body"]["total"], shown["body"]["currency"]) == (998, "EUR")  # minor units
    rc, out, _ = run_cli(["held", "show", str(card), *conf], capsys)
    assert "total: 9.98 EUR" in out  # for people: money
    rc, out, _ = run_cli(["held", "show", str(bad), *conf], capsys)
    assert rc == 0
    assert RECALLED in out
    rc, _, err = run_cli(["held", "release", str(card), *conf, "--by", "alice"], capsys)
    assert rc == 1
    assert "carries a card number" in err
    rc, _, err = run_cli(["held", "release", str(bad), *conf], capsys)
    assert rc == 1
    assert "still refused" in err
    recall_rule[0] = False
    rc, out, _ = run_cli(["held", "release", str(bad), *conf, "--by", "alice"], capsys)
    assert (rc, out.strip()) == (0, f"held entry {bad} released: applied once")
    rc, out, _ = run_cli(["held", "release", str(bad), *conf, "--json"], capsys)
    assert rc == 0
    assert json.loads(out)[0]["changed"] is False
    rc, out, _ = run_cli(
        ["held", "void", str(card), *conf, "--reason", "card typed in note", "--by", "bob"], capsys
    )
    assert (rc, out.strip()) == (0, f"held entry {card} voided")
    rc, out, _ = run_cli(["held", "list", *conf, "--json", "--state", "all"], capsys)
    closed = {r["id"]: (r["state"], r["closed_by"], r["close_reason"]) for r in json.loads(out)}
    assert closed == {
        card: ("voided", "bob", "card typed in note"),
        bad: ("released", "alice", "released by an operator"),
    }
    rc, _, err = run_cli(["held", "show", "999999", *conf], capsys)
    assert (rc, err.strip()) == (1, "lanesync held: no held entry 999999")
    rc, _, err = run_cli(["held", "void", str(card), *conf, "--reason", " "], capsys)
    assert rc == 2
    assert "--reason must say why" in err
