"""Tests of the hash-chained SQLite logbook, including tampering with the raw database."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrocloud.core.events import REQUIRED_DETAIL, EventKind, LogEvent
from metrocloud.logbook import (
    ZERO_HASH,
    ChainVerdict,
    HashChainLogbook,
    LogbookError,
    LogEntry,
    chain_hash,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
COLUMNS = ("seq", "event_id", "time", "actor", "kind", "subject", "detail")


def make_event(i: int, *, kind: EventKind = EventKind.ARRIVAL, subject: str = "") -> LogEvent:
    return LogEvent(
        actor="receiver",
        kind=kind,
        subject=subject or f"meter.{i % 3}.reading",
        detail={"index": i, "note": f"event {i}"},
        time=T0 + timedelta(seconds=i),
        event_id=f"ev-{i:04d}",
    )


def expected_hash(prev: bytes, event: LogEvent) -> bytes:
    """The documented entry hash, computed independently of the implementation."""
    return hashlib.sha256(b"\x00" + prev + event.to_json()).digest()


@contextmanager
def raw_db(path: Path) -> Iterator[sqlite3.Connection]:
    """The logbook file opened with the plain sqlite3 module, as an attacker would."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "logbook.sqlite"


@pytest.fixture
def book(db_path: Path) -> Iterator[HashChainLogbook]:
    lb = HashChainLogbook(db_path)
    yield lb
    lb.close()


def filled(book: HashChainLogbook, n: int) -> list[LogEntry]:
    return book.append_many(make_event(i) for i in range(n))


def assert_bad(verdict: ChainVerdict, seq: int, *words: str) -> None:
    assert not verdict.ok, verdict
    assert verdict.first_bad_seq == seq, verdict
    for word in words:
        assert word in verdict.reason, verdict


# -- appending and reading -------------------------------------------------------------------


def test_empty_logbook(book: HashChainLogbook) -> None:
    assert book.size() == 0
    assert book.head() == ZERO_HASH == bytes(32)
    assert book.entries() == []
    assert book.verify() == ChainVerdict(True, 0, ZERO_HASH, None, "ok")
    assert book.verify_against(ZERO_HASH, 0).ok
    with pytest.raises(IndexError):
        book.get(0)


def test_append_chains_hashes(book: HashChainLogbook) -> None:
    prev = ZERO_HASH
    for i in range(5):
        event = make_event(i)
        entry = book.append(event)
        assert entry.seq == i
        assert entry.event == event
        assert entry.prev_hash == prev
        assert len(entry.entry_hash) == 32
        assert entry.entry_hash == expected_hash(prev, event) == chain_hash(prev, event)
        assert book.get(i) == entry
        assert book.head() == entry.entry_hash
        prev = entry.entry_hash
    assert book.size() == 5


def test_append_is_idempotent_on_event_id(book: HashChainLogbook) -> None:
    first = book.append(make_event(0))
    second = book.append(make_event(1))
    assert book.append(make_event(0)) == first
    # A redelivered copy that differs is not logged again either: the first one stands.
    changed = dataclasses.replace(make_event(1), detail={"other": True})
    assert book.append(changed) == second
    assert book.size() == 2
    batch = book.append_many([make_event(1), make_event(2), make_event(2), make_event(0)])
    assert [e.seq for e in batch] == [1, 2, 2, 0]
    assert book.size() == 3
    assert book.verify().ok


def test_append_many_is_one_transaction(book: HashChainLogbook) -> None:
    filled(book, 2)

    class NotJson:
        pass

    bad = dataclasses.replace(make_event(9), detail={"x": NotJson()})
    with pytest.raises(ValueError, match="ev-0009"):
        book.append_many([make_event(5), bad])
    assert book.size() == 2
    assert book.append_many([]) == []


