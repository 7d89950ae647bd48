"""The head-office server.

Owns ingest (validate, dedupe, apply in order, commit, then ack), its storage and quarantine,
and everything built on the applied journal.
"""
