"""What the database asks of a projection: the read models kept beside the journal.

The database applies journal entries exactly once; what an applied document means for stock,
transits or the extract is each projection's business (headoffice/projections.py lists them).
The daemon, ingest and the commands that write hand the projections to the database they
open, so storage imports none of them (issue 13.3).

A projection works in two steps. `check` runs on ingest's decoder thread, without the
database, and returns the checked document (or None: nothing to project); raising
`Unprojectable` holds the entry as `invalid_body` (invariant 9). `start` opens one flush's
run inside the database's transaction: `apply` gets every newly applied document it checked,
in apply order, and `finish` writes what the run gathered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from headoffice.db.sql import Sql
from protocol.errors import LanesyncError
from protocol.identity import LaneId
from protocol.messages import Entry


class Unprojectable(LanesyncError):
    """A body a projection cannot apply; the entry is held as `invalid_body` for `problem`."""

    code = "invalid_body"

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class ProjectionRun(Protocol):
    def apply(self, lane: LaneId, epoch: int, entry: Entry, doc: Any) -> bool:
        """Project one newly applied document; True when it could not be (logged, counted
        as `{name}_projection_errors`)."""
        ...

    def finish(self) -> None:
        """Write what the run gathered (once per flush)."""
        ...


class Projection(Protocol):
    name: str

    def check(self, lane: LaneId, epoch: int, entry: Entry, decoded: object) -> Any:
        """The checked document of `entry` (its body `decoded`, or None when it is not a
        msgpack map), or None when this projection has nothing to do with it."""
        ...

    def start(self, sql: Sql) -> ProjectionRun: ...


Projections = Sequence[Projection]
