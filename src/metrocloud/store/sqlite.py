"""SQLite implementation of :class:`~metrocloud.store.base.Store` (WAL, one file)."""

from __future__ import annotations

from pathlib import Path

from metrocloud.store.db import SQLiteDatabase
from metrocloud.store.sql import SqlStore


class SQLiteStore(SqlStore):
    """Safe for threads of one process and for several processes on one file."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        super().__init__(SQLiteDatabase(path, timeout=60.0))
