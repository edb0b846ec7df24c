"""Storage behind one interface: SQLite in the embedded default, PostgreSQL when distributed.

:func:`open_store` picks the implementation from where the data is: a path (or
``sqlite:///<path>``) for SQLite, ``postgresql://user@host:port/database`` for PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

from metrocloud.store.base import CustomerKeyRecord, Flag, MeterRecord, Store
from metrocloud.store.db import DatabaseUnavailable, is_postgres_url, sqlite_path
from metrocloud.store.postgres import PostgresStore
from metrocloud.store.sqlite import SQLiteStore


def open_store(url_or_path: str | Path) -> Store:
    """A :class:`PostgresStore` for a ``postgresql://`` (or ``postgres://``) URL, else a
    :class:`SQLiteStore` for the path or ``sqlite:///`` URL; another scheme is a
    :class:`~metrocloud.core.errors.ConfigurationError`."""
    if is_postgres_url(url_or_path):
        return PostgresStore(str(url_or_path))
    return SQLiteStore(sqlite_path(url_or_path))


__all__ = [
    "CustomerKeyRecord",
    "DatabaseUnavailable",
    "Flag",
    "MeterRecord",
    "PostgresStore",
    "SQLiteStore",
    "Store",
    "open_store",
]
