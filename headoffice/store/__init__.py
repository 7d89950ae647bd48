"""Head-office storage: the replica of every lane journal, applied documents and quarantine."""

from headoffice.store.base import ApplyResult, LaneState, Store, StoreError
from headoffice.store.sqlite import SqliteStore

__all__ = ["ApplyResult", "LaneState", "SqliteStore", "Store", "StoreError"]
