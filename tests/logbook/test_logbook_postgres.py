"""The logbook on PostgreSQL beyond the shared tests: the writer survives a server restart
and an append whose commit was in doubt, readers in other connections see what it wrote."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest

from metrocloud.core.events import EventKind, LogEvent
from metrocloud.core.ports import free_port
from metrocloud.deploy.postgres import LocalPostgres
from metrocloud.logbook.merkle import leaf_hash, tree_hash
from metrocloud.logbook.transparency import MerkleLogbook, open_logbook
from metrocloud.logbook.tree import TreeError
from metrocloud.store.db import PostgresDatabase


def event(n: int) -> LogEvent:
    return LogEvent(
        actor="communication",
        kind=EventKind.ARRIVAL,
        subject=f"m-{n % 3}",
        detail={"n": n},
        time=datetime(2026, 11, 21, 12, 0, n % 60, tzinfo=timezone.utc),
        event_id=f"event-{n}",
    )


@pytest.fixture
def url(postgres: LocalPostgres) -> Iterator[str]:
    name = f"log_{free_port()}"
    yield postgres.create_database(name)
    postgres.drop_database(name)


def _expected_head(n: int) -> bytes:
    return tree_hash([leaf_hash(event(i).to_json()) for i in range(n)])


def test_the_writer_survives_a_restart_and_readers_see_its_appends(
    url: str, postgres: LocalPostgres
) -> None:
    with open_logbook(url) as writer:
        assert writer.append_positions([event(n) for n in range(10)]) == list(range(10))
        postgres.restart()
        # The call that finds the connection lost may fail; the next one works.
        with contextlib.suppress(psycopg.OperationalError):
            writer.append_positions([event(10)])
        assert writer.append_positions([event(10), event(11)]) == [10, 11]
        assert writer.size == 12 and writer.head() == _expected_head(12)
        with open_logbook(url) as reader:
            assert reader.size == 12 and reader.head() == writer.head()
            assert reader.get(11).event == event(11) and reader.verify().ok


def test_an_append_whose_commit_was_in_doubt_is_neither_lost_nor_repeated(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit reaches the server but the connection drops before the answer: the
    writer reads its state again, and appending the same events finds them logged."""
    with MerkleLogbook(url) as book:
        book.append_positions([event(n) for n in range(5)])
        db = book._db
        assert isinstance(db, PostgresDatabase)
        commit = db._commit

        def commit_then_lose_the_connection() -> None:
            commit()
            db._drop()
            raise psycopg.OperationalError("server closed the connection unexpectedly")

        monkeypatch.setattr(db, "_commit", commit_then_lose_the_connection)
        with pytest.raises(psycopg.OperationalError):
            book.append_positions([event(5), event(6)])
        monkeypatch.undo()
        assert book.append_positions([event(5), event(6), event(7)]) == [5, 6, 7]
        assert book.size == 8 and book.head() == _expected_head(8)
        assert book.verify().ok


def test_a_tree_in_postgres_has_a_location_but_no_file(url: str, tmp_path: Path) -> None:
    with open_logbook(url) as book:
        assert book.location == url
        with pytest.raises(TreeError, match="not in a file"):
            _ = book.path
    with open_logbook(f"sqlite:///{tmp_path}/log.sqlite") as book:  # SQLAlchemy's form
        assert book.path == tmp_path / "log.sqlite" and book.location == str(book.path)
