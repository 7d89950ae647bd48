"""The lane journal: every confirmed document, durable, sequenced and hash-chained."""

from agent.journal.journal import Appended, Journal, JournalConflict, JournalError, JournalFull

__all__ = ["Appended", "Journal", "JournalConflict", "JournalError", "JournalFull"]
