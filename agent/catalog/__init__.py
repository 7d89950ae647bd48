"""The lane's copy of its store's master data (protocol/CATALOG.md): the catalog file with its
staged transfers (store), the lookups a lane makes (view), and the task that brings it to the
store's head over the replicator's request/reply (sync)."""
