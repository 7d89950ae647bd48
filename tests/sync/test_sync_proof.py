"""Proof that both sides hold the same chain, and versions, in the hello's answer (issues 16.7
and 18.3), on SQLite and PostgreSQL: ingest's writer driven by the test (ho_helpers).

A lane that says what it speaks (v2) gets the version to use and head office's verdict on its
chain hashes; a v1 lane gets exactly the v1 ack it always got. A lane whose journal ends before
what head office holds of its epoch is refused; a lane that had more acked than head office
holds is asked to resend, below its acked mark. The status page shows each verdict, each lane's
version and, when ingest has lost the broker, a banner and lanes "unknown" (16.4b).
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from aiohttp.test_utils import TestClient, TestServer

from headoffice.ingest import Ingest
from headoffice.statuspage import collect, live_view, render_fragment, status_app
from protocol import codec, proof
from protocol.chain import genesis
from protocol.errors import ProtocolError
from protocol.identity import Channel
from protocol.messages import Ack, HeadOffice, Hello, Reply, Request, Status
from protocol.requests import OP_PROOF_NARROW
from protocol.runtime.clock import now_ms
from tests.headoffice.ho_helpers import LANE as LANE_ID
from tests.headoffice.ho_helpers import LaneSim, journal_msg, topic, writer_ingest
from tests.pgutil import Backend

V2 = (1, 2)


def proof_of(sim: LaneSim, acked: int) -> tuple[tuple[int, bytes], ...]:
    """The checkpoints a lane sends (agent.replicator: acked, 1, 2, 4 ... below, genesis)."""
    seqs = [acked]
    step = 1
    while acked - step > 0:
        seqs.append(acked - step)
        step *= 2
    seqs.append(0)
    at = {0: genesis(sim.lane, sim.epoch)} | {e.seq: e.hash for e in sim.entries}
    return tuple((s, at[s]) for s in seqs)


def hello(sim: LaneSim, last: int, acked: int, **kw: Any) -> tuple[str, bytes]:
    # Sent now, after every entry the sim journaled (their ts are of 2023), as a lane's is.
    msg = Hello(sim.lane, sim.epoch, last, acked + 1, "9.9.9", now_ms(), 0, **kw)
    return topic(sim.lane, Channel.HELLO), codec.encode(msg)


def answer(ing: Ingest, msg: tuple[str, bytes]) -> Ack:
    (ack,) = ing.applier.apply_group([msg])
    assert isinstance(ack, Ack)
    # what travels: decoded again, at the version it is stamped with
    again = codec.decode(codec.encode(ack))
    assert again == ack
    return ack


def stamped(ack: Ack) -> int:
    v = msgpack.unpackb(codec.encode(ack))["v"]
    assert isinstance(v, int)
    return v


def test_hello_answers_version_proof_restores_and_refusals(backend: Backend) -> None:
    sim = LaneSim()
    sim.add_many(20)
    with writer_ingest(backend) as ing:
        ing.applier.apply_group([journal_msg(sim, 1, 20)])

        ack = answer(ing, hello(sim, 20, 20, protocols=V2, proof=proof_of(sim, 20)))
        assert (ack.hwm, ack.protocol, ack.proof) == (20, 2, "identical up to seq 20")
        assert stamped(ack) == 2
        assert ing.stats.proofs[(sim.lane.store, sim.lane.lane)]["state"] == "identical"

        # A v1 lane (the recorded wire_v1 hello has no protocols): the v1 ack, as ever.
        ack = answer(ing, hello(sim, 20, 20))
        assert ack == Ack(sim.lane, sim.epoch, 20)
        assert stamped(ack) == 1

        # A chain that forked after seq 18: the first difference, exactly (checkpoints 18, 19).
        fork = LaneSim(sim.lane, sim.epoch)
        fork.entries = sim.entries[:18]
        fork.add()
        fork.add()
        ack = answer(ing, hello(fork, 20, 20, protocols=V2, proof=proof_of(fork, 20)))
        assert ack.proof == "identical up to seq 18; differ at seq 19"
        assert ack.refused is None
        assert ack.resend_from is None
        # Further down, the checkpoints bound where: 16 agrees, 17 not offered, 18 differs.
        fork = LaneSim(sim.lane, sim.epoch)
        fork.entries = sim.entries[:16]
        fork.add_many(4)
        ack = answer(ing, hello(fork, 20, 20, protocols=V2, proof=proof_of(fork, 20)))
        assert ack.proof == "identical up to seq 16; first difference between seq 17 and 18"

        # The lane's journal ends before what head office holds: restored from an old copy.
        ack = answer(ing, hello(sim, 15, 15, protocols=V2, proof=proof_of(sim, 15)))
        assert ack.refused is not None
        assert "restored from an old copy" in ack.refused
        assert "ends at seq 15 but head office already holds seq 20" in ack.refused
        assert ack.resend_from is None
        assert ing.stats.lanes_refused == 1
        v1_refused = answer(ing, hello(sim, 15, 15))
        assert v1_refused.refused is None
        assert v1_refused.reason == ack.refused
        assert stamped(v1_refused) == 1

        # The lane had 25 acked, head office holds 20: restored from an older backup.
        sim.add_many(5)
        ack = answer(ing, hello(sim, 25, 25, protocols=V2, proof=proof_of(sim, 25)))
        assert (ack.rewind, ack.resend_from, ack.hwm) == (True, 21, 20)
        assert ack.reason is not None
        assert "restored from an older copy" in ack.reason
        assert ing.stats.restores_detected == 1
        # ... and what the lane resends from its retention closes it.
        ing.applier.apply_group([journal_msg(sim, 21, 25)])
        ack = answer(ing, hello(sim, 25, 25, protocols=V2, proof=proof_of(sim, 25)))
        assert ack.proof == "identical up to seq 25"
        assert backend.query("SELECT count(*), max(seq) FROM journal") == [(25, 25)]


async def test_status_page_shows_proof_version_and_broker_banner(backend: Backend) -> None:
    sim = LaneSim()
    sim.add_many(5)
    with writer_ingest(backend) as ing:
        status = Status(sim.lane, "online", "9.9.9", 0, 0)
        ing.applier.apply_group(
            [
                journal_msg(sim, 1, 5),
                (topic(sim.lane, Channel.STATUS), codec.encode(status)),
                hello(sim, 5, 5, protocols=V2, proof=proof_of(sim, 5)),
            ]
        )
        ing.stats.connected = True
        data = live_view(collect(backend.target, now=None), ing.stats)
        (lane,) = data["lanes"]
        assert lane["online"] == "online"
        assert lane["version"] == "9.9.9"
        assert lane["sync"]["text"] == "identical up to seq 5"
        page = render_fragment(data)
        assert "identical up to seq 5" in page
        assert "9.9.9" in page
        assert 'id="broker-link"' not in page

        # Head office loses its broker: a banner first, and the lane is unknown, not online.
        ing.stats.connected = False
        ing.stats.broker_lost_at = 1_700_000_000.0
        data = live_view(collect(backend.target), ing.stats)
        (lane,) = data["lanes"]
        assert (lane["online"], lane["last_reported"]) == ("unknown", "online")
        page = render_fragment(data)
        assert page.index('id="broker-link"') < page.index('id="summary"')
        assert "not connected to the broker" in page
        assert "0 online" in page

        # The same through /api/status of the head-office process's page.
        app = status_app(backend.target, stats=ing.stats)
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/api/status")
            assert resp.status == 200
            body = await resp.json()
        assert body["broker_link"]["connected"] is False
        assert body["lanes"][0]["online"] == "unknown"
        assert body["lanes"][0]["sync"]["state"] == "identical"
        assert body["lanes"][0]["version"] == "9.9.9"


def test_headoffice_announcement_decodes_and_stays_off_lane_topics(backend: Backend) -> None:
    msg = HeadOffice("online", 12345, "lanesync-headoffice-w1", "9.9.9", (1, 2), 7)
    raw = codec.encode(msg)
    assert codec.decode(raw) == msg
    assert msgpack.unpackb(raw)["v"] == 2  # a type v1 does not have
    # A v1 map may not carry v2's fields, nor be a v2-only type.
    bad = msgpack.unpackb(raw) | {"v": 1}
    with pytest.raises(ProtocolError, match="unknown message type"):
        codec.decode(msgpack.packb(bad))
    hello_v1 = msgpack.unpackb(codec.encode(Hello(LANE_ID, 1, 0, 1, "x", 0, protocols=V2)))
    with pytest.raises(ProtocolError, match="unknown field"):
        codec.decode(msgpack.packb(hello_v1 | {"v": 1}))
    # Published on a lane's topic by a lane, it is quarantined with the reason.
    with writer_ingest(backend) as ing:
        assert ing.applier.apply_group([(topic(LANE_ID, Channel.HELLO), raw)]) == []
        assert ing.stats.quarantined == 1
    (reason,) = backend.query("SELECT reason FROM quarantine")
    assert reason == ("a ho message does not belong on hello",)


def narrow(ing: Ingest, sim: LaneSim, seqs: list[int]) -> Reply:
    """An OP_PROOF_NARROW request with `sim`'s hashes at `seqs`, as the lane sends it."""
    at = {0: genesis(sim.lane, sim.epoch)} | {e.seq: e.hash for e in sim.entries}
    args = {"epoch": sim.epoch, "hashes": [[s, at[s]] for s in seqs]}
    req = Request(sim.lane, "c1", OP_PROOF_NARROW, args)
    (reply,) = ing.applier.apply_group([(topic(sim.lane, Channel.REQUEST), codec.encode(req))])
    assert isinstance(reply, Reply)
    assert codec.decode(codec.encode(reply)) == reply
    return reply


