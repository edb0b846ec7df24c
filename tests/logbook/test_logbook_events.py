"""Typed logbook events (software updates, anomalies, functionality checks, certificates):
their constructors, the detail each must carry, and the per-customer view of the logbook."""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrocloud.core.events import (
    ANOMALY_STATES,
    CHECK_VERDICTS,
    REQUIRED_DETAIL,
    UPDATE_RESULTS,
    EventKind,
    LogEvent,
    anomaly_event,
    check_detail,
    functionality_check_event,
    software_update_event,
)
from metrocloud.core.software import SoftwareId
from metrocloud.logbook.transparency import AUDIENCES, MerkleLogbook
from postgres_fixture import Locations

T = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
OLD = SoftwareId("legal-core", "1.4.2", "a" * 64)
NEW = SoftwareId("legal-core", "1.5.0", "b" * 64)
TYPED = {
    EventKind.SOFTWARE_UPDATE,
    EventKind.ANOMALY,
    EventKind.FUNCTIONALITY_CHECK,
    EventKind.CERTIFICATE_ISSUED,
    EventKind.CERTIFICATE_REVOKED,
}


def update(**overrides: Any) -> LogEvent:
    args: dict[str, Any] = {
        "actor": "update-agent",
        "component": "legal",
        "old": OLD,
        "new": NEW,
        "result": "installed",
        "by": "Manufacturer GmbH Software Signing",
        "time": T,
        "event_id": "update-1",
    }
    return software_update_event(**{**args, **overrides})


def anomaly(**overrides: Any) -> LogEvent:
    args: dict[str, Any] = {
        "actor": "monitor",
        "component": "storage",
        "state_from": "green",
        "state_to": "yellow",
        "metrics": {"disk_free_ratio": 0.08, "queue_depth": 1200},
        "rule": "disk_free_ratio < 0.1",
        "time": T,
        "event_id": "anomaly-1",
    }
    return anomaly_event(**{**args, **overrides})


def check(**overrides: Any) -> LogEvent:
    args: dict[str, Any] = {
        "actor": "authority",
        "program": "taf1",
        "program_version": "2.1.0",
        "verdict": "pass",
        "checks": 96,
        "failures": 0,
        "round_id": "round-2026-11",
        "time": T,
        "event_id": "check-1",
    }
    return functionality_check_event(**{**args, **overrides})


def issued() -> LogEvent:
    """A certificate-issued event as :mod:`metrocloud.pki.authority` writes it."""
    detail = {
        "serial": "5a1f",
        "role": "gateway",
        "issuer": "devices",
        "curve": "P-256",
        "not_after": "2028-11-21T12:00:00+00:00",
        "requested_by": "operator",
    }
    return LogEvent("pki", EventKind.CERTIFICATE_ISSUED, "gw-0001", detail, T, "issued-1")


def revoked() -> LogEvent:
    """A certificate-revoked event as :mod:`metrocloud.pki.authority` writes it."""
    detail = {"serial": "5a1f", "reason": "keyCompromise", "issuer": "devices", "requested_by": ""}
    return LogEvent("pki", EventKind.CERTIFICATE_REVOKED, "gw-0001", detail, T, "revoked-1")


MAKERS: dict[EventKind, Callable[[], LogEvent]] = {
    EventKind.SOFTWARE_UPDATE: update,
    EventKind.ANOMALY: anomaly,
    EventKind.FUNCTIONALITY_CHECK: check,
    EventKind.CERTIFICATE_ISSUED: issued,
    EventKind.CERTIFICATE_REVOKED: revoked,
}

EXAMPLES = [
    update(),
    update(old=None, event_id="first-install"),
    update(result="refused", reason="signature by an unknown manufacturer", event_id="u2"),
    update(result="rolled-back", reason="self-test failed", event_id="u3"),
    anomaly(),
    anomaly(component="system", state_from="red", state_to="green", metrics={}, event_id="a2"),
    check(),
    check(verdict="fail", failures=3, event_id="check-2"),
    issued(),
    revoked(),
]


def rebuilt(event: LogEvent, **changes: Any) -> LogEvent:
    """``event`` with fields replaced, built again (so the check runs again)."""
    fields = {
        "actor": event.actor,
        "kind": event.kind,
        "subject": event.subject,
        "detail": copy.deepcopy(event.detail),
        "time": event.time,
        "event_id": event.event_id,
    }
    return LogEvent(**{**fields, **changes})


