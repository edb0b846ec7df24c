"""One SQL connection, to SQLite or to PostgreSQL, for SQL written once.

The store (:mod:`metrocloud.store.sql`) and the logbook (:mod:`metrocloud.logbook.tree`)
write their SQL once, with ``?`` placeholders and what both engines understand
(``INSERT ... ON CONFLICT DO NOTHING``, ``ON CONFLICT (...) DO UPDATE``); a
:class:`Database` runs it on its engine. Where the engines differ, it says how:

- schemas are templates with ``{blob}``, ``{text}``, ``{key}``, ``{bigint}`` and
  ``{without_rowid}`` (:meth:`Database.schema`): ``BLOB``/``BYTEA``, ``TEXT``/``TEXT
  COLLATE "C"`` (so text orders by bytes as in SQLite), ``INTEGER``/``BIGINT``;
- a ``{key}`` column holds any string, NUL included, which PostgreSQL's ``TEXT`` cannot:
  ``TEXT`` in SQLite, its UTF-8 bytes (``BYTEA``) in PostgreSQL; values go in through
  :meth:`Database.key` and come out through :meth:`Database.unkey`, and
  :meth:`Database.key_bytes` is a key column as bytes in SQL;
- :attr:`Database.unlimited` is the ``LIMIT`` that means none.

Both are safe for the threads of one process (a lock guards the connection). A PostgreSQL
connection that was lost (a server restart, a network failure) raises
:class:`psycopg.OperationalError` for the call that found it lost — a write is never
repeated, since it may have been done — and is opened again by the next call; a read
outside a transaction is repeated once on a new connection. :attr:`Database.generation`
counts the connections opened, so a caller that keeps state derived from the database
knows when to read it again.
"""

from __future__ import annotations

import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from metrocloud.core.errors import ConfigurationError

Row = tuple[Any, ...]

POSTGRES_SCHEMES = ("postgresql", "postgres")
CONNECT_TIMEOUT_S = 10
SQL_CACHE_SIZE = 4096
"""How many statements a connection keeps translated to psycopg's placeholders."""
_SCHEMA_LOCK = 0x6D6574726F  # pg_advisory_xact_lock key while creating tables ("metro")


class DatabaseUnavailable(psycopg.OperationalError):
    """The PostgreSQL server could not be reached (a transient failure for the services)."""


def is_postgres_url(location: str | Path) -> bool:
    return isinstance(location, str) and urlsplit(location).scheme in POSTGRES_SCHEMES


def sqlite_path(location: str | Path) -> Path:
    """The file of a SQLite location: a path, or a ``sqlite:///relative`` /
    ``sqlite:////absolute`` URL (SQLAlchemy's convention)."""
    if isinstance(location, Path):
        return location
    if "://" not in location:
        return Path(location)
    scheme, _, rest = location.partition("://")
    if scheme != "sqlite" or not rest.startswith("/") or len(rest) < 2:
        raise ConfigurationError(
            f"not a database location: {location!r} (a path, sqlite:///<path> or "
            "postgresql://user@host:port/database)"
        )
    return Path(rest[1:])


def redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class Database(ABC):
    """One connection; SQL with ``?`` placeholders."""

    dialect: str
    unlimited: int | None
    """The ``LIMIT`` value that means no limit."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.lock = threading.RLock()
        self.generation = 0
        self._depth = 0

    # -- SQL ------------------------------------------------------------------------------
    @abstractmethod
    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; returns how many rows it changed."""

    @abstractmethod
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    @abstractmethod
    def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...

    def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        rows = self.fetchall(sql, args)
        return rows[0] if rows else None

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[None]:
        """One transaction around the block (a write one takes the write lock up front,
        a read one sees one snapshot); nested blocks join the outer one."""
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._begin(write)
            self._depth = 1
            try:
                yield
                self._commit()
            except BaseException:
                self._rollback()
                raise
            finally:
                self._depth = 0

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    @abstractmethod
    def _begin(self, write: bool) -> None: ...
    @abstractmethod
    def _commit(self) -> None: ...
    @abstractmethod
    def _rollback(self) -> None: ...

    # -- dialect --------------------------------------------------------------------------
    @abstractmethod
    def schema(self, template: str) -> str:
        """``template`` with this engine's column types filled in."""

    @abstractmethod
    def create(self, template: str) -> None:
        """Create the tables of ``template`` that are missing (safe with several
        processes doing it at once)."""

    @abstractmethod
    def key_bytes(self, expression: str) -> str:
        """SQL for the UTF-8 bytes of the ``{key}`` column ``expression``."""

    @abstractmethod
    def key(self, value: str) -> Any:
        """``value`` as a ``{key}`` column stores it."""

    @abstractmethod
    def unkey(self, stored: Any) -> str:
        """The string a ``{key}`` column's ``stored`` value holds."""

    @abstractmethod
    def close(self) -> None: ...


