"""The event logbook on the Merkle tree, on SQLite and on PostgreSQL: the Logbook interface,
RFC 9162 leaves, views, and each attack on the stored log detected with the offending index."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from logbook_samples import CERTIFICATE

from metrocloud.core.events import EventKind, LogEvent
from metrocloud.logbook.chain import LogbookError
from metrocloud.logbook.merkle import (
    EMPTY_ROOT,
    leaf_hash,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)
from metrocloud.logbook.transparency import AUDIENCES, MerkleLogbook, open_logbook
from postgres_fixture import Locations, raw_execute

KINDS = [
    EventKind.ARRIVAL,
    EventKind.REJECTION,
    EventKind.PROCESSING,
    EventKind.CERTIFICATE_ISSUED,
    EventKind.USER_ACTIVITY,
]


def event(n: int, kind: EventKind | None = None) -> LogEvent:
    kind = kind or KINDS[n % len(KINDS)]
    typed = CERTIFICATE if kind is EventKind.CERTIFICATE_ISSUED else {}
    return LogEvent(
        actor="communication" if n % 2 else "pki",
        kind=kind,
        subject=f"m-{n % 7:04d}",
        detail={"n": n, "note": "ä", **typed},
        time=datetime(2026, 11, 21, 12, 0, n % 60, tzinfo=timezone.utc),
        event_id=f"event-{n}",
    )


EVENTS = [event(n) for n in range(100)]


@pytest.fixture
def book(locations: Locations) -> Iterator[MerkleLogbook]:
    with open_logbook(locations.new("logbook.sqlite")) as b:
        b.append_many(EVENTS)
        yield b


def test_leaves_are_the_events_canonical_json(book: MerkleLogbook) -> None:
    leaves = [leaf_hash(e.to_json()) for e in EVENTS]
    assert book.head() == tree_hash(leaves) and book.size == 100
    entry = book.get(42)
    assert entry.event == EVENTS[42] and entry.entry_hash == leaves[42]
    proof = book.inclusion_proof(42)
    assert verify_inclusion(leaf_hash(EVENTS[42].to_json()), 42, 100, proof, book.head())


def test_appends_are_idempotent_on_event_id(book: MerkleLogbook) -> None:
    head = book.head()
    again = book.append_many([EVENTS[3], event(100), event(100)])
    assert [e.seq for e in again] == [3, 100, 100]
    assert book.size == 101
    assert book.verify_against(head, 100).ok


def test_an_empty_log(locations: Locations) -> None:
    with MerkleLogbook(locations.new("empty.sqlite")) as b:
        assert b.head() == EMPTY_ROOT and b.size == 0 and b.verify().ok
        with pytest.raises(IndexError):
            b.get(0)


def test_filters_and_views(book: MerkleLogbook) -> None:
    rejections = book.entries(kind=EventKind.REJECTION)
    assert [e.seq for e in rejections] == [n for n in range(100) if n % 5 == 1]
    assert all(e.event.subject.startswith("m-0003") for e in book.entries(subject_prefix="m-0003"))
    assert len(book.entries(start=90, limit=5)) == 5
    assert len(book.entries(audience="authority")) == 100
    consumer = {e.event.kind for e in book.entries(audience="consumer")}
    assert consumer == {EventKind.ARRIVAL, EventKind.PROCESSING, EventKind.USER_ACTIVITY}
    administrator = {e.event.kind for e in book.entries(audience="gateway-administrator")}
    assert EventKind.CERTIFICATE_ISSUED in administrator
    assert EventKind.USER_ACTIVITY not in administrator
    assert set(AUDIENCES) == {"authority", "gateway-administrator", "consumer"}
    with pytest.raises(ValueError):
        book.entries(audience="operator")


def test_exact_subjects_narrow_every_filter(book: MerkleLogbook) -> None:
    """A customer's view: exact subjects only (no prefix match), with the other filters."""
    mine = {"m-0002", "m-0005"}
    every = [e.seq for e in book.entries() if e.event.subject in mine]
    assert [e.seq for e in book.entries(subjects=mine)] == every
    assert book.positions(subjects=mine) == every
    assert [e.seq for e in book.entries(subjects=["m-000"])] == []
    assert book.entries(subjects=[]) == [] and book.positions(subjects=set()) == []
    consumer = book.entries(subjects=mine, audience="consumer", start=20, limit=4)
    assert [e.seq for e in consumer] == [
        e.seq for e in book.entries(audience="consumer", start=20) if e.event.subject in mine
    ][:4]
    arrivals = book.entries(subjects=mine, kind=EventKind.ARRIVAL)
    assert arrivals and all(e.event.kind is EventKind.ARRIVAL for e in arrivals)
    assert book.entries(subjects=mine, subject_prefix="m-0005") == book.entries(subjects=["m-0005"])
    with pytest.raises(TypeError):
        book.entries(subjects="m-0002")


def test_many_subjects_are_read_in_chunks(book: MerkleLogbook) -> None:
    """More subjects than one IN holds: the same answer, in order, limit over all chunks."""
    many = [f"x-{n}" for n in range(1300)] + ["m-0001", "m-0006"]
    every = [e.seq for e in book.entries() if e.event.subject in {"m-0001", "m-0006"}]
    assert [e.seq for e in book.entries(subjects=many)] == every
    assert book.positions(subjects=many, start=10, limit=7) == [s for s in every if s >= 10][:7]


