"""Logbook events: what every service reports to the logbook.

Most kinds carry a free-form ``detail``. The kinds in :data:`REQUIRED_DETAIL` are *typed*:
their detail must hold the fields listed there, with the values :func:`check_detail` checks,
and :class:`LogEvent` refuses one that does not (also when it is read back with
:meth:`LogEvent.from_json`). Build them with the constructors below rather than by hand:

``software-update`` (:func:`software_update_event`), subject: the component
    ``component`` (str), ``old`` (the :class:`~metrocloud.core.software.SoftwareId` dict
    replaced, None for a first install), ``new`` (SoftwareId dict), ``result`` (one of
    :data:`UPDATE_RESULTS`), ``by`` (who pushed it: the manufacturer certificate's common
    name), and ``reason`` (str), required unless ``result`` is ``installed``.
``anomaly`` (:func:`anomaly_event`), subject: the component (or ``system``)
    ``component`` (str), ``state_from`` and ``state_to`` (one of :data:`ANOMALY_STATES`),
    ``metrics`` (name -> finite number), ``rule`` (str: the rule that fired).
``functionality-check`` (:func:`functionality_check_event`), subject: the tariff program
    ``program`` (str), ``program_version`` (str), ``verdict`` (one of :data:`CHECK_VERDICTS`;
    ``pass`` only with no failures), ``checks`` and ``failures`` (ints,
    ``0 <= failures <= checks``), ``round_id`` (str). Exactly these fields: no meter id and
    no customer id, since the authority's test meters must stay secret from the operator,
    who can read the log.
``certificate-issued`` (written by :mod:`metrocloud.pki.authority`), subject: the CN
    ``serial`` (hex), ``role``, ``issuer`` (the sub-CA), ``curve``, ``not_after`` (ISO 8601)
    and ``requested_by``, all str.
``certificate-revoked`` (written by :mod:`metrocloud.pki.authority`), subject: the CN
    ``serial`` (hex), ``reason``, ``issuer`` (``root`` or the sub-CA) and ``requested_by``,
    all str.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from metrocloud.core.software import SoftwareId


class EventKind(str, Enum):
    """The kinds of relevant events the logbook records."""

    ARRIVAL = "arrival"
    REJECTION = "rejection"
    PROCESSING = "processing"
    DUPLICATE = "duplicate"
    STORAGE = "storage"
    KEY_REGISTRATION = "key-registration"
    USER_ACTIVITY = "user-activity"
    VERIFICATION_FAILURE = "verification-failure"
    VERIFICATION_SUCCESS = "verification-success"
    SERVICE = "service"
    CERTIFICATE_ISSUED = "certificate-issued"
    CERTIFICATE_REVOKED = "certificate-revoked"
    SOFTWARE_UPDATE = "software-update"
    ANOMALY = "anomaly"
    FUNCTIONALITY_CHECK = "functionality-check"


UpdateResult = Literal["installed", "refused", "failed", "rolled-back"]
AnomalyState = Literal["green", "yellow", "red"]
CheckVerdict = Literal["pass", "fail"]

UPDATE_RESULTS: frozenset[str] = frozenset(get_args(UpdateResult))
ANOMALY_STATES: frozenset[str] = frozenset(get_args(AnomalyState))
CHECK_VERDICTS: frozenset[str] = frozenset(get_args(CheckVerdict))

REQUIRED_DETAIL: dict[EventKind, frozenset[str]] = {
    EventKind.SOFTWARE_UPDATE: frozenset({"component", "old", "new", "result", "by"}),
    EventKind.ANOMALY: frozenset({"component", "state_from", "state_to", "metrics", "rule"}),
    EventKind.FUNCTIONALITY_CHECK: frozenset(
        {"program", "program_version", "verdict", "checks", "failures", "round_id"}
    ),
    EventKind.CERTIFICATE_ISSUED: frozenset(
        {"serial", "role", "issuer", "curve", "not_after", "requested_by"}
    ),
    EventKind.CERTIFICATE_REVOKED: frozenset({"serial", "reason", "issuer", "requested_by"}),
}
"""The detail fields each typed kind must carry (other kinds: free-form detail)."""

CLOSED_DETAIL: frozenset[EventKind] = frozenset({EventKind.FUNCTIONALITY_CHECK})
"""Typed kinds whose detail may hold nothing but the required fields."""

_SOFTWARE_ID_FIELDS = ("name", "version", "checksum")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class _Invalid(Exception):
    """A detail field's value is wrong (the message says why)."""


_Check = Callable[[Any], None]
"""Checks one detail field's value; raises :class:`_Invalid` saying why it is wrong."""


def _text(value: Any, *, empty: bool = False) -> None:
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, not {type(value).__name__}")
    if not empty and not value:
        raise _Invalid("must not be empty")


