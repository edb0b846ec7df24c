"""``metrocloud logbook verify | show`` on the logbook's storage, as an authority audits it:
the SQLite file of the embedded cloud or the PostgreSQL database of the distributed one
(every test runs on both), opened read-only."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from metrocloud.cli import app
from metrocloud.core.events import EventKind, LogEvent
from metrocloud.core.ports import free_port
from metrocloud.logbook.transparency import MerkleLogbook, open_logbook
from postgres_fixture import Location, Locations, raw_execute


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "300", "NO_COLOR": "1"})
    return result.exit_code, result.output


KINDS = [EventKind.ARRIVAL, EventKind.REJECTION, EventKind.USER_ACTIVITY]


def sample(n: int) -> LogEvent:
    return LogEvent(
        actor="communication",
        kind=KINDS[n % 3],
        subject=f"m-{n:04d}",
        detail={"n": n},
        time=datetime(2026, 11, 21, tzinfo=timezone.utc),
        event_id=f"e-{n}",
    )


@pytest.fixture
def log(locations: Locations) -> str:
    """A logbook of 40 entries, as its location's text (a path or a URL)."""
    location = locations.new("logbook.sqlite")
    with open_logbook(location) as book:
        book.append_many(sample(n) for n in range(40))
    return str(location)


def where(log: str) -> Location:
    return log if log.startswith("postgresql://") else Path(log)


def test_an_intact_log_verifies(log: str) -> None:
    code, out = run("logbook", "verify", log)
    assert code == 0 and "verified: 40 entries" in out, out


def test_one_entry_is_proven(log: str) -> None:
    code, out = run("logbook", "verify", log, "--entry", "17")
    assert code == 0 and "entry 17: user-activity m-0017" in out and "6 proof hashes" in out, out
    code, out = run("logbook", "verify", log, "--entry", "40")
    assert code == 1 and "no entry 40" in out


def test_a_changed_entry_is_named(log: str) -> None:
    forged = sample(23).to_json().replace(b'"n":23', b'"n":24')
    raw_execute(where(log), "UPDATE leaves SET entry = ? WHERE idx = 23", forged)
    code, out = run("logbook", "verify", log)
    assert code == 1 and "not verified: entry 23" in out, out


def test_growth_and_rollback_against_an_earlier_head(log: str, tmp_path: Path) -> None:
    with open_logbook(log) as book:
        head, size = book.root(30).hex(), 30
    code, out = run("logbook", "verify", log, "--head", head, "--size", str(size))
    assert code == 0 and "grown from 30 consistently" in out, out
    code, out = run("logbook", "verify", log, "--head", head, "--size", "50")
    assert code == 1 and "rollback" in out, out
    code, out = run("logbook", "verify", log, "--head", "00" * 32, "--size", "30")
    assert code == 1 and "rewritten" in out, out
    code, out = run("logbook", "verify", log, "--head", head)
    assert code == 1 and "go together" in out
    code, out = run("logbook", "verify", str(tmp_path / "missing.sqlite"))
    assert code == 1 and "no logbook" in out


def test_views_show_only_their_kinds(log: str) -> None:
    code, out = run("logbook", "show", log, "--audience", "consumer", "--limit", "100")
    kinds = {json.loads(line)["kind"] for line in out.splitlines()}
    assert code == 0 and kinds == {"arrival", "user-activity"}
    code, out = run("logbook", "show", log, "--audience", "landlord")
    assert code == 1 and "unknown audience" in out


def test_the_checked_logbook_is_not_written(log: str) -> None:
    """The tool opens the storage read-only: what it checks stays as it was, and a write
    through such a handle fails."""
    with open_logbook(log) as book:
        before = [book.get(n).entry_hash for n in range(book.size)], book.head()
    for args in (("verify",), ("verify", "--entry", "3"), ("show", "--limit", "5")):
        code, out = run("logbook", args[0], log, *args[1:])
        assert code == 0, out
    with open_logbook(log) as book:
        assert ([book.get(n).entry_hash for n in range(book.size)], book.head()) == before
    # what a write through it meets (SQLite: "readonly database"; PostgreSQL: "read-only
    # transaction")
    with pytest.raises(Exception, match=r"read-?only"), MerkleLogbook(log, read_only=True) as book:
        book.append(sample(99))


def test_an_empty_database_is_no_logbook_and_stays_empty(locations: Locations) -> None:
    empty = str(locations.new("empty.sqlite"))
    code, out = run("logbook", "verify", empty)
    assert code == 1 and ("no logbook" in out or "cannot read the logbook" in out), out
    assert "Traceback" not in out
    if empty.startswith("postgresql://"):
        with psycopg.connect(empty) as conn:
            tables = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
            ).fetchone()
        assert tables == (0,)
    else:
        assert not Path(empty).exists()


def test_an_unreachable_database_is_a_plain_verdict() -> None:
    url = f"postgresql://nobody:secret@127.0.0.1:{free_port()}/logbook"
    code, out = run("logbook", "verify", url)
    assert code == 1 and "not verified: cannot read the logbook at" in out, out
    assert "secret" not in out and "Traceback" not in out
    code, out = run("logbook", "show", "mysql://127.0.0.1/logbook")
    assert code == 1 and "not a database location" in out, out