def with_detail(event: LogEvent, **detail: Any) -> LogEvent:
    return rebuilt(event, detail={**copy.deepcopy(event.detail), **detail})


def without(event: LogEvent, name: str) -> LogEvent:
    detail = copy.deepcopy(event.detail)
    del detail[name]
    return rebuilt(event, detail=detail)


# -- the constructors ---------------------------------------------------------------------


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.event_id)
def test_a_typed_event_round_trips_through_json(event: LogEvent) -> None:
    assert event.kind in TYPED
    assert REQUIRED_DETAIL[event.kind] <= set(event.detail)
    assert LogEvent.from_json(event.to_json()) == event


def test_typed_events_round_trip_through_the_logbook(locations: Locations) -> None:
    with MerkleLogbook(locations.new("logbook.sqlite")) as book:
        entries = book.append_many(EXAMPLES)
        assert [e.seq for e in entries] == list(range(len(EXAMPLES)))
        for seq, event in enumerate(EXAMPLES):
            assert book.get(seq).event == event
        assert book.verify().ok
        assert [e.event for e in book.entries(kind=EventKind.ANOMALY)] == EXAMPLES[4:6]


def test_what_the_constructors_write() -> None:
    event = update(result="failed", reason="checksum mismatch")
    assert (event.kind, event.subject, event.actor) == (
        EventKind.SOFTWARE_UPDATE,
        "legal",
        "update-agent",
    )
    assert event.detail == {
        "component": "legal",
        "old": OLD.to_dict(),
        "new": NEW.to_dict(),
        "result": "failed",
        "by": "Manufacturer GmbH Software Signing",
        "reason": "checksum mismatch",
    }
    assert update(old=None).detail["old"] is None
    assert "reason" not in update().detail
    assert SoftwareId.from_dict(event.detail["new"]) == NEW
    event = anomaly()
    assert (event.kind, event.subject) == (EventKind.ANOMALY, "storage")
    assert event.detail["state_from"] == "green" and event.detail["state_to"] == "yellow"
    assert event.detail["metrics"] == {"disk_free_ratio": 0.08, "queue_depth": 1200}
    event = check()
    assert (event.kind, event.subject) == (EventKind.FUNCTIONALITY_CHECK, "taf1")
    fresh = functionality_check_event("authority", "taf2", "1", "pass", 1, 0, "r")
    assert fresh.time.tzinfo is not None and len(fresh.event_id) == 32
    assert fresh.event_id != functionality_check_event("a", "taf2", "1", "pass", 1, 0, "r").event_id


def test_a_functionality_check_names_no_meter_or_customer() -> None:
    """The authority's test meters stay secret from the operator who reads the log: the
    event holds exactly the program's fields, its subject is the program."""
    event = check(verdict="fail", failures=2)
    assert set(event.detail) == REQUIRED_DETAIL[EventKind.FUNCTIONALITY_CHECK]
    assert set(event.detail) == {
        "program",
        "program_version",
        "verdict",
        "checks",
        "failures",
        "round_id",
    }
    assert event.subject == "taf1"
    assert not any("meter" in key or "customer" in key for key in event.detail)
    for extra in ("meter", "meter_id", "customer", "customer_id", "gateway"):
        with pytest.raises(ValueError, match=f"functionality-check.*'{extra}'.*not allowed"):
            with_detail(check(), **{extra: "meter-0042"})
    with pytest.raises(ValueError, match=r"functionality-check.*subject 'meter-0042'"):
        rebuilt(check(), subject="meter-0042")


def test_audiences_show_the_new_kinds_as_specified() -> None:
    assert AUDIENCES["authority"] is None
    administrator = AUDIENCES["gateway-administrator"]
    consumer = AUDIENCES["consumer"]
    assert administrator is not None and consumer is not None
    assert {EventKind.SOFTWARE_UPDATE, EventKind.ANOMALY} <= administrator
    assert EventKind.SOFTWARE_UPDATE in consumer and EventKind.ANOMALY not in consumer
    assert EventKind.FUNCTIONALITY_CHECK not in administrator | consumer


# -- refused details ----------------------------------------------------------------------

MISSING = [(kind, name) for kind in MAKERS for name in sorted(REQUIRED_DETAIL[kind])]


