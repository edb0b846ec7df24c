"""Storage behind one interface: SQLite in the embedded default."""

from metrocloud.store.base import CustomerKeyRecord, Flag, MeterRecord, Store
from metrocloud.store.sqlite import SQLiteStore

__all__ = ["CustomerKeyRecord", "Flag", "MeterRecord", "SQLiteStore", "Store"]