def test_reopen_keeps_the_chain(db_path: Path) -> None:
    with HashChainLogbook(db_path) as lb:
        entries = filled(lb, 4)
        head = lb.head()
    with HashChainLogbook(db_path) as lb:
        assert lb.size() == 4
        assert lb.head() == head
        assert lb.entries() == entries
        assert lb.append(make_event(4)).prev_hash == head
        assert lb.verify().ok
        assert lb.verify_against(head, 4).ok
        with raw_db(db_path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_closed_logbook_refuses_use(book: HashChainLogbook) -> None:
    book.close()
    book.close()
    with pytest.raises(LogbookError):
        book.append(make_event(0))
    with pytest.raises(LogbookError):
        book.size()


def test_entries_filtering(book: HashChainLogbook) -> None:
    subjects = ["meter.a.reading", "meter.b.reading", "Meter.a", "meter.%_x", "zähler.ä"]
    kinds = [EventKind.ARRIVAL, EventKind.REJECTION, EventKind.STORAGE]
    events = [
        make_event(i, kind=kinds[i % 3], subject=subjects[i % len(subjects)]) for i in range(30)
    ]
    book.append_many(events)

    def seqs(entries: Sequence[LogEntry]) -> list[int]:
        return [e.seq for e in entries]

    assert seqs(book.entries()) == list(range(30))
    assert seqs(book.entries(kind=EventKind.REJECTION)) == list(range(1, 30, 3))
    assert book.entries(kind=EventKind.SERVICE) == []
    assert seqs(book.entries(subject_prefix="meter.a")) == list(range(0, 30, 5))
    assert seqs(book.entries(subject_prefix="meter.")) == [
        i for i in range(30) if i % 5 in (0, 1, 3)
    ]
    # Prefixes are literal and case-sensitive: no LIKE wildcards, no case folding.
    assert seqs(book.entries(subject_prefix="meter.%")) == list(range(3, 30, 5))
    assert seqs(book.entries(subject_prefix="meter.%_")) == list(range(3, 30, 5))
    assert seqs(book.entries(subject_prefix="Meter")) == list(range(2, 30, 5))
    assert seqs(book.entries(subject_prefix="zähler.ä")) == list(range(4, 30, 5))
    assert seqs(book.entries(subject_prefix="zähler.äx")) == []
    assert seqs(book.entries(start=25)) == [25, 26, 27, 28, 29]
    assert seqs(book.entries(limit=3)) == [0, 1, 2]
    assert book.entries(limit=0) == []
    combined = book.entries(kind=EventKind.ARRIVAL, subject_prefix="meter.", start=4, limit=3)
    assert seqs(combined) == [i for i in range(4, 30) if i % 3 == 0 and i % 5 in (0, 1, 3)][:3]
    assert [e.event for e in book.entries()] == events
    with pytest.raises(ValueError):
        book.entries(start=-1)
    with pytest.raises(ValueError):
        book.entries(limit=-1)


# -- verification and tampering ----------------------------------------------------------------


def test_verify_ok_on_fresh_chain(book: HashChainLogbook) -> None:
    entries = filled(book, 20)
    verdict = book.verify()
    assert verdict == ChainVerdict(True, 20, entries[-1].entry_hash, None, "ok")
    assert book.verify_against(entries[-1].entry_hash, 20).ok
    assert book.verify_against(entries[7].entry_hash, 8).ok


def test_altered_detail_is_detected(book: HashChainLogbook, db_path: Path) -> None:
    filled(book, 20)
    with raw_db(db_path) as conn:
        conn.execute("UPDATE entries SET detail = ? WHERE seq = 12", ('{"index":999}',))
    verdict = book.verify()
    assert_bad(verdict, 12)
    assert verdict.reason == "entry 12 altered: hash mismatch"


def test_reformatted_detail_is_detected(book: HashChainLogbook, db_path: Path) -> None:
    filled(book, 5)
    with raw_db(db_path) as conn:
        (detail,) = conn.execute("SELECT detail FROM entries WHERE seq = 3").fetchone()
        same_meaning = json.dumps(json.loads(detail), indent=1)
        conn.execute("UPDATE entries SET detail = ? WHERE seq = 3", (same_meaning,))
    assert_bad(book.verify(), 3, "entry 3 altered")


def test_deleted_middle_row_is_detected(book: HashChainLogbook, db_path: Path) -> None:
    filled(book, 15)
    with raw_db(db_path) as conn:
        conn.execute("DELETE FROM entries WHERE seq = 7")
    verdict = book.verify()
    assert_bad(verdict, 7)
    assert verdict.reason == "entry 7 missing: sequence gap"
    assert verdict.size == 14


def test_renumbered_rows_after_delete_are_detected(book: HashChainLogbook, db_path: Path) -> None:
    filled(book, 10)
    with raw_db(db_path) as conn:
        conn.execute("DELETE FROM entries WHERE seq = 4")
        for seq in range(5, 10):
            conn.execute("UPDATE entries SET seq = ? WHERE seq = ?", (seq - 1, seq))
    assert_bad(book.verify(), 4, "chain broken at 4")


def test_swapped_rows_are_detected(book: HashChainLogbook, db_path: Path) -> None:
    filled(book, 10)
    fields = "event_id, time, actor, kind, subject, detail, prev_hash, entry_hash"
    with raw_db(db_path) as conn:
        row3 = conn.execute(f"SELECT {fields} FROM entries WHERE seq = 3").fetchone()
        row6 = conn.execute(f"SELECT {fields} FROM entries WHERE seq = 6").fetchone()
        assignments = ", ".join(f"{f.strip()} = ?" for f in fields.split(","))
        conn.execute("BEGIN")
        conn.execute("UPDATE entries SET event_id = 'tmp' WHERE seq = 3")
        conn.execute(f"UPDATE entries SET {assignments} WHERE seq = 6", row3)
        conn.execute(f"UPDATE entries SET {assignments} WHERE seq = 3", row6)
        conn.execute("COMMIT")
    assert_bad(book.verify(), 3, "chain broken at 3", "does not match entry 2")


def test_forged_row_at_end_is_detected(book: HashChainLogbook, db_path: Path) -> None:
    filled(book, 10)
    forged = make_event(100)
    wrong_prev = bytes(range(32))
    with raw_db(db_path) as conn:
        conn.execute(
            "INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?)",
            (
                10,
                forged.event_id,
                forged.time.isoformat(),
                forged.actor,
                forged.kind.value,
                forged.subject,
                json.dumps(forged.detail, sort_keys=True, separators=(",", ":")),
                wrong_prev,
                expected_hash(wrong_prev, forged),
            ),
        )
    verdict = book.verify()
    assert_bad(verdict, 10)
    assert verdict.reason == "chain broken at 10: prev_hash does not match entry 9"


def test_forged_row_with_right_prev_but_wrong_hash(book: HashChainLogbook, db_path: Path) -> None:
    entries = filled(book, 3)
    forged = make_event(100)
    with raw_db(db_path) as conn:
        conn.execute(
            "INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?)",
            (
                3,
                forged.event_id,
                forged.time.isoformat(),
                forged.actor,
                forged.kind.value,
                forged.subject,
                "{}",
                entries[-1].entry_hash,
                bytes(32),
            ),
        )
    assert_bad(book.verify(), 3, "entry 3 altered: hash mismatch")


def rewrite_from(db_path: Path, book: HashChainLogbook, start: int) -> None:
    """Forge history as an operator could: alter entry ``start``, recompute all later hashes."""
    prev = book.get(start - 1).entry_hash if start else ZERO_HASH
    size = book.size()
    with raw_db(db_path) as conn:
        conn.execute("BEGIN")
        for seq in range(start, size):
            event = book.get(seq).event
            if seq == start:
                event = dataclasses.replace(event, detail={"index": -1, "note": "forged"})
            digest = expected_hash(prev, event)
            conn.execute(
                "UPDATE entries SET detail = ?, prev_hash = ?, entry_hash = ? WHERE seq = ?",
                (
                    json.dumps(event.detail, sort_keys=True, separators=(",", ":")),
                    prev,
                    digest,
                    seq,
                ),
            )
            prev = digest
        conn.execute("COMMIT")


def test_rewritten_history_is_caught_against_an_old_head(
    book: HashChainLogbook, db_path: Path
) -> None:
    entries = filled(book, 12)
    old_head, old_size = book.head(), book.size()
    early_head = entries[3].entry_hash
    rewrite_from(db_path, book, 5)

    assert book.get(5).event.detail == {"index": -1, "note": "forged"}
    assert book.verify().ok  # internally consistent ...
    assert book.head() != old_head
    verdict = book.verify_against(old_head, old_size)  # ... but not an extension
    assert_bad(verdict, 11, "history rewritten")
    assert book.verify_against(early_head, 4).ok  # the untouched prefix still checks

    book.append_many(make_event(i) for i in range(12, 20))  # growing does not hide it
    assert book.verify().ok
    assert_bad(book.verify_against(old_head, old_size), 11, "history rewritten")


def test_rollback_is_caught_against_an_old_head(book: HashChainLogbook, db_path: Path) -> None:
    filled(book, 10)
    old_head, old_size = book.head(), book.size()
    with raw_db(db_path) as conn:
        conn.execute("DELETE FROM entries WHERE seq >= 7")
    assert book.verify().ok  # a truncated chain is still a chain ...
    verdict = book.verify_against(old_head, old_size)  # ... but not the one seen before
    assert_bad(verdict, 7, "rollback")
    assert verdict.size == 7

    # Rolling back and appending other events up to the old size is caught too.
    book.append_many(make_event(i) for i in range(50, 53))
    assert book.size() == old_size
    assert book.verify().ok
    assert_bad(book.verify_against(old_head, old_size), 9, "history rewritten")


def test_verify_against_checks_its_arguments(book: HashChainLogbook) -> None:
    filled(book, 2)
    with pytest.raises(ValueError):
        book.verify_against(b"short", 1)
    with pytest.raises(ValueError):
        book.verify_against(ZERO_HASH, -1)
    with pytest.raises(ValueError):
        book.verify_against(b"\x01" * 32, 0)
    assert book.verify_against(ZERO_HASH, 0).ok


def test_verify_against_reports_earlier_damage_first(book: HashChainLogbook, db_path: Path) -> None:
    filled(book, 10)
    old_head = book.head()
    with raw_db(db_path) as conn:
        conn.execute("UPDATE entries SET actor = 'mallory' WHERE seq = 2")
        conn.execute("DELETE FROM entries WHERE seq >= 8")
    assert_bad(book.verify_against(old_head, 10), 2, "entry 2 altered")


# -- concurrency ---------------------------------------------------------------------------------


def test_threads_share_one_logbook(book: HashChainLogbook) -> None:
    def worker(t: int) -> None:
        for i in range(25):
            book.append(make_event(1000 * t + i))
            if i % 5 == 0:
                book.append(make_event(1000 * t))  # redelivery
                book.size()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert book.size() == 200
    assert book.verify().ok


def test_two_instances_on_one_file(db_path: Path) -> None:
    with HashChainLogbook(db_path) as a, HashChainLogbook(db_path) as b:
        for i in range(10):
            (a if i % 2 else b).append(make_event(i))
        assert a.append(make_event(3)).seq == 3
        assert a.size() == b.size() == 10
        assert a.head() == b.head()
        assert b.verify().ok


def _append_from_process(path: str, tag: str, count: int, barrier: Any) -> None:
    with HashChainLogbook(Path(path)) as lb:
        events = [
            LogEvent(
                actor=f"proc-{tag}",
                kind=EventKind.PROCESSING,
                subject=f"meter.{tag}.{i}",
                detail={"i": i},
                event_id=f"{tag}-{i}",
            )
            for i in range(count)
        ]
        barrier.wait(timeout=60)
        half = count // 2
        for event in events[:half]:
            lb.append(event)
            time.sleep(0.001)  # let the other process in: SQLite's busy wait favours the holder
        for k in range(half, count, 10):
            lb.append_many(events[k : k + 10])
        lb.append_many(events[:20])  # redelivered, must not duplicate


def test_two_processes_append_concurrently(db_path: Path) -> None:
    HashChainLogbook(db_path).close()  # schema first; creation races are tested below
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_append_from_process, args=(str(db_path), tag, 200, barrier))
        for tag in ("a", "b")
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=240)
    assert [proc.exitcode for proc in procs] == [0, 0]
    with HashChainLogbook(db_path) as lb:
        verdict = lb.verify()
        assert verdict.ok, verdict
        assert verdict.size == lb.size() == 400
        actors = [e.event.actor for e in lb.entries()]
        assert actors.count("proc-a") == actors.count("proc-b") == 200
        ids = {e.event.event_id for e in lb.entries()}
        assert ids == {f"{tag}-{i}" for tag in "ab" for i in range(200)}
        switches = sum(1 for x, y in itertools.pairwise(actors) if x != y)
        assert switches >= 2, "the two processes did not actually interleave"