@pytest.mark.parametrize(("kind", "name"), MISSING, ids=[f"{k.value}-{n}" for k, n in MISSING])
def test_a_missing_field_is_refused_by_name(kind: EventKind, name: str) -> None:
    event = MAKERS[kind]()
    with pytest.raises(ValueError, match=rf"{kind.value} event: .*missing: '{name}'"):
        without(event, name)
    detail = copy.deepcopy(event.detail)
    del detail[name]
    with pytest.raises(ValueError, match=rf"{kind.value} event: .*missing: '{name}'"):
        LogEvent.from_json(unchecked_json(event, detail))


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.event_id)
def test_unchecked_json_is_the_events_json(event: LogEvent) -> None:
    assert unchecked_json(event, event.detail) == event.to_json()


def unchecked_json(event: LogEvent, detail: dict[str, Any]) -> bytes:
    """The canonical JSON ``event`` would have with ``detail``, made without the check (as a
    stored leaf or a message on the bus could hold it)."""
    free = LogEvent(event.actor, EventKind.SERVICE, event.subject, detail, event.time, "x")
    return (
        free.to_json()
        .replace(b'"kind":"service"', f'"kind":"{event.kind.value}"'.encode())
        .replace(b'"event_id":"x"', f'"event_id":"{event.event_id}"'.encode())
    )


def test_several_missing_fields_are_all_named() -> None:
    with pytest.raises(ValueError, match="fields are missing: 'checks', 'failures', 'verdict'"):
        rebuilt(check(), detail={"program": "taf1", "program_version": "1", "round_id": "r"})


INVALID: list[tuple[EventKind, str, Any]] = [
    (EventKind.SOFTWARE_UPDATE, "component", ""),
    (EventKind.SOFTWARE_UPDATE, "component", 7),
    (EventKind.SOFTWARE_UPDATE, "old", "1.4.2"),
    (EventKind.SOFTWARE_UPDATE, "old", {"name": "legal-core", "version": "1.4.2"}),
    (EventKind.SOFTWARE_UPDATE, "new", None),
    (EventKind.SOFTWARE_UPDATE, "new", {**NEW.to_dict(), "checksum": 5}),
    (EventKind.SOFTWARE_UPDATE, "new", {**NEW.to_dict(), "meter": "m-1"}),
    (EventKind.SOFTWARE_UPDATE, "result", "ok"),
    (EventKind.SOFTWARE_UPDATE, "result", "Installed"),
    (EventKind.SOFTWARE_UPDATE, "result", None),
    (EventKind.SOFTWARE_UPDATE, "by", ""),
    (EventKind.SOFTWARE_UPDATE, "by", None),
    (EventKind.SOFTWARE_UPDATE, "reason", 42),
    (EventKind.ANOMALY, "component", ""),
    (EventKind.ANOMALY, "state_from", "orange"),
    (EventKind.ANOMALY, "state_to", "RED"),
    (EventKind.ANOMALY, "state_to", None),
    (EventKind.ANOMALY, "metrics", [1.0]),
    (EventKind.ANOMALY, "metrics", {"cpu": "high"}),
    (EventKind.ANOMALY, "metrics", {"cpu": True}),
    (EventKind.ANOMALY, "metrics", {"cpu": float("nan")}),
    (EventKind.ANOMALY, "metrics", {"cpu": float("inf")}),
    (EventKind.ANOMALY, "metrics", {"": 1.0}),
    (EventKind.ANOMALY, "rule", ""),
    (EventKind.FUNCTIONALITY_CHECK, "program", ""),
    (EventKind.FUNCTIONALITY_CHECK, "program_version", 2),
    (EventKind.FUNCTIONALITY_CHECK, "verdict", "passed"),
    (EventKind.FUNCTIONALITY_CHECK, "verdict", None),
    (EventKind.FUNCTIONALITY_CHECK, "checks", -1),
    (EventKind.FUNCTIONALITY_CHECK, "checks", 1.5),
    (EventKind.FUNCTIONALITY_CHECK, "checks", True),
    (EventKind.FUNCTIONALITY_CHECK, "checks", "96"),
    (EventKind.FUNCTIONALITY_CHECK, "failures", -2),
    (EventKind.FUNCTIONALITY_CHECK, "failures", 97),  # more than checks
    (EventKind.FUNCTIONALITY_CHECK, "round_id", ""),
    (EventKind.CERTIFICATE_ISSUED, "serial", ""),
    (EventKind.CERTIFICATE_ISSUED, "serial", 0x5A1F),
    (EventKind.CERTIFICATE_ISSUED, "role", None),
    (EventKind.CERTIFICATE_ISSUED, "issuer", ["devices"]),
    (EventKind.CERTIFICATE_ISSUED, "curve", 256),
    (EventKind.CERTIFICATE_ISSUED, "not_after", "next year"),
    (EventKind.CERTIFICATE_ISSUED, "requested_by", None),
    (EventKind.CERTIFICATE_REVOKED, "serial", None),
    (EventKind.CERTIFICATE_REVOKED, "reason", ""),
    (EventKind.CERTIFICATE_REVOKED, "issuer", 1),
    (EventKind.CERTIFICATE_REVOKED, "requested_by", 0),
]


