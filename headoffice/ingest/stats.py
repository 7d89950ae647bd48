"""What ingest counts, for the status page, metrics and tests: `IngestStats`, and the
bounded per-lane marks it keeps (`LaneMarks`)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from headoffice.inbox import InboxStats

LaneKey = tuple[str, str, int]  # store, lane, epoch
EPOCHS_TRACKED_PER_LANE = 4
MAX_LANES_TRACKED = 20_000


class LaneMarks(Mapping[LaneKey, int]):
    """The last acked mark per (store, lane, epoch), bounded: the newest few epochs of each
    lane and the most recently heard lanes. A store naming ever new lanes or epochs makes it
    forget old ones (counted in `dropped`), never grow."""

    def __init__(
        self, per_lane: int = EPOCHS_TRACKED_PER_LANE, lanes: int = MAX_LANES_TRACKED
    ) -> None:
        self.per_lane, self.max_lanes = per_lane, lanes
        self._lanes: OrderedDict[tuple[str, str], OrderedDict[int, int]] = OrderedDict()
        self._size = 0
        self.dropped = 0

    def __getitem__(self, key: LaneKey) -> int:
        return self._lanes[(key[0], key[1])][key[2]]

    def __iter__(self) -> Iterator[LaneKey]:
        for (store, lane), epochs in self._lanes.items():
            for epoch in epochs:
                yield (store, lane, epoch)

    def __len__(self) -> int:
        return self._size

    def __setitem__(self, key: LaneKey, hwm: int) -> None:
        lane = (key[0], key[1])
        epochs = self._lanes.get(lane)
        if epochs is None:
            epochs = self._lanes[lane] = OrderedDict()
            if len(self._lanes) > self.max_lanes:
                _, gone = self._lanes.popitem(last=False)
                self._size -= len(gone)
                self.dropped += len(gone)
        else:
            self._lanes.move_to_end(lane)
        if key[2] not in epochs:
            self._size += 1
        epochs[key[2]] = hwm
        epochs.move_to_end(key[2])
        if len(epochs) > self.per_lane:
            epochs.popitem(last=False)
            self._size -= 1
            self.dropped += 1


@dataclass(slots=True)
class IngestStats:
    connected: bool = False
    connects: int = 0
    messages: int = 0
    groups: int = 0
    journal_groups: int = 0  # of those, the ones that carried journal batches (commits of entries)
    entries_applied: int = 0
    entries_redelivered: int = 0
    entries_held: int = 0  # held at their seq (card number, bad body, txn_id of another lane)
    entries_unregistered: int = 0  # of those: held because the store registry does not list it
    entries_released: int = 0  # held entries released once their store or lane was registered
    registry_version: int | None = None  # the catalog version of the registry in use
    registry_stores: int = 0  # stores it lists (0: not enforced, every store accepted)
    duplicate_txn_ids: int = 0
    gaps: int = 0  # resend requests sent for a gap (after any hold)
    gaps_held: int = 0  # batches that arrived ahead of their predecessor and were held
    gaps_closed: int = 0  # held batches applied once their predecessor was committed
    quarantined: int = 0
    epochs_refused: int = 0  # hellos and batches for a new epoch beyond max_epochs_per_lane
    commit_failures: int = 0
    groups_split: int = 0  # groups that failed and were applied again message by message
    last_commit_at: float | None = None
    broker_lost_at: float | None = None  # when the broker link last broke (None: never)
    incarnation: int = 0  # this process's, announced on {prefix}/headoffice
    restores_detected: int = 0  # hellos of lanes that had more acked than head office holds
    lanes_refused: int = 0  # hellos of lanes whose journal is behind head office's copy
    proofs: OrderedDict[tuple[str, str], dict[str, Any]] = field(default_factory=OrderedDict)
    lane_hwm: LaneMarks = field(default_factory=LaneMarks)
    inbox: InboxStats = field(default_factory=InboxStats)
    # The lanes that said hello to this process: their lanesync version, the protocol it told
    # them to use, when (for `/api/health`, issue 18.3); the newest MAX_LANES_TRACKED.
    hellos: OrderedDict[tuple[str, str], dict[str, Any]] = field(default_factory=OrderedDict)

    def note_hello(self, store: str, lane: str, version: str, protocol: int, at: float) -> None:
        self.hellos[(store, lane)] = {"version": version, "protocol": protocol, "at": at}
        self.hellos.move_to_end((store, lane))
        while len(self.hellos) > MAX_LANES_TRACKED:
            self.hellos.popitem(last=False)
