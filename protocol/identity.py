"""Store and lane identities, and the topic names built from them.

Topic segments are restricted to `[A-Za-z0-9_-]{1,32}` so that a store id can never smuggle a
`/`, `+` or `#` into a topic and speak for another store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from protocol.errors import ProtocolError
from protocol.pan import contains_pan, mask_text

SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
DEFAULT_PREFIX = "lanesync/v1"
CATALOG_SEGMENT = "catalog"  # {prefix}/{store}/catalog: the store's retained catalog head
HEADOFFICE_SEGMENT = "headoffice"  # {prefix}/headoffice: head office's retained announcement
_PREFIX_RE = re.compile(r"[A-Za-z0-9_-]{1,32}(/[A-Za-z0-9_-]{1,32}){0,7}")


def check_segment(value: object, field: str) -> str:
    """Return `value` if it is a valid store or lane id, else raise naming `field`."""
    if not isinstance(value, str):
        raise ProtocolError(f"must be a string, got {type(value).__name__}", field)
    if not SEGMENT_RE.fullmatch(value):
        shown = mask_text(repr(value[:40]))  # quoted masked: it may hold a card number
        raise ProtocolError(f"{shown} is not 1-32 characters of A-Z a-z 0-9 _ -", field)
    if len(value) >= 13 and contains_pan(value):
        raise ProtocolError("looks like a full card number, not a store or lane id", field)
    return value


def check_prefix(prefix: str) -> str:
    if not _PREFIX_RE.fullmatch(prefix):
        raise ProtocolError(
            f"{prefix!r} must be 1-8 '/'-separated segments of A-Z a-z 0-9 _ -", "topic_prefix"
        )
    return prefix


class Channel(StrEnum):
    """The last topic segment: what kind of message travels there."""

    JOURNAL = "journal"  # lane -> HO, journal batches
    HELLO = "hello"  # lane -> HO, on every connect
    ACK = "ack"  # HO -> lane, high-water mark or resend-from
    REQUEST = "request"  # lane -> HO, request/reply
    REPLY = "reply"  # HO -> lane
    STATUS = "status"  # lane -> HO, retained online/offline


@dataclass(frozen=True, slots=True)
class LaneId:
    store: str
    lane: str

    def __post_init__(self) -> None:
        check_segment(self.store, "store")
        check_segment(self.lane, "lane")

    def __str__(self) -> str:
        return f"{self.store}/{self.lane}"


@dataclass(frozen=True, slots=True)
class Topics:
    """Builds and parses `{prefix}/{store}/{lane}/{channel}`."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_prefix(self.prefix)

    def topic(self, lane: LaneId, channel: Channel) -> str:
        return f"{self.prefix}/{lane.store}/{lane.lane}/{channel.value}"

    def all_lanes(self, channel: Channel) -> str:
        """Subscription filter for one channel of every lane."""
        return f"{self.prefix}/+/+/{channel.value}"

    def catalog(self, store: str) -> str:
        """The store's retained catalog head (head office -> the store's lanes): one level
        above the lanes' topics, so no lane topic or lane filter can name it."""
        return f"{self.prefix}/{check_segment(store, 'store')}/{CATALOG_SEGMENT}"

    def headoffice(self) -> str:
        """Head office's retained announcement and last will (messages.HeadOffice): one level
        below the prefix, a depth no store, lane or catalog topic has, so no id can name it."""
        return f"{self.prefix}/{HEADOFFICE_SEGMENT}"

    def all_catalogs(self) -> str:
        """Filter over every store's catalog head (head office's own view)."""
        return f"{self.prefix}/+/{CATALOG_SEGMENT}"

    def shared(self, group: str, channel: Channel) -> str:
        """MQTT 5 / Mosquitto / EMQX shared subscription over every lane's `channel`."""
        check_segment(group, "share_group")
        return f"$share/{group}/{self.all_lanes(channel)}"

    def parse(self, topic: str) -> tuple[LaneId, Channel]:
        """Split a received topic; raise ProtocolError naming what does not fit."""
        head = self.prefix + "/"
        if not topic.startswith(head):
            raise ProtocolError(f"{topic!r} is outside prefix {self.prefix!r}", "topic")
        parts = topic[len(head) :].split("/")
        if len(parts) != 3:
            raise ProtocolError(f"{topic!r} is not {head}STORE/LANE/CHANNEL", "topic")
        store, lane, channel = parts
        try:
            ch = Channel(channel)
        except ValueError:
            raise ProtocolError(f"unknown channel {channel!r}", "topic") from None
        return LaneId(check_segment(store, "topic.store"), check_segment(lane, "topic.lane")), ch
