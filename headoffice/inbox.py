"""Head office's inbox: the messages between the broker and the decoder, bounded and fair.

Head office takes messages off the broker as fast as they arrive: paho acknowledges each QoS 1
message on receipt and aiomqtt offers no flow control that would hold one store back and not
the others. Without a bound, one store publishing flat out (a bug, or an attacker with a
store's credentials) fills head office's memory and delays every other store's batches behind
its own. So the inbox keeps one queue per store (the topic's store segment), serves them
round-robin, one message each in turn, and bounds each store's queue in messages and bytes,
and all of them together in bytes. A message beyond its store's bound is shed (dropped and
counted); when the whole inbox is full, the newest message of the biggest queue goes.

Shedding is safe: a lane keeps every journal entry until head office acknowledges it, so a
shed batch is simply sent again (after a gap, or the lane's ack timeout), a shed hello is
repeated at the next connect and a shed status by the next one; a shed request times out at
the lane, which reports it. Only the store that floods loses its turn: an honest store's
queue is short, so its messages are never shed and wait at most one round of the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from headoffice.lograte import StoreLog

log = logging.getLogger(__name__)

MESSAGE_OVERHEAD = 200  # bytes a queued message costs beyond its payload and topic (objects)
MAX_SHED_LABELS = 1000  # stores counted by name; beyond that under "(other)" (bounded memory)
OTHER = "(other)"
SHED_LOG_EVERY_S = 10.0
FLOODING_S = 10.0  # a store shed within this long is flooding (Inbox.flooding)

Item = tuple[str, bytes]  # topic, payload


@dataclass(slots=True)
class InboxStats:
    """Counters of the inbox, shown on the status page and in metrics."""

    queued: int = 0  # messages waiting now
    queued_bytes: int = 0  # their cost (payload, topic and overhead)
    peak_queued: int = 0
    shed: int = 0  # messages dropped because their store (or the inbox) was full
    shed_by_store: dict[str, int] = field(default_factory=dict)


def store_of(topic: str) -> str:
    """The store segment of `{prefix}/{store}/{lane}/{channel}` (the prefix may hold '/'),
    or '' for a topic without one (still served, in a queue of its own)."""
    parts = topic.rsplit("/", 3)
    return parts[1] if len(parts) == 4 else ""


class Inbox:
    """Per-store FIFO queues served round-robin, with bounds; one asyncio consumer."""

    def __init__(
        self,
        *,
        store_messages: int,
        store_bytes: int,
        total_bytes: int,
        stats: InboxStats | None = None,
    ) -> None:
        self.store_messages = store_messages
        self.store_bytes = store_bytes
        self.total_bytes = total_bytes
        self.stats = stats or InboxStats()
        self._queues: OrderedDict[str, deque[tuple[Item, int]]] = OrderedDict()
        self._bytes: dict[str, int] = {}
        self._ready = asyncio.Event()
        self._log = StoreLog(log, every_s=SHED_LOG_EVERY_S, burst=1)
        self._last_shed: dict[str, float] = {}

    def __len__(self) -> int:
        return self.stats.queued

    def empty(self) -> bool:
        return not self._queues

    def put(self, topic: str, raw: bytes) -> bool:
        """Queue one message; False if it was shed (its store's queue is full)."""
        store = store_of(topic)
        cost = len(raw) + len(topic) + MESSAGE_OVERHEAD
        queue = self._queues.get(store)
        used = self._bytes.get(store, 0)
        if queue is not None and (
            len(queue) >= self.store_messages or used + cost > self.store_bytes
        ):
            self.record_shed(store)
            return False
        st = self.stats
        while st.queued_bytes + cost > self.total_bytes and self._queues:
            victim = max(self._bytes, key=self._bytes.__getitem__)
            if used + cost >= self._bytes[victim]:  # this store would be the biggest
                self.record_shed(store)
                return False
            _, dropped = self._queues[victim].pop()
            self._take(victim, dropped)
            self.record_shed(victim)
        if queue is None:
            queue = self._queues[store] = deque()
            self._bytes[store] = 0
        queue.append(((topic, raw), cost))
        self._bytes[store] += cost
        st.queued += 1
        st.queued_bytes += cost
        st.peak_queued = max(st.peak_queued, st.queued)
        self._ready.set()
        return True

    def holds(self, store: str) -> bool:
        """Whether messages of `store` wait here (a worker giving a store up waits for none)."""
        return store in self._queues

    def drop(self, store: str) -> int:
        """Forget the waiting messages of `store` (a worker that lost its lease on it: the lanes
        resend them to the store's new holder). Returns how many."""
        queue = self._queues.get(store)
        n = 0
        while queue is not None and store in self._queues:
            _, cost = queue.popleft()
            self._take(store, cost)
            n += 1
        return n

    def get_nowait(self) -> Item:
        """The next message, taking stores in turn. Raises IndexError when empty."""
        if not self._queues:
            raise IndexError("the inbox is empty")
        store, queue = next(iter(self._queues.items()))
        item, cost = queue.popleft()
        self._take(store, cost)
        if store in self._queues:
            self._queues.move_to_end(store)
        return item

    async def get(self) -> Item:
        while not self._queues:
            self._ready.clear()
            await self._ready.wait()
        return self.get_nowait()

    async def group(self, max_count: int, max_bytes: int, share: int) -> list[Item]:
        """The next group to apply (waits for the first message): stores in turn, at most
        `share` messages of one store while other stores' messages wait, up to `max_count`
        messages or `max_bytes` of payload. A store alone fills the group."""
        out = [await self.get()]
        taken = {store_of(out[0][0]): 1}
        size = len(out[0][1])
        queues = self._queues
        while queues and len(out) < max_count and size < max_bytes:
            store = next(iter(queues))
            if taken.get(store, 0) >= share and (len(queues) > 1 or len(taken) > 1):
                if all(taken.get(s, 0) >= share for s in queues):
                    break  # every store still waiting had its share: the rest waits its turn
                queues.move_to_end(store)
                continue
            item = self.get_nowait()
            taken[store] = taken.get(store, 0) + 1
            out.append(item)
            size += len(item[1])
        return out

    def _take(self, store: str, cost: int) -> None:
        st = self.stats
        st.queued -= 1
        st.queued_bytes -= cost
        self._bytes[store] -= cost
        if not self._queues[store]:
            del self._queues[store]
            del self._bytes[store]

    def flooding(self, store: str) -> bool:
        """Whether `store` had messages shed in the last FLOODING_S seconds (read by the
        writer thread: a dict lookup, safe under the GIL)."""
        return self._last_shed.get(store, -FLOODING_S) > time.monotonic() - FLOODING_S

    def record_shed(self, store: str) -> None:
        """Count one shed message of `store` (stats, a rate-limited warning) and mark the store
        flooding for FLOODING_S seconds."""
        if len(self._last_shed) >= MAX_SHED_LABELS and store not in self._last_shed:
            self._last_shed.clear()
        self._last_shed[store] = time.monotonic()
        st = self.stats
        st.shed += 1
        known = store in st.shed_by_store or len(st.shed_by_store) < MAX_SHED_LABELS
        label = store if known else OTHER
        st.shed_by_store[label] = st.shed_by_store.get(label, 0) + 1
        self._log.warning(
            label,
            "head office: store %r sends faster than head office applies; %d of its "
            "messages shed so far (its lanes resend what was not acknowledged)",
            label,
            st.shed_by_store[label],
        )
