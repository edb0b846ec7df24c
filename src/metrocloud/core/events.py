"""Logbook events: what every service reports to the logbook."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any


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


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class LogEvent:
    """One relevant event. ``event_id`` makes appending idempotent under redelivery."""

    actor: str
    kind: EventKind
    subject: str
    detail: dict[str, Any] = field(default_factory=dict)
    time: datetime = field(default_factory=utc_now)
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)

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
        d = json.loads(raw)
        return cls(
            actor=str(d["actor"]),
            kind=EventKind(d["kind"]),
            subject=str(d["subject"]),
            detail=dict(d["detail"]),
            time=datetime.fromisoformat(d["time"]),
            event_id=str(d["event_id"]),
        )
