"""The lane journal: every confirmed document, durable, sequenced and hash-chained.

This package is the one owner of the journal's own tables (meta, entries, outbox, quarantine):
nothing outside it reads or writes them with SQL of its own.

- In the agent, `Journal` (journal.py) writes them through its one writer task and offers
  what others need by name: append, mark_acked, read_from and hash_before for the replicator,
  `prune` for retention, `ping` for the watchdog; `run_write` lends the writer connection only
  for maintenance of the file itself (retention measures its pages with PRAGMAs).
- Outside the agent, `JournalFile` (file.py) reads them read-only for `lanesync journal
  verify | tail | export` and `lanesync status`; file.py's `journaled` and `documents_after`
  are the two reads agent.open_docs.store makes on its own connection to the file.

The same file also holds the lane tables of schema 0002, which belong to another module by
design and are read and written only there, on its own connection: open documents and the
counters (register numbers, SSCC serials) belong to agent.open_docs.store.LaneStore, the SSCC
statements it runs and the lease blocks written by agent.documents.sscc.SsccLeases included.
The journal's migration runner applies their schema so the file has one schema version.
"""

from agent.journal.journal import Appended, Journal, JournalConflict, JournalError, JournalFull

__all__ = ["Appended", "Journal", "JournalConflict", "JournalError", "JournalFull"]