@pytest.mark.parametrize(
    ("kind", "name", "value"),
    INVALID,
    ids=[f"{k.value}-{n}-{v!r}" for k, n, v in INVALID],
)
def test_an_invalid_field_is_refused_by_name(kind: EventKind, name: str, value: Any) -> None:
    event = MAKERS[kind]()
    with pytest.raises(ValueError, match=f"{kind.value} event: detail field '{name}'"):
        with_detail(event, **{name: value})


def test_consistency_between_fields() -> None:
    for result in sorted(UPDATE_RESULTS - {"installed"}):
        with pytest.raises(ValueError, match=f"'reason' is missing .*{result!r}"):
            update(result=result)
        assert update(result=result, reason="why").detail["reason"] == "why"
    assert update(reason="scheduled").detail["reason"] == "scheduled"  # allowed, not needed
    with pytest.raises(ValueError, match="'verdict' is 'pass' with 1 failures"):
        check(failures=1)
    with pytest.raises(ValueError, match="'failures' is 5, more than checks"):
        check(verdict="fail", checks=4, failures=5)
    assert check(verdict="fail", checks=0, failures=0).detail["checks"] == 0
    with pytest.raises(ValueError, match="software-update event: subject 'other'"):
        rebuilt(update(), subject="other")
    with pytest.raises(ValueError, match="anomaly event: subject 'meter-1'"):
        rebuilt(anomaly(), subject="meter-1")


def test_enumerations_are_exactly_the_documented_ones() -> None:
    assert sorted(UPDATE_RESULTS) == ["failed", "installed", "refused", "rolled-back"]
    assert sorted(ANOMALY_STATES) == ["green", "red", "yellow"]
    assert sorted(CHECK_VERDICTS) == ["fail", "pass"]
    for state_from in ANOMALY_STATES:
        for state_to in ANOMALY_STATES:
            assert anomaly(state_from=state_from, state_to=state_to).detail["state_to"] == state_to


def test_only_typed_kinds_are_checked() -> None:
    assert set(REQUIRED_DETAIL) == TYPED
    for kind in set(EventKind) - TYPED:
        event = LogEvent("svc", kind, "anything", {"free": ["form", 1]}, T, "e")
        check_detail(event)
        assert LogEvent.from_json(event.to_json()) == event
    with pytest.raises(ValueError, match="detail must be an object"):
        rebuilt(anomaly(), detail=["component"])


def test_the_existing_values_of_event_kinds_are_unchanged() -> None:
    """They are on disk already."""
    assert {k.name: k.value for k in EventKind} == {
        "ARRIVAL": "arrival",
        "REJECTION": "rejection",
        "PROCESSING": "processing",
        "DUPLICATE": "duplicate",
        "STORAGE": "storage",
        "KEY_REGISTRATION": "key-registration",
        "USER_ACTIVITY": "user-activity",
        "VERIFICATION_FAILURE": "verification-failure",
        "VERIFICATION_SUCCESS": "verification-success",
        "SERVICE": "service",
        "CERTIFICATE_ISSUED": "certificate-issued",
        "CERTIFICATE_REVOKED": "certificate-revoked",
        "SOFTWARE_UPDATE": "software-update",
        "ANOMALY": "anomaly",
        "FUNCTIONALITY_CHECK": "functionality-check",
    }


def test_a_changed_typed_detail_is_caught_on_append(locations: Locations) -> None:
    """``detail`` is a dict: changed after the event was made, the append checks it again."""
    event = check()
    event.detail["meter"] = "meter-0042"
    book = MerkleLogbook(locations.new("l.sqlite"))
    with book, pytest.raises(ValueError, match="meter"):
        book.append(event)


# -- the per-customer view ----------------------------------------------------------------

POOL = ["alice", "bob", "meter-a1", "meter-a10", "Meter-a1", "a%", "a_", "ä", "a\x00b", "a", ""]
subjects_st = st.sampled_from(POOL) | st.text(max_size=4)


