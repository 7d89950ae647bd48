"""Mixed-version fleets on the status page (issue 18 item 3): each lane's lanesync version from
its status, head office's own version and protocol range, and a lane older than that range
flagged (its messages are refused as an unsupported protocol version). Both backends."""

from __future__ import annotations

from collections.abc import Iterator

import msgpack
import pytest

from headoffice import statuspage
from headoffice.ingest import Ingest
from protocol import codec
from protocol.identity import Channel, LaneId, Topics
from protocol.messages import SUPPORTED_VERSIONS, Hello, Status
from protocol.runtime.version import VERSION
from tests.headoffice.ho_helpers import LANE
from tests.pgutil import Backend

TOPICS = Topics()
OLD_LANE = LaneId("S001", "L02")


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


def hello_at(version: int, lane: LaneId, epoch: int) -> bytes:
    """A hello stamped with protocol `version` (a lane from before head office's range)."""
    m = {
        "v": version,
        "t": "hello",
        "store": lane.store,
        "lane": lane.lane,
        "epoch": epoch,
        "last_seq": 0,
        "first_unacked": 1,
        "version": "0.0.1",
        "sent_at": 0,
    }
    return msgpack.packb(m, use_bin_type=True)


def test_status_page_shows_versions_and_flags_a_lane_older_than_head_office_serves(
    ingest: Ingest, backend: Backend
) -> None:
    apply = ingest.applier.apply_group
    apply(
        [
            (TOPICS.topic(LANE, Channel.HELLO), codec.encode(Hello(LANE, 7, 0, 1, "1.4.2", 0))),
            (
                TOPICS.topic(LANE, Channel.STATUS),
                codec.encode(Status(LANE, "online", "1.4.2", 0, 1)),
            ),
        ]
    )
    # L02 once synced, then (say, head office upgraded past its range) speaks too old a protocol.
    old_hello = codec.encode(Hello(OLD_LANE, 9, 0, 1, "0.0.1", 0))
    apply([(TOPICS.topic(OLD_LANE, Channel.HELLO), old_hello)])
    too_old = min(SUPPORTED_VERSIONS) - 1
    assert apply([(TOPICS.topic(OLD_LANE, Channel.HELLO), hello_at(too_old, OLD_LANE, 9))]) == []
    (reason,) = [r for (r,) in backend.query("SELECT reason FROM quarantine")]
    assert f"unsupported protocol version {too_old}" in reason

    data = statuspage.collect(backend.target)
    lanes = {ln["lane"]: ln for ln in data["lanes"]}
    assert (lanes["L01"]["version"], lanes["L01"]["protocol_too_old"]) == ("1.4.2", None)
    assert lanes["L02"]["protocol_too_old"] == too_old
    protocols = data["protocols"]
    assert (protocols["version"], protocols["serves"]) == (VERSION, list(SUPPORTED_VERSIONS))
    assert protocols["lanes_too_old"] == [{"store": "S001", "lane": "L02", "protocol": too_old}]
    page = statuspage.render_fragment(data)
    assert f"head office runs lanesync {VERSION} and serves protocol" in page
    assert f"S001/L02 (protocol {too_old})" in page
    assert "<td>1.4.2</td>" in page
    assert f"TOO OLD: protocol {too_old}" in page