class SQLiteDatabase(Database):
    """A SQLite file in WAL mode, ``synchronous=FULL``, autocommit between transactions."""

    dialect = "sqlite"
    unlimited = -1

    def __init__(self, path: Path, *, timeout: float = 60.0, read_only: bool = False) -> None:
        """``read_only``: the file opened for reading only (it must exist): every write
        fails."""
        super().__init__(str(path))
        self.path = path
        target = f"{Path(path).absolute().as_uri()}?mode=ro" if read_only else str(path)
        self.conn = sqlite3.connect(
            target, timeout=timeout, isolation_level=None, check_same_thread=False,
            uri=read_only,
        )  # fmt: skip
        if not read_only:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        self.generation = 1

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        with self.lock:
            return self.conn.execute(sql, args).rowcount

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.lock:
            self.conn.executemany(sql, rows)

    def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        with self.lock:
            return [tuple(r) for r in self.conn.execute(sql, args).fetchall()]

    def _begin(self, write: bool) -> None:
        self.conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def _commit(self) -> None:
        self.conn.execute("COMMIT")

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def schema(self, template: str) -> str:
        return template.format(
            blob="BLOB", text="TEXT", key="TEXT", bigint="INTEGER", without_rowid="WITHOUT ROWID"
        )

    def create(self, template: str) -> None:
        with self.lock:
            self.conn.executescript(self.schema(template))

    def key_bytes(self, expression: str) -> str:
        return f"CAST({expression} AS BLOB)"

    def key(self, value: str) -> Any:
        return value

    def unkey(self, stored: Any) -> str:
        return str(stored)

    def close(self) -> None:
        with self.lock:
            self.conn.close()


def _pg_sql(sql: str) -> bytes:
    """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s").encode()


def _read_only(url: str) -> str:
    """``url``'s connection string with every transaction read-only (its own ``options``
    kept)."""
    params = conninfo_to_dict(url)
    options = f"{params.get('options') or ''} -c default_transaction_read_only=on".strip()
    return make_conninfo("", **{**params, "options": options})


class PostgresDatabase(Database):
    """A PostgreSQL database by libpq URL; autocommit between transactions."""

    dialect = "postgresql"
    unlimited = None

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        """``read_only``: every transaction of the session is read-only (PostgreSQL
        refuses any write)."""
        super().__init__(url)
        self.url = url
        self.read_only = read_only
        self._conn: psycopg.Connection[Row] | None = None
        self._sql: dict[str, bytes] = {}
        self._connection()

    # -- connection -----------------------------------------------------------------------
    def _connection(self) -> psycopg.Connection[Row]:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._drop()
        if self._depth:  # never carry on a transaction on a new connection
            raise psycopg.OperationalError("the connection to PostgreSQL was lost mid-transaction")
        try:
            conn = psycopg.connect(
                _read_only(self.url) if self.read_only else self.url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
            )
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(
                f"PostgreSQL at {redacted(self.url)} is unreachable: {str(exc).strip()}"
            ) from exc
        self._conn = conn
        self.generation += 1
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with suppress(psycopg.Error):
                conn.close()

    def _lost(self) -> bool:
        """After an error: whether it was the connection that failed (then dropped)."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            self._drop()
            return True
        return False

    def _prepared(self, sql: str) -> bytes:
        text = self._sql.get(sql)
        if text is None:
            text = _pg_sql(sql)
            if len(self._sql) < SQL_CACHE_SIZE:
                self._sql[sql] = text
        return text

    # -- SQL ------------------------------------------------------------------------------
    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        with self.lock:
            try:
                return self._connection().execute(self._prepared(sql), args).rowcount
            except psycopg.OperationalError:
                self._lost()
                raise

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.lock:
            try:
                with self._connection().cursor() as cur:
                    cur.executemany(self._prepared(sql), rows)
            except psycopg.OperationalError:
                self._lost()
                raise

    def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        with self.lock:
            try:
                return self._connection().execute(self._prepared(sql), args).fetchall()
            except DatabaseUnavailable:
                raise
            except psycopg.OperationalError:
                if not self._lost() or self.in_transaction:
                    raise
            # A read outside a transaction on a connection found lost: once more, afresh.
            try:
                return self._connection().execute(self._prepared(sql), args).fetchall()
            except psycopg.OperationalError:
                self._lost()
                raise

    def _begin(self, write: bool) -> None:
        level = "READ COMMITTED" if write else "REPEATABLE READ READ ONLY"
        try:
            self._connection().execute(f"BEGIN ISOLATION LEVEL {level}".encode())
        except psycopg.OperationalError:
            self._lost()
            raise

    def _commit(self) -> None:
        try:
            self._connection().execute(b"COMMIT")
        except psycopg.OperationalError:
            self._lost()
            raise

    def _rollback(self) -> None:
        if self._lost():
            return  # the server rolled back when the connection ended
        try:
            assert self._conn is not None
            self._conn.execute(b"ROLLBACK")
        except psycopg.Error:
            self._drop()

    # -- dialect --------------------------------------------------------------------------
    def schema(self, template: str) -> str:
        return template.format(
            blob="BYTEA", text='TEXT COLLATE "C"', key="BYTEA", bigint="BIGINT", without_rowid=""
        )

    def create(self, template: str) -> None:
        statements = [s.strip() for s in self.schema(template).split(";") if s.strip()]
        with self.transaction():
            # Concurrent CREATE TABLE IF NOT EXISTS can collide in the catalog: one at a time.
            self.execute(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
            for statement in statements:
                self.execute(statement)

    def key_bytes(self, expression: str) -> str:
        return expression

    def key(self, value: str) -> Any:
        return value.encode("utf-8")

    def unkey(self, stored: Any) -> str:
        return bytes(stored).decode("utf-8")

    def close(self) -> None:
        with self.lock:
            self._drop()


def connect(location: str | Path, *, timeout: float = 60.0, read_only: bool = False) -> Database:
    """A :class:`PostgresDatabase` for a ``postgresql://`` URL, else a
    :class:`SQLiteDatabase` for the path (or ``sqlite:///`` URL); ``read_only``: one
    that refuses every write."""
    if is_postgres_url(location):
        return PostgresDatabase(str(location), read_only=read_only)
    return SQLiteDatabase(sqlite_path(location), timeout=timeout, read_only=read_only)