def test_two_processes_create_the_file_concurrently(tmp_path: Path) -> None:
    path = tmp_path / "fresh.sqlite"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_append_from_process, args=(str(path), tag, 30, barrier))
        for tag in ("x", "y")
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=240)
    assert [proc.exitcode for proc in procs] == [0, 0]
    with HashChainLogbook(path) as lb:
        assert lb.verify().ok
        assert lb.size() == 60


def minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


def test_event_that_does_not_round_trip(book: HashChainLogbook) -> None:
    """An event whose JSON form does not come back the same is refused, never mis-chained."""
    odd_zone = timezone(timedelta(minutes=61, seconds=1, microseconds=5))
    event = dataclasses.replace(make_event(0), time=datetime(2025, 1, 1, tzinfo=odd_zone))
    raw = event.to_json()
    if LogEvent.from_json(raw).to_json() == raw:  # Python >= 3.11 parses such offsets
        assert book.append(event).event.to_json() == raw
        assert book.verify().ok
    else:
        with pytest.raises(ValueError, match="canonical"):
            book.append(event)
        assert book.size() == 0


# -- properties ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
details = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
# Whole-minute UTC offsets, as real zones have: sub-minute offsets do not survive
# LogEvent.to_json/from_json on Python 3.10 (see test_event_that_does_not_round_trip).
tzinfos = (
    st.none()
    | st.just(timezone.utc)
    | st.builds(timezone, st.integers(min_value=-1439, max_value=1439).map(minutes))
)