def make(n: int, kind: EventKind, subject: str) -> LogEvent:
    """A valid event of ``kind`` about ``subject`` (typed kinds where the subject allows)."""
    if kind is EventKind.SOFTWARE_UPDATE and subject:
        return update(component=subject, event_id=f"e{n}")
    if kind is EventKind.ANOMALY and subject:
        return anomaly(component=subject, event_id=f"e{n}")
    if kind is EventKind.FUNCTIONALITY_CHECK and subject:
        return check(program=subject, event_id=f"e{n}")
    if kind is EventKind.CERTIFICATE_ISSUED:
        return rebuilt(issued(), subject=subject, event_id=f"e{n}")
    if kind is EventKind.CERTIFICATE_REVOKED:
        return rebuilt(revoked(), subject=subject, event_id=f"e{n}")
    if kind in TYPED:  # a typed kind needs a non-empty subject: use a free one
        kind = EventKind.SERVICE
    return LogEvent("svc", kind, subject, {"n": n}, T, f"e{n}")


PG_EXAMPLES = 8
"""Examples of the property tests on PostgreSQL (a database each; the SQL is SQLite's)."""


def test_property_subjects_and_audience_equal_the_naive_filter(
    locations: Locations, backend: str
) -> None:
    numbers = iter(range(10_000))

    @settings(
        max_examples=60 if backend == "sqlite" else PG_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        appended=st.lists(st.tuples(st.sampled_from(EventKind), subjects_st), max_size=40),
        wanted=st.lists(subjects_st, max_size=6),
        audience=st.sampled_from([None, *AUDIENCES]),
        start=st.integers(min_value=0, max_value=45),
        limit=st.none() | st.integers(min_value=0, max_value=45),
    )
    def check(
        appended: list[tuple[EventKind, str]],
        wanted: list[str],
        audience: str | None,
        start: int,
        limit: int | None,
    ) -> None:
        events = [make(n, kind, subject) for n, (kind, subject) in enumerate(appended)]
        with MerkleLogbook(locations.new(f"l-{next(numbers)}.sqlite")) as book:
            book.append_many(events)
            kinds = AUDIENCES[audience] if audience is not None else None
            naive = [
                (seq, event)
                for seq, event in enumerate(events)
                if event.subject in wanted
                and (kinds is None or event.kind in kinds)
                and seq >= start
            ][:limit]
            got = book.entries(subjects=set(wanted), audience=audience, start=start, limit=limit)
            assert [(e.seq, e.event) for e in got] == naive
            positions = book.positions(subjects=wanted, audience=audience, start=start, limit=limit)
            assert positions == [seq for seq, _ in naive]
            assert book.entries(subjects=[], audience=audience) == []

    check()


def test_property_chunked_subjects_equal_the_naive_filter(
    locations: Locations, backend: str
) -> None:
    """Sets larger than one IN holds (500) give the same answer as the naive filter."""
    numbers = iter(range(10_000))

    @settings(
        max_examples=25 if backend == "sqlite" else PG_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        appended=st.lists(st.sampled_from(POOL), max_size=30),
        wanted=st.sets(st.sampled_from(POOL) | st.text(max_size=3), max_size=1200),
        limit=st.none() | st.integers(min_value=0, max_value=10),
    )
    def check(appended: list[str], wanted: set[str], limit: int | None) -> None:
        events = [make(n, EventKind.ARRIVAL, subject) for n, subject in enumerate(appended)]
        with MerkleLogbook(locations.new(f"l-{next(numbers)}.sqlite")) as book:
            book.append_many(events)
            naive = [seq for seq, event in enumerate(events) if event.subject in wanted][:limit]
            assert [e.seq for e in book.entries(subjects=wanted, limit=limit)] == naive

    check()


def test_the_empty_set_of_subjects_gives_nothing(locations: Locations) -> None:
    """Every subject of the pool, NUL included (which PostgreSQL's text cannot hold)."""
    with MerkleLogbook(locations.new("l.sqlite")) as book:
        book.append_many(make(n, EventKind.ARRIVAL, s) for n, s in enumerate(POOL))
        assert len(book.entries()) == len(POOL)
        empties: list[Collection[str]] = [[], set(), (), frozenset()]
        for empty in empties:
            assert book.entries(subjects=empty) == []
            assert book.entries(subjects=empty, audience="authority") == []
            assert book.positions(subjects=empty) == []
        assert [e.event.subject for e in book.entries(subjects=["a"])] == ["a"]
        assert [e.event.subject for e in book.entries(subjects=["a\x00b"])] == ["a\x00b"]
