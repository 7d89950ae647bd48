"""Request operations a lane asks head office, and the codes head office refuses them with.

A lane sends `Request(op, args)` on its request topic; head office answers `Reply(ok, result)`.
A refusal is `ok: false` with `result.code` one of the codes below (and `error` in words), so
the lane can tell the POS why without parsing text. The catalog's own operations and refusal
live with its datasets in protocol.catalog (OP_DELTA, OP_SNAPSHOT, SNAPSHOT_NEEDED).
"""

from __future__ import annotations

from typing import Final

OP_TIME: Final = "time"  # {} -> {now_ms}: head office's clock, for the lane's skew check
OP_TRANSIT_LOOKUP: Final = "transit_lookup"  # a parcel to receive, by SSCC or transit number
OP_TRANSIT_ACCEPT: Final = "transit_accept"  # receive it, exactly once
OP_SSCC_LEASE: Final = "sscc_lease"  # the next block of SSCC serial references for a lane
# {epoch, hashes: [[seq, hash]...]} -> {verdict, state, upto, differ}: where the chains first
# differ inside a range verdict (protocol.proof); an older head office refuses it as unknown
OP_PROOF_NARROW: Final = "proof_narrow"

CODE_KEY: Final = "code"  # the refusal code's key in a refused reply's result

# Refusal codes (result.code of a reply with ok false).
BAD_REQUEST: Final = "bad_request"  # an argument is missing or malformed (result.field names it)
UNKNOWN: Final = "unknown"  # no such transit at head office
NOT_YET_KNOWN: Final = "not_yet_known"  # unknown, and some lane's entries have not arrived yet
ALREADY_RECEIVED: Final = "already_received"  # with result.received {store, lane, by, at}
OTHER_STORE: Final = "other_store"  # the parcel is meant for result.dest_store
CANCELLED: Final = "cancelled"  # with result.cancelled {at, by}
AMBIGUOUS: Final = "ambiguous"  # a transit number several source stores used
EXPIRED: Final = "expired"  # the accept arrived after the lane stopped waiting: nothing done
EXHAUSTED: Final = "exhausted"  # an SSCC block would pass the lane's highest serial

TRANSIT_REFUSALS: Final = frozenset(
    {
        BAD_REQUEST,
        UNKNOWN,
        NOT_YET_KNOWN,
        ALREADY_RECEIVED,
        OTHER_STORE,
        CANCELLED,
        AMBIGUOUS,
        EXPIRED,
    }
)
SSCC_REFUSALS: Final = frozenset({BAD_REQUEST, EXHAUSTED})