events = st.builds(
    LogEvent,
    actor=st.text(max_size=12),
    kind=st.sampled_from([k for k in EventKind if k not in REQUIRED_DETAIL]),
    subject=st.text(max_size=20),
    detail=details,
    time=st.datetimes(timezones=tzinfos),
    event_id=st.sampled_from([f"id-{i}" for i in range(12)]) | st.text(min_size=1, max_size=8),
)

PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@contextmanager
def fresh_logbook() -> Iterator[tuple[HashChainLogbook, Path]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prop.sqlite"
        lb = HashChainLogbook(path)
        try:
            yield lb, path
        finally:
            lb.close()


@PROPERTY_SETTINGS
@given(batch=st.lists(events, max_size=25), split=st.integers(min_value=0, max_value=25))
def test_property_any_events_verify(batch: list[LogEvent], split: int) -> None:
    with fresh_logbook() as (lb, _):
        head_part = lb.append_many(batch[:split])
        tail_part = [lb.append(event) for event in batch[split:]]
        returned = head_part + tail_part
        first_by_id: dict[str, LogEntry] = {}
        for event, entry in zip(batch, returned, strict=True):
            first = first_by_id.setdefault(event.event_id, entry)
            assert entry == first  # duplicates get the first entry back
        distinct = list(dict.fromkeys(e.event_id for e in batch))
        verdict = lb.verify()
        assert verdict.ok, verdict
        assert verdict.size == lb.size() == len(distinct)
        stored = lb.entries()
        assert [e.event.event_id for e in stored] == distinct
        assert stored == [first_by_id[i] for i in distinct]
        for entry in stored:
            original = next(e for e in batch if e.event_id == entry.event.event_id)
            assert entry.event.to_json() == original.to_json()
        assert verdict.head == lb.head() == (stored[-1].entry_hash if stored else ZERO_HASH)


FIELDS = [*COLUMNS, "prev_hash", "entry_hash"]


def _mutation(data: st.DataObject, field: str, value: Any, size: int) -> Any:
    """A stored value for ``field`` that differs from ``value``."""
    if field == "seq":
        return data.draw(
            st.integers(min_value=size, max_value=size + 1000)
            | st.integers(min_value=-1000, max_value=-1)
        )
    if field == "event_id":
        return "tampered-" + value
    if field in ("actor", "subject"):
        return data.draw(st.text(max_size=12).filter(lambda t: t != value))
    if field == "kind":
        return data.draw(
            st.sampled_from([k.value for k in EventKind if k.value != value] + ["bogus"])
        )
    if field == "time":
        parsed = datetime.fromisoformat(value)
        shifted = parsed - timedelta(microseconds=1) if parsed.year > 1 else parsed + timedelta(1)
        return data.draw(
            st.sampled_from([shifted.isoformat(), value.replace("T", " "), "yesterday"])
        )
    if field == "detail":
        other = data.draw(
            details.map(lambda d: json.dumps(d, sort_keys=True, separators=(",", ":")))
        )
        choices = [" " + value, value + " ", "not json", "[]"]
        if other != value:
            choices.append(other)
        return data.draw(st.sampled_from(choices))
    assert field in ("prev_hash", "entry_hash")
    position = data.draw(st.integers(min_value=0, max_value=len(value) - 1))
    flipped = bytearray(value)
    flipped[position] ^= data.draw(st.integers(min_value=1, max_value=255))
    return data.draw(st.sampled_from([bytes(flipped), value[:-1], value.hex()]))


@PROPERTY_SETTINGS
@given(
    batch=st.lists(events, min_size=1, max_size=12, unique_by=lambda e: e.event_id),
    data=st.data(),
)
def test_property_one_changed_field_is_named(batch: list[LogEvent], data: st.DataObject) -> None:
    with fresh_logbook() as (lb, path):
        lb.append_many(batch)
        size = lb.size()
        seq = data.draw(st.integers(min_value=0, max_value=size - 1), label="seq")
        field = data.draw(st.sampled_from(FIELDS), label="field")
        with raw_db(path) as conn:
            (value,) = conn.execute(f"SELECT {field} FROM entries WHERE seq = ?", (seq,)).fetchone()
            new = _mutation(data, field, value, size)
            assert new != value
            conn.execute(f"UPDATE entries SET {field} = ? WHERE seq = ?", (new, seq))
        verdict = lb.verify()
        assert not verdict.ok, (field, verdict)
        assert verdict.first_bad_seq == seq, (field, verdict)
        assert str(seq) in verdict.reason