def _one_of(allowed: frozenset[str]) -> _Check:
    def check(value: Any) -> None:
        if not isinstance(value, str) or value not in allowed:
            raise _Invalid(f"is {value!r}, not one of {sorted(allowed)}")

    return check


def _count(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Invalid(f"must be an integer >= 0, not {value!r}")


def _software_id(value: Any) -> None:
    if not isinstance(value, dict):
        raise _Invalid(f"must be a software id (name, version, checksum), not {value!r}")
    if sorted(value) != sorted(_SOFTWARE_ID_FIELDS):
        raise _Invalid(f"must have exactly the keys {list(_SOFTWARE_ID_FIELDS)}")
    for key in _SOFTWARE_ID_FIELDS:
        try:
            _text(value[key])
        except _Invalid as exc:
            raise _Invalid(f"{key} {exc}") from None


def _optional_software_id(value: Any) -> None:
    if value is not None:
        _software_id(value)


def _metrics(value: Any) -> None:
    if not isinstance(value, dict):
        raise _Invalid(f"must be an object of name -> number, not {value!r}")
    for name, number in value.items():
        if not isinstance(name, str) or not name:
            raise _Invalid(f"has a bad metric name {name!r}")
        if (
            isinstance(number, bool)
            or not isinstance(number, (int, float))
            or not math.isfinite(number)
        ):
            raise _Invalid(f"{name!r} is {number!r}, not a finite number")


def _iso_time(value: Any) -> None:
    _text(value)
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise _Invalid(f"is {value!r}, not an ISO 8601 time") from None


_FIELDS: dict[EventKind, dict[str, _Check]] = {
    EventKind.SOFTWARE_UPDATE: {
        "component": _text,
        "old": _optional_software_id,
        "new": _optional_software_id,
        "result": _one_of(UPDATE_RESULTS),
        "by": _text,
        "reason": _text,
    },
    EventKind.ANOMALY: {
        "component": _text,
        "state_from": _one_of(ANOMALY_STATES),
        "state_to": _one_of(ANOMALY_STATES),
        "metrics": _metrics,
        "rule": _text,
    },
    EventKind.FUNCTIONALITY_CHECK: {
        "program": _text,
        "program_version": _text,
        "verdict": _one_of(CHECK_VERDICTS),
        "checks": _count,
        "failures": _count,
        "round_id": _text,
    },
    EventKind.CERTIFICATE_ISSUED: {
        "serial": _text,
        "role": _text,
        "issuer": _text,
        "curve": _text,
        "not_after": _iso_time,
        "requested_by": lambda value: _text(value, empty=True),
    },
    EventKind.CERTIFICATE_REVOKED: {
        "serial": _text,
        "reason": _text,
        "issuer": _text,
        "requested_by": lambda value: _text(value, empty=True),
    },
}
"""How each field of a typed kind is checked (optional fields too: ``reason``)."""

_SUBJECT_IS: dict[EventKind, str] = {
    EventKind.SOFTWARE_UPDATE: "component",
    EventKind.ANOMALY: "component",
    EventKind.FUNCTIONALITY_CHECK: "program",
}
"""Typed kinds whose subject must equal a detail field (never a meter or customer id)."""


def check_detail(event: LogEvent) -> None:
    """Check the detail of a typed ``event`` (a kind in :data:`REQUIRED_DETAIL`).

    Raises :class:`ValueError` naming the kind and the missing or invalid field; an event
    of another kind passes unchecked.
    """
    try:
        kind = EventKind(event.kind)
    except ValueError:
        raise ValueError(f"unknown event kind {event.kind!r}") from None
    if kind not in REQUIRED_DETAIL:
        return
    detail = event.detail
    if not isinstance(detail, Mapping):
        raise ValueError(f"{kind.value} event: detail must be an object, not {detail!r}")
    missing = sorted(REQUIRED_DETAIL[kind] - set(detail))
    if missing:
        names = ", ".join(repr(name) for name in missing)
        are = "s are" if len(missing) > 1 else " is"
        raise ValueError(f"{kind.value} event: detail field{are} missing: {names}")
    fields = _FIELDS[kind]
    for name in sorted(detail, key=str):
        if name not in fields:
            if kind in CLOSED_DETAIL:
                raise ValueError(
                    f"{kind.value} event: detail field {name!r} is not allowed; only "
                    f"{sorted(REQUIRED_DETAIL[kind])}"
                )
            continue
        try:
            fields[name](detail[name])
        except _Invalid as exc:
            raise ValueError(f"{kind.value} event: detail field {name!r} {exc}") from None
    _check_consistency(kind, event.subject, detail)


def _check_consistency(kind: EventKind, subject: str, detail: Mapping[str, Any]) -> None:
    """What one field alone cannot show: fields that depend on each other, and the subject."""

    def bad(name: str, why: str) -> ValueError:
        return ValueError(f"{kind.value} event: detail field {name!r} {why}")

    result = detail.get("result")
    if kind is EventKind.SOFTWARE_UPDATE and result != "installed" and "reason" not in detail:
        raise bad("reason", f"is missing (required when the result is {result!r})")
    if kind is EventKind.SOFTWARE_UPDATE and result != "refused" and detail["new"] is None:
        raise bad("new", f"is missing (only a refused package may lack one, not {result!r})")
    if kind is EventKind.FUNCTIONALITY_CHECK:
        checks, failures = detail["checks"], detail["failures"]
        if failures > checks:
            raise bad("failures", f"is {failures}, more than checks ({checks})")
        if detail["verdict"] == "pass" and failures:
            raise bad("verdict", f"is 'pass' with {failures} failures")
    owner = _SUBJECT_IS.get(kind)
    if owner is not None and subject != detail[owner]:
        raise ValueError(
            f"{kind.value} event: subject {subject!r} is not the detail field {owner!r} "
            f"({detail[owner]!r})"
        )


@dataclass(frozen=True)
class LogEvent:
    """One relevant event. ``event_id`` makes appending idempotent under redelivery.

    An event of a typed kind (:data:`REQUIRED_DETAIL`) is checked with :func:`check_detail`
    when it is made: a bad one raises :class:`ValueError`.
    """

    actor: str
    kind: EventKind
    subject: str
    detail: dict[str, Any] = field(default_factory=dict)
    time: datetime = field(default_factory=utc_now)
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if self.kind in REQUIRED_DETAIL:
            check_detail(self)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "event_id": self.event_id,
                "time": self.time.isoformat(),
                "actor": self.actor,
                "kind": self.kind.value,
                "subject": self.subject,
                "detail": self.detail,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> LogEvent:
        """The event in ``raw``; :class:`ValueError` (or KeyError, TypeError) if it is not
        one, a typed event whose detail fails :func:`check_detail` included."""
        d = json.loads(raw)
        return cls(
            actor=str(d["actor"]),
            kind=EventKind(d["kind"]),
            subject=str(d["subject"]),
            detail=dict(d["detail"]),
            time=datetime.fromisoformat(d["time"]),
            event_id=str(d["event_id"]),
        )


def _make(
    actor: str,
    kind: EventKind,
    subject: str,
    detail: dict[str, Any],
    time: datetime | None,
    event_id: str | None,
) -> LogEvent:
    return LogEvent(
        actor=actor,
        kind=kind,
        subject=subject,
        detail=detail,
        time=time if time is not None else utc_now(),
        event_id=event_id if event_id is not None else uuid.uuid4().hex,
    )


def software_update_event(
    actor: str,
    component: str,
    old: SoftwareId | None,
    new: SoftwareId | None,
    result: UpdateResult,
    by: str,
    reason: str | None = None,
    *,
    time: datetime | None = None,
    event_id: str | None = None,
) -> LogEvent:
    """Software of ``component`` updated from ``old`` (None: first install) to ``new``,
    pushed by ``by`` (the manufacturer certificate's CN); ``reason`` unless installed.
    ``new`` is None only for a refused package whose identification could not be read."""
    detail: dict[str, Any] = {
        "component": component,
        "old": None if old is None else old.to_dict(),
        "new": None if new is None else new.to_dict(),
        "result": result,
        "by": by,
    }
    if reason is not None:
        detail["reason"] = reason
    return _make(actor, EventKind.SOFTWARE_UPDATE, component, detail, time, event_id)


def anomaly_event(
    actor: str,
    component: str,
    state_from: AnomalyState,
    state_to: AnomalyState,
    metrics: Mapping[str, float],
    rule: str,
    *,
    time: datetime | None = None,
    event_id: str | None = None,
) -> LogEvent:
    """``component`` (or ``system``) went from ``state_from`` to ``state_to`` by ``rule``,
    on the ``metrics`` that made it fire."""
    detail: dict[str, Any] = {
        "component": component,
        "state_from": state_from,
        "state_to": state_to,
        "metrics": dict(metrics),
        "rule": rule,
    }
    return _make(actor, EventKind.ANOMALY, component, detail, time, event_id)


def functionality_check_event(
    actor: str,
    program: str,
    program_version: str,
    verdict: CheckVerdict,
    checks: int,
    failures: int,
    round_id: str,
    *,
    time: datetime | None = None,
    event_id: str | None = None,
) -> LogEvent:
    """A round of the authority's functionality check of tariff ``program``: ``checks``
    checks, ``failures`` failed. Deliberately no meter or customer id (see module doc)."""
    detail: dict[str, Any] = {
        "program": program,
        "program_version": program_version,
        "verdict": verdict,
        "checks": checks,
        "failures": failures,
        "round_id": round_id,
    }
    return _make(actor, EventKind.FUNCTIONALITY_CHECK, program, detail, time, event_id)
