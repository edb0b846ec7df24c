"""PostgreSQL for tests: one server per test session, a fresh database per test.

- :func:`postgres` (session): a :class:`~metrocloud.deploy.postgres.LocalPostgres` on a
  free port of 127.0.0.1, its cluster in a short temporary folder (a unix socket path must
  be short, and as root the server's user must be able to enter the folder), ``fsync`` off
  (a test server: nothing to keep after a crash of the machine). Started on first use only,
  so a run of SQLite-only tests starts no server.
- :func:`backend` (function, parametrized ``sqlite`` / ``postgres``) and :func:`locations`:
  fresh places for a store or a log on that backend: a file under ``tmp_path``, or a new
  schema of the session's test database, named in the URL
  (``?options=-csearch_path%3D<schema>``) and dropped after the test. Every table is
  created in it, so a test sees only its own rows, as with a database of its own; a
  ``CREATE DATABASE`` costs 0.1-0.2 s (it copies the template's 7 MB), a schema
  milliseconds, and the shared tests make some 80 of them.
- :func:`raw_execute`: run SQL on a location without metrocloud's classes (``?``
  placeholders), as an attacker with access to the storage would.
"""

from __future__ import annotations

import itertools
import shutil
import sqlite3
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from metrocloud.deploy.postgres import LocalPostgres

BACKENDS = ["sqlite", "postgres"]
TEST_SETTINGS = {"fsync": "off", "full_page_writes": "off"}
"""No fsync (a test server keeps nothing after a crash of the machine), but every commit
written before it returns: a killed server loses no committed row."""
_numbers = itertools.count()
TEST_DATABASE = "metrocloud_tests"

Location = Path | str


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    folder = Path(tempfile.mkdtemp(prefix="mc-pg-"))
    server = LocalPostgres(folder / "pg", settings=TEST_SETTINGS)
    try:
        server.start()
        server.create_database(TEST_DATABASE)
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


class Locations:
    """Fresh storage locations on one backend; databases are dropped by :meth:`cleanup`."""

    def __init__(self, backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self._request = request
        self._schemas: list[str] = []

    @property
    def server(self) -> LocalPostgres:
        server = self._request.getfixturevalue("postgres")
        assert isinstance(server, LocalPostgres)
        return server

    def new(self, name: str = "db.sqlite") -> Location:
        """A location nothing has used: ``tmp_path / name`` or a new schema's URL."""
        if self.backend == "sqlite":
            return self.tmp_path / name
        schema = f"test_{next(_numbers)}"
        with psycopg.connect(self.server.url_for(TEST_DATABASE), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}".encode())
        self._schemas.append(schema)
        options = urllib.parse.quote(f"-csearch_path={schema}")
        return f"{self.server.url_for(TEST_DATABASE)}?options={options}"

    def cleanup(self) -> None:
        if self._schemas:
            with psycopg.connect(self.server.url_for(TEST_DATABASE), autocommit=True) as conn:
                for schema in self._schemas:
                    conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())
        self._schemas.clear()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def locations(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Locations]:
    places = Locations(backend, tmp_path, request)
    try:
        yield places
    finally:
        places.cleanup()


def raw_execute(location: Location, sql: str, *args: object) -> None:
    """Run ``sql`` (``?`` placeholders) on the database at ``location`` in its own
    connection and transaction."""
    if isinstance(location, str) and location.startswith("postgresql://"):
        with psycopg.connect(location, autocommit=True) as conn:
            conn.execute(sql.replace("?", "%s").encode(), args)
        return
    with sqlite3.connect(location) as conn:
        conn.execute(sql, args)
    conn.close()