def narrowed(ing: Ingest, sim: LaneSim, verdict: str) -> tuple[str, int]:
    """Narrow a range verdict as agent.replicator does; (final verdict, requests it took)."""
    span = proof.range_of(verdict)
    rounds = 0
    while span is not None and span[1] > span[0] + 1:
        rounds += 1
        reply = narrow(ing, sim, proof.narrow_seqs(*span))
        assert reply.ok, reply.error
        verdict = reply.result["verdict"]
        span = (reply.result["upto"], reply.result["differ"])
    return verdict, rounds


def test_a_range_verdict_narrows_to_the_exact_first_seq(backend: Backend) -> None:
    sim = LaneSim()
    sim.add_many(1000)
    with writer_ingest(backend) as ing:
        ing.applier.apply_group([journal_msg(sim, 1, 1000)])
        key = (sim.lane.store, sim.lane.lane)
        for fork_after, rounds in ((950, 1), (40, 2), (300, 2), (999, 0), (0, 2)):
            fork = LaneSim(sim.lane, sim.epoch)
            fork.entries = sim.entries[:fork_after]
            fork.add_many(1000 - fork_after)
            ack = answer(ing, hello(fork, 1000, 1000, protocols=V2, proof=proof_of(fork, 1000)))
            assert ack.proof is not None
            assert (proof.range_of(ack.proof) is None) == (rounds == 0)
            verdict, took = narrowed(ing, fork, ack.proof)
            want = f"identical up to seq {fork_after}; differ at seq {fork_after + 1}"
            assert (verdict, took) == (want, rounds)
            # what the status page and `lanesync headoffice status` show (IngestStats.proofs)
            shown = ing.stats.proofs[key]
            assert (shown["text"], shown["state"], shown["upto"]) == (want, "differ", fork_after)
            assert shown["hwm"] == 1000

        # Hashes that all match: nothing is said to differ, and the shown verdict stays.
        ack = answer(ing, hello(sim, 1000, 1000, protocols=V2, proof=proof_of(sim, 1000)))
        reply = narrow(ing, sim, [10, 11, 12])
        assert reply.ok
        assert (reply.result["state"], reply.result["differ"]) == ("identical", None)
        assert ing.stats.proofs[key]["text"] == "identical up to seq 1000"

        # Malformed: refused with the field, nothing shown changes.
        for args, field in (
            ({"hashes": [[1, b"x" * 32]]}, "epoch"),
            ({"epoch": sim.epoch, "hashes": []}, "hashes"),
            ({"epoch": sim.epoch, "hashes": [[1, b"x"]]}, "hashes[0]"),
            ({"epoch": sim.epoch, "hashes": [[s, b"x" * 32] for s in range(65)]}, "hashes"),
        ):
            req = Request(sim.lane, "c2", OP_PROOF_NARROW, args)
            (reply,) = ing.applier.apply_group(
                [(topic(sim.lane, Channel.REQUEST), codec.encode(req))]
            )
            assert isinstance(reply, Reply)
            assert (reply.ok, reply.result) == (False, {"code": "bad_request", "field": field})
        assert ing.stats.proofs[key]["text"] == "identical up to seq 1000"
