"""Head-office ingest: validate, dedupe, apply in seq order, commit, and only then ack.

Two parts (issue 13.5): `session` (the broker connection, subscriptions, reconnects and the
decoder / writer / ack pipeline) and `applier` (a pure group applier: decoded messages in, the
acks and replies to publish out, testable without a broker); `stats` is what both count.
"""

from headoffice.ingest.applier import GroupApplier, Prepared, RequestHandler
from headoffice.ingest.session import Ingest
from headoffice.ingest.stats import IngestStats, LaneMarks

__all__ = [
    "GroupApplier",
    "Ingest",
    "IngestStats",
    "LaneMarks",
    "Prepared",
    "RequestHandler",
]
