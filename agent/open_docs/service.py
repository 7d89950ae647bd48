"""Submitting a document: validate, give it its numbers, journal it, answer once durable.

Numbers are handed out only after validation, so a refused document burns none:
- txn_id: a UUIDv7 when the POS named none.
- register_no: `<prefix><counter>` (T10001). The counter lives in memory; a checkpoint is
  written every CHECKPOINT_EVERY documents. At start the counter is the checkpoint or the
  highest number in entries journaled after it or in open documents, whichever is larger, so a
  number is never handed out twice, and a crash leaves no gap (only numbers that were never
  confirmed are reused).
- SSCC serial (transits): committed before use, never reused.

A resubmitted txn_id whose journaled document holds everything the POS sent now (the agent
only added fields) is a duplicate: the original {seq, txn_id} comes back with 200.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from agent.documents.envelope import DocContext, screen, validate
from agent.documents.stock import complete_transit, scheme
from agent.journal import Journal, JournalConflict
from agent.journal.journal import Appended, new_txn_id
from agent.open_docs.store import LaneStore

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 256


def register_prefix(ctx: DocContext) -> str:
    if ctx.documents.register_prefix:
        return ctx.documents.register_prefix
    digit = ctx.lane.lane[-1:]
    return "T" + (digit if digit.isdigit() else "1")


def subset(sent: Any, stored: Any) -> bool:
    """True if everything in `sent` is in `stored` (maps may have gained keys)."""
    if type(sent) is dict:
        return type(stored) is dict and all(
            k in stored and subset(v, stored[k]) for k, v in sent.items()
        )
    if type(sent) is list:
        return (
            type(stored) is list
            and len(sent) == len(stored)
            and all(subset(a, b) for a, b in zip(sent, stored, strict=True))
        )
    return type(sent) is type(stored) and bool(sent == stored)


class RegisterCounter:
    """Register numbers of this lane (see the module docstring)."""

    def __init__(self, store: LaneStore, journal: Journal, prefix: str) -> None:
        self.store, self.journal, self.prefix = store, journal, prefix
        self.name = f"register:{prefix}"
        self._re = re.compile(re.escape(prefix) + r"([0-9]{4,12})")
        self.last = 0
        self._since_checkpoint = 0

    def _number(self, register_no: str) -> int | None:
        m = self._re.fullmatch(register_no)
        return int(m.group(1)) if m else None

    async def recover(self, open_numbers: list[str]) -> None:
        value, at_seq = await self.store.register_checkpoint(self.name)
        journaled = await self.store.max_register_after(at_seq, self._number)
        numbers = [n for n in map(self._number, open_numbers) if n is not None]
        self.last = max([value, journaled, *numbers])
        await self.checkpoint()

    def allocate(self) -> str:
        self.last += 1
        return f"{self.prefix}{self.last:04d}"

    def release(self, register_no: str | None) -> None:
        """Give back a number that was not used (a resubmission), if it is still the last."""
        if register_no is not None and self._number(register_no) == self.last:
            self.last -= 1

    def saw(self, register_no: str) -> None:
        """A POS-supplied number in our series moves the counter past it."""
        n = self._number(register_no)
        if n is not None and n > self.last:
            self.last = n

    async def after_append(self) -> None:
        self._since_checkpoint += 1
        if self._since_checkpoint >= CHECKPOINT_EVERY:
            await self.checkpoint()

    async def checkpoint(self) -> None:
        self._since_checkpoint = 0
        await self.store.set_register_checkpoint(self.name, self.last, self.journal.last_seq)


class DocumentService:
    """What the local API calls to turn a submitted document into a journal entry."""

    def __init__(self, ctx: DocContext, journal: Journal, store: LaneStore) -> None:
        self.ctx = ctx
        self.journal = journal
        self.store = store
        self.registers = RegisterCounter(store, journal, register_prefix(ctx))
        self.duplicates = 0
        self.refused = 0

    async def start(self, open_numbers: list[str]) -> None:
        await self.registers.recover(open_numbers)

    async def close(self) -> None:
        await self.registers.checkpoint()

    async def _duplicate(
        self, txn_id: str, sent: dict[str, Any]
    ) -> tuple[Appended, dict[str, Any]] | None:
        """The original confirmation if this txn_id is journaled with what was sent; raises
        JournalConflict if it is journaled with something else; None if not journaled."""
        found = await self.store.journaled(txn_id)
        if found is None:
            return None
        seq, stored = found
        if not subset(sent, stored):
            raise JournalConflict(txn_id, seq)
        self.duplicates += 1
        return Appended(seq, txn_id, self.journal.epoch, duplicate=True), stored

    async def submit(self, doc: Any) -> tuple[Appended, dict[str, Any]]:
        """Validate and journal `doc`; returns once it is committed (invariant 1).

        No lookup before appending (it would cost every document a read): the journal's unique
        txn_id finds a resubmission, and only then is the journaled document compared.
        """
        try:
            # First the rules of every kind, before anything here walks the document: depth
            # and size are bounded then, so the copy below cannot hit the recursion limit.
            screen(doc)
            txn_id = doc.get("txn_id")
            sent = _snapshot(doc) if type(txn_id) is str else None
            validate(doc, self.ctx, screened=True)
        except Exception:
            self.refused += 1
            raise
        allocated = None
        if "register_no" in doc:
            self.registers.saw(doc["register_no"])
        else:
            doc["register_no"] = allocated = self.registers.allocate()
        txn_id = doc.setdefault("txn_id", new_txn_id())
        if doc["kind"] == "transit_inventory":
            sscc = doc.get("sscc")
            if sscc is None:
                sscc = scheme(self.ctx).make(await self.store.next_sscc_serial())
            complete_transit(doc, sscc, self.ctx)
        try:
            res = await self.journal.append(doc["kind"], doc, txn_id=txn_id)
        except JournalConflict:
            self.registers.release(allocated)
            dup = await self._duplicate(txn_id, sent) if sent is not None else None
            if dup is None:
                raise
            return dup
        except BaseException:
            self.registers.release(allocated)  # not confirmed: the number may be used again
            raise
        if res.duplicate:  # byte-identical resubmission (the POS sent every field)
            self.duplicates += 1
        await self.registers.after_append()
        return res, doc


def _snapshot(value: Any) -> Any:
    """A deep copy of a JSON tree (cheaper than copy.deepcopy for plain data)."""
    if type(value) is dict:
        return {k: _snapshot(v) for k, v in value.items()}
    if type(value) is list:
        return [_snapshot(v) for v in value]
    return value