def test_a_stored_event_that_fails_its_schema_is_reported(locations: Locations) -> None:
    """A leaf in the tree (hashes intact) whose typed detail is incomplete, as a producer
    without the check would have written it: reads say which entry, verify() names it."""
    bad = (
        b'{"actor":"pki","detail":{"serial":"1f"},"event_id":"bad","kind":"certificate-issued",'
        b'"subject":"gw-1","time":"2026-11-21T12:00:00+00:00"}'
    )
    with MerkleLogbook(locations.new("bad.sqlite")) as b:
        b.append_many(EVENTS[:3])
        b._append([bad], [(3, "bad", "pki", "certificate-issued", "gw-1")])
        b.append(EVENTS[4])
        with pytest.raises(LogbookError, match="stored entry 3 is unreadable"):
            b.get(3)
        with pytest.raises(LogbookError, match="entry 3"):
            b.entries(subjects=["gw-1"])
        assert b.positions(subjects=["gw-1"]) == [3]
        assert [e.seq for e in b.entries(start=4)] == [4]
        verdict = b.verify()
        assert not verdict.ok and verdict.first_bad_seq == 3
        assert "certificate-issued" in verdict.reason and "role" in verdict.reason


def _tamper(book: MerkleLogbook, sql: str, *args: object) -> None:
    raw_execute(book.location, sql, *args)


def test_a_changed_event_is_found_at_its_index(book: MerkleLogbook) -> None:
    forged = event(61).to_json().replace(b'"n":61', b'"n":62')
    _tamper(book, "UPDATE leaves SET entry = ? WHERE idx = 61", forged)
    verdict = book.verify()
    assert not verdict.ok and verdict.first_bad_seq == 61


def test_a_deleted_event_is_found(book: MerkleLogbook) -> None:
    _tamper(book, "DELETE FROM leaves WHERE idx = 70")
    verdict = book.verify()
    assert not verdict.ok and verdict.first_bad_seq == 70


def test_swapped_events_are_found(book: MerkleLogbook) -> None:
    _tamper(book, "UPDATE leaves SET idx = -1 WHERE idx = 20")
    _tamper(book, "UPDATE leaves SET idx = 20 WHERE idx = 21")
    _tamper(book, "UPDATE leaves SET idx = 21 WHERE idx = -1")
    verdict = book.verify()
    assert not verdict.ok and verdict.first_bad_seq == 20


def test_a_doctored_index_is_found(book: MerkleLogbook) -> None:
    """Hiding a rejection from the filters by relabelling it in the index."""
    _tamper(book, "UPDATE events SET kind = 'arrival' WHERE seq = 11")
    verdict = book.verify()
    assert not verdict.ok and verdict.first_bad_seq == 11


def test_a_rewritten_history_is_refused_against_an_earlier_head(locations: Locations) -> None:
    """The operator rebuilds a consistent log with entry 5 changed: the stored tree is
    self-consistent, but the head an authority saw earlier no longer matches."""
    with MerkleLogbook(locations.new("a.sqlite")) as honest:
        honest.append_many(EVENTS[:50])
        seen = (honest.head(), honest.size)
    with MerkleLogbook(locations.new("b.sqlite")) as rewritten:
        rewritten.append_many([*EVENTS[:5], event(500), *EVENTS[6:60]])
        assert rewritten.verify().ok
        verdict = rewritten.verify_against(*seen)
        assert not verdict.ok and "rewritten" in verdict.reason


def test_a_rollback_is_refused(book: MerkleLogbook, locations: Locations) -> None:
    seen = (book.head(), book.size)
    with MerkleLogbook(locations.new("short.sqlite")) as shorter:
        shorter.append_many(EVENTS[:80])
        verdict = shorter.verify_against(*seen)
    assert not verdict.ok and verdict.first_bad_seq == 80 and "rollback" in verdict.reason


def test_growth_is_consistent_with_every_earlier_head(book: MerkleLogbook) -> None:
    heads = {}
    for n in range(100, 140):
        heads[book.size] = book.head()
        book.append(event(n))
    for size, head in heads.items():
        assert book.verify_against(head, size).ok
        assert verify_consistency(size, book.size, head, book.head(), book.consistency_proof(size))


def test_append_positions_is_append_events_without_the_read_back(locations: Locations) -> None:
    with (
        MerkleLogbook(locations.new("a.sqlite")) as a,
        MerkleLogbook(locations.new("b.sqlite")) as b,
    ):
        batch = [event(n) for n in range(10)]
        assert a.append_positions(batch) == list(range(10))
        assert [e.seq for e in b.append_events(batch)] == list(range(10))
        assert a.head() == b.head()
        again = [event(3), event(10), event(3)]  # a repeat, a new one, a repeat in the batch
        assert a.append_positions(again) == [3, 10, 3]
        assert [e.seq for e in b.append_events(again)] == [3, 10, 3]
        assert a.head() == b.head() and a.size == 11
