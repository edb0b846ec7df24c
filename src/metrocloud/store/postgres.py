"""PostgreSQL implementation of :class:`~metrocloud.store.base.Store`.

The same tables and SQL as SQLite (:mod:`metrocloud.store.sql`), blobs as ``BYTEA``, text
in the ``"C"`` collation (ordered by bytes, as in SQLite). Each instance holds one
connection; processes (several ``legal`` workers, ingress, storage) each open their own and
may insert the same keys at once: exactly one insert of a key reports ``True``.

A lost connection (a server restart, a network failure) raises
:class:`psycopg.OperationalError` (transient for the services:
:data:`metrocloud.cloud.runtime.TRANSIENT`) from the call that found it, and the next call
connects again; an unreachable server raises
:class:`~metrocloud.store.db.DatabaseUnavailable`, an ``OperationalError`` too.
"""

from __future__ import annotations

from metrocloud.store.db import PostgresDatabase, redacted
from metrocloud.store.sql import SqlStore


class PostgresStore(SqlStore):
    """The store in the PostgreSQL database at ``url`` (``postgresql://user@host:port/db``);
    its tables are created if missing."""

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__(PostgresDatabase(url))

    def __repr__(self) -> str:
        return f"PostgresStore({redacted(self.url)!r})"
