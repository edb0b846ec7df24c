"""``metrocloud logbook verify | show`` on a log file, as an authority audits a copy."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metrocloud.cli import app
from metrocloud.core.events import EventKind, LogEvent
from metrocloud.logbook.transparency import MerkleLogbook


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "300", "NO_COLOR": "1"})
    return result.exit_code, result.output


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "logbook.sqlite"
    kinds = [EventKind.ARRIVAL, EventKind.REJECTION, EventKind.USER_ACTIVITY]
    with MerkleLogbook(path) as book:
        book.append_many(
            LogEvent(
                actor="communication",
                kind=kinds[n % 3],
                subject=f"m-{n:04d}",
                detail={"n": n},
                time=datetime(2026, 11, 21, tzinfo=timezone.utc),
                event_id=f"e-{n}",
            )
            for n in range(40)
        )
    return path


def test_an_intact_log_verifies(log: Path) -> None:
    code, out = run("logbook", "verify", str(log))
    assert code == 0 and "verified: 40 entries" in out, out


def test_one_entry_is_proven(log: Path) -> None:
    code, out = run("logbook", "verify", str(log), "--entry", "17")
    assert code == 0 and "entry 17: user-activity m-0017" in out and "6 proof hashes" in out, out
    code, out = run("logbook", "verify", str(log), "--entry", "40")
    assert code == 1 and "no entry 40" in out


def test_a_changed_entry_is_named(log: Path) -> None:
    with sqlite3.connect(log) as conn:
        row = conn.execute("SELECT entry FROM leaves WHERE idx = 23").fetchone()
        conn.execute(
            "UPDATE leaves SET entry = ? WHERE idx = 23",
            (bytes(row[0]).replace(b'"n":23', b'"n":24'),),
        )
    code, out = run("logbook", "verify", str(log))
    assert code == 1 and "not verified: entry 23" in out, out


def test_growth_and_rollback_against_an_earlier_head(log: Path, tmp_path: Path) -> None:
    with MerkleLogbook(log) as book:
        head, size = book.root(30).hex(), 30
    code, out = run("logbook", "verify", str(log), "--head", head, "--size", str(size))
    assert code == 0 and "grown from 30 consistently" in out, out
    code, out = run("logbook", "verify", str(log), "--head", head, "--size", "50")
    assert code == 1 and "rollback" in out, out
    code, out = run("logbook", "verify", str(log), "--head", "00" * 32, "--size", "30")
    assert code == 1 and "rewritten" in out, out
    code, out = run("logbook", "verify", str(log), "--head", head)
    assert code == 1 and "go together" in out
    code, out = run("logbook", "verify", str(tmp_path / "missing.sqlite"))
    assert code == 1 and "no logbook" in out


def test_views_show_only_their_kinds(log: Path) -> None:
    code, out = run("logbook", "show", str(log), "--audience", "consumer", "--limit", "100")
    kinds = {json.loads(line)["kind"] for line in out.splitlines()}
    assert code == 0 and kinds == {"arrival", "user-activity"}
    code, out = run("logbook", "show", str(log), "--audience", "landlord")
    assert code == 1 and "unknown audience" in out
