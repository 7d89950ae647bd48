"""Held entries at head office and their repair by an operator (issue 16, invariant 9).

`lanesync held list|show|release|void` (cli) over what the store decides (release and void
live in headoffice.db.base, one transaction each, on SQLite and PostgreSQL alike); `ops`
reads held entries for the commands, the status page and metrics.
"""
