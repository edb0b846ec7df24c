"""The smart meter gateway's meter side (LMN), its three logs and its two views.

BSI TR-03109-1 splits a gateway's world in three networks, and this module follows it:

- **LMN** (local metrological network): :meth:`SmartMeterGateway.receive` takes a frame as
  it came off the radio or the M-Bus, checks it (link-layer CRCs, a meter it knows, the
  meter's key, the 0x2F2F decryption check or the reading's signature), refuses replays
  (an access number seen before for that meter, a reading not newer than the last one),
  time-stamps what it accepts and keeps it as the meter's readings. What the gateway seals
  for the cloud is derived from those (:class:`ReceivedReadings`, a reading source for
  :class:`metrocloud.field.gateway.Gateway`).
- **WAN**, the gateway administrator: configures meters, their keys and their customer
  (:meth:`configure_meter`, :meth:`change_key`, :meth:`remove_meter`), their tariff
  profiles (:meth:`set_tariff`) and the consumers' HAN passwords; sees no readings (the
  HTTPS API of :mod:`metrocloud.field.wan`).
- **HAN**, the consumer: sees the readings of their own meters only
  (:meth:`consumer_view`; the local display page of :mod:`metrocloud.field.han`).

Three logs, each for its audience (:class:`GatewayLog`): the **consumer** log (readings
received, per customer), the **administrator** (system) log (configuration, rejections,
without measured values) and the **metrological** log for the authority (what bears on the
measurement's legal validity: keys changed, meters added or removed, refused telegrams that
point at manipulation).
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from metrocloud.core.clock import EPOCH, INTERVAL, index_time
from metrocloud.core.errors import Rejected
from metrocloud.field.lmn import FrameRefused, LmnReading, read_frame
from metrocloud.field.meter import MeterStatus, Reading
from metrocloud.field.sensors import Medium, Security

Audience = Literal["consumer", "administrator", "metrological"]
AUDIENCES: tuple[Audience, ...] = ("consumer", "administrator", "metrological")

REPLAY_WINDOW = 64
"""Access numbers remembered per meter (an 8-bit counter: a quarter of its range)."""
CLOCK_SKEW = timedelta(minutes=5)
"""How far a reading's own time may lie ahead of the gateway's clock."""


@dataclass(frozen=True)
class LogEntry:
    at: str
    kind: str
    meter: str | None
    detail: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(
            {"at": self.at, "kind": self.kind, "meter": self.meter, "detail": self.detail},
            sort_keys=True,
        )


_Reading = tuple[datetime, str, str, int, int, str]
"""A consumer-log reading not yet made a :class:`LogEntry`: time, meter, customer, index,
register, unit (atomic values only, so the garbage collector does not track it)."""


class GatewayLog:
    """An append-only log for one audience, kept in memory and, with a folder, as JSONL.

    Readings (:meth:`append_reading`, the consumer log's bulk: one per accepted telegram)
    are kept compact and become :class:`LogEntry` objects, in order with the rest, when the
    log is read (:attr:`entries`, :meth:`kinds`) or flushed. The consumer log's file is
    written in batches of :attr:`BATCH` entries and on :meth:`flush` (and at exit); the
    administrator's and the authority's at once, entry by entry.
    """

    BATCH = 1024

    def __init__(self, audience: Audience, folder: Path | None = None) -> None:
        self.audience = audience
        self.path = None if folder is None else folder / f"{audience}.jsonl"
        self._lock = threading.Lock()
        self._entries: list[LogEntry] = []
        self._pending: list[LogEntry | _Reading] = []
        """Appended, not yet in ``_entries`` (nor in the file)."""
        self._batch = self.BATCH if audience == "consumer" else 1
        if self.path is not None:  # what is still pending at exit goes to the file then
            weakref.finalize(self, GatewayLog._write_out, self._lock, self._pending, self.path)

    @property
    def entries(self) -> list[LogEntry]:
        """Every entry, oldest first."""
        with self._lock:
            if self._pending:
                self._settle()
            return self._entries

    def append(self, at: datetime, kind: str, meter: str | None, detail: dict[str, Any]) -> None:
        entry = LogEntry(at.isoformat(), kind, meter, detail)
        with self._lock:
            self._pending.append(entry)
            if self.path is not None and len(self._pending) >= self._batch:
                self._settle()

    def append_reading(
        self, at: datetime, meter: str, customer: str, index: int, register: int, unit: str
    ) -> None:
        """:meth:`append` of a ``reading`` entry (detail: customer, index, register, unit),
        kept compact until read."""
        with self._lock:
            self._pending.append((at, meter, customer, index, register, unit))
            if self.path is not None and len(self._pending) >= self._batch:
                self._settle()

    def flush(self) -> None:
        """Write every entry to the file (with a folder; without, nothing to do)."""
        if self.path is not None:
            with self._lock:
                self._settle()

    def kinds(self) -> list[str]:
        return [e.kind for e in self.entries]

    def _settle(self) -> None:
        """Pending entries into ``_entries`` and the file. Call with the lock held."""
        if not self._pending:
            return
        settled = list(_entries(self._pending))
        self._pending.clear()
        self._entries.extend(settled)
        if self.path is not None:
            _write(self.path, settled)

    @staticmethod
    def _write_out(lock: threading.Lock, pending: list[LogEntry | _Reading], path: Path) -> None:
        """The log is gone (or the interpreter exits): what is pending goes to the file,
        unless its folder is gone too."""
        with lock:
            if pending and path.parent.is_dir():
                _write(path, list(_entries(pending)))
            pending.clear()


def _entries(pending: list[LogEntry | _Reading]) -> Iterator[LogEntry]:
    for item in pending:
        if isinstance(item, LogEntry):
            yield item
        else:
            at, meter, customer, index, register, unit = item
            detail = {"customer": customer, "index": index, "register": register, "unit": unit}
            yield LogEntry(at.isoformat(), "reading", meter, detail)


def _write(path: Path, entries: list[LogEntry]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write("".join(entry.to_json() + "\n" for entry in entries))


@dataclass(frozen=True)
class MeterRecord:
    """A meter as the gateway administrator configured it."""

    meter_id: str
    """``<manufacturer>-<number>``, as the meter's address reads."""
    medium: Medium
    customer_id: str
    security: Security
    key: bytes | None = None
    """The AES-128 key (security AES) or the meter's public key in DER (security ECDSA)."""


@dataclass(frozen=True)
class TariffProfile:
    """A meter's tariff use case as the administrator set it: a TR-03109 tariff program
    (``taf1`` … ``taf4``) and its configuration. The WAN side checks it with the program
    (:func:`metrocloud.tariffs.load_program`) before it is set; the gateway only keeps it."""

    name: str
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Accepted:
    reading: Reading
    received_at: datetime
    access_number: int
    cyclic: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class LmnOutcome:
    """What the gateway did with one frame."""

    accepted: bool
    reason: str
    detail: str
    meter_id: str | None = None
    reading: Accepted | None = None


@dataclass
class _MeterState:
    record: MeterRecord
    readings: dict[int, Accepted] = field(default_factory=dict)
    access_numbers: deque[int] = field(default_factory=lambda: deque(maxlen=REPLAY_WINDOW))
    last_index: int | None = None


class SmartMeterGateway:
    """One gateway's LMN side, its configuration and its logs."""

    def __init__(
        self,
        gateway_id: str,
        *,
        folder: Path | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.gateway_id = gateway_id
        self.clock = clock
        self.logs: dict[Audience, GatewayLog] = {a: GatewayLog(a, folder) for a in AUDIENCES}
        self._meters: dict[str, _MeterState] = {}
        self._lock = threading.Lock()
        self.receiving = True
        """False while a scenario interrupts the gateway's receiver."""
        self._tariffs: dict[str, TariffProfile] = {}

    # -- WAN: the gateway administrator ---------------------------------------------------
    def configure_meter(self, record: MeterRecord, by: str = "administrator") -> None:
        """Add a meter (or replace its configuration, keeping its readings)."""
        now = self.clock()
        with self._lock:
            known = self._meters.get(record.meter_id)
            if known is None:
                self._meters[record.meter_id] = _MeterState(record)
            else:
                known.record = record
        what = "meter-added" if known is None else "meter-reconfigured"
        detail = {"by": by, "medium": record.medium.value, "security": record.security.value}
        self.logs["administrator"].append(now, what, record.meter_id, detail)
        self.logs["metrological"].append(now, what, record.meter_id, detail)

    def change_key(self, meter_id: str, key: bytes, by: str = "administrator") -> None:
        now = self.clock()
        state = self._state(meter_id)
        state.record = MeterRecord(
            meter_id, state.record.medium, state.record.customer_id, state.record.security, key
        )
        self.logs["administrator"].append(now, "key-changed", meter_id, {"by": by})
        self.logs["metrological"].append(now, "key-changed", meter_id, {"by": by})

    def remove_meter(self, meter_id: str, by: str = "administrator") -> None:
        now = self.clock()
        with self._lock:
            self._meters.pop(meter_id, None)
            self._tariffs.pop(meter_id, None)
        self.logs["administrator"].append(now, "meter-removed", meter_id, {"by": by})
        self.logs["metrological"].append(now, "meter-removed", meter_id, {"by": by})

    def set_tariff(self, meter_id: str, profile: TariffProfile, by: str = "administrator") -> None:
        """Set the tariff profile of ``meter_id`` (``KeyError`` for a meter not configured)."""
        now = self.clock()
        with self._lock:
            self._state(meter_id)
            self._tariffs[meter_id] = TariffProfile(profile.name, dict(profile.config))
        detail = {"by": by, "tariff": profile.name, "config": dict(profile.config)}
        self.logs["administrator"].append(now, "tariff-changed", meter_id, detail)
        self.logs["metrological"].append(now, "tariff-changed", meter_id, detail)

    def tariff_of(self, meter_id: str) -> TariffProfile | None:
        """The tariff profile of ``meter_id``, None if none is set (``KeyError``: unknown)."""
        self._state(meter_id)
        held = self._tariffs.get(meter_id)
        return None if held is None else TariffProfile(held.name, dict(held.config))

    def consumer_password_set(self, customer_id: str, by: str = "administrator") -> None:
        """Log that ``by`` set the HAN password of ``customer_id``. The gateway keeps no
        password: its hash lives with the HAN side (:mod:`metrocloud.field.han`)."""
        now = self.clock()
        detail = {"by": by, "customer": customer_id}
        self.logs["administrator"].append(now, "consumer-password-set", None, detail)
        self.logs["metrological"].append(now, "consumer-password-set", None, detail)

    def log_han_login_throttled(self, customer_id: str, failures: int) -> None:
        """Log (for the administrator) that logins as ``customer_id`` on the HAN page now
        have to wait after ``failures`` wrong passwords in a row: someone may be guessing.
        ``customer_id`` is what was typed (at most 64 characters kept)."""
        detail = {"customer": customer_id[:64], "failures": failures}
        self.logs["administrator"].append(self.clock(), "han-login-throttled", None, detail)

    def meters(self) -> list[MeterRecord]:
        return [s.record for s in self._meters.values()]

    def _state(self, meter_id: str) -> _MeterState:
        try:
            return self._meters[meter_id]
        except KeyError:
            raise KeyError(f"gateway {self.gateway_id} knows no meter {meter_id}") from None

    # -- LMN: telegrams from the meters ---------------------------------------------------
    def receive(self, frame: bytes, *, wired: bool = False) -> LmnOutcome:
        """Check one frame and keep its reading; every refusal is logged with its reason."""
        now = self.clock()
        if not self.receiving:
            return LmnOutcome(False, "not-receiving", "the gateway's receiver is interrupted")
        try:
            found = read_frame(frame, self._credentials, wired=wired)
        except FrameRefused as exc:
            return self._refuse(now, exc.meter_id, exc.reason, exc.detail)
        except Rejected as exc:
            return self._refuse(now, None, exc.reason, exc.detail)
        state = self._meters[found.meter_id]  # read_frame knew its credentials
        try:
            accepted = self._check(state, found, now)
        except Rejected as exc:
            return self._refuse(now, found.meter_id, exc.reason, exc.detail)
        reading = accepted.reading
        with self._lock:
            state.readings[reading.index] = accepted
            state.access_numbers.append(found.access_number)
            state.last_index = reading.index
        record = state.record
        self.logs["consumer"].append_reading(
            now, found.meter_id, record.customer_id, reading.index, reading.register_wh,
            record.medium.unit,
        )  # fmt: skip
        return LmnOutcome(True, "accepted", "reading kept", found.meter_id, accepted)

    def _credentials(self, meter_id: str) -> tuple[Security, bytes | None] | None:
        state = self._meters.get(meter_id)
        return None if state is None else (state.record.security, state.record.key)

    def _check(self, state: _MeterState, found: LmnReading, now: datetime) -> Accepted:
        if found.medium is not state.record.medium:
            raise Rejected(
                "wrong-medium",
                f"{found.meter_id} is a {state.record.medium.value} meter, the telegram "
                f"announces {found.medium.value}",
            )
        if found.access_number in state.access_numbers:
            raise Rejected(
                "replayed-access-number",
                f"access number {found.access_number} of {found.meter_id} was seen before",
            )
        if found.time > now + CLOCK_SKEW:
            raise Rejected("reading-from-the-future", f"reading time {found.time.isoformat()}")
        index, off = divmod(found.time - EPOCH, INTERVAL)
        if off:
            raise Rejected(
                "reading-off-the-grid", f"{found.time.isoformat()} is no quarter-hour boundary"
            )
        if state.last_index is not None and index <= state.last_index:
            raise Rejected(
                "stale-reading",
                f"reading of {index_time(index).isoformat()} is not newer than the last one",
            )
        status = MeterStatus.ERROR if found.status else MeterStatus.OK
        reading = Reading(found.meter_id, index, found.register, status)
        return Accepted(reading, now, found.access_number, found.cyclic)

    def _refuse(self, now: datetime, meter_id: str | None, reason: str, detail: str) -> LmnOutcome:
        entry = {"reason": reason, "detail": detail}
        self.logs["administrator"].append(now, "telegram-refused", meter_id, entry)
        if reason in METROLOGICAL_REASONS:
            self.logs["metrological"].append(now, "telegram-refused", meter_id, entry)
        return LmnOutcome(False, reason, detail, meter_id)

    # -- HAN: the consumer -------------------------------------------------------------------
    def consumer_view(self, customer_id: str) -> dict[str, list[Accepted]]:
        """The readings of ``customer_id``'s meters, oldest first; nobody else's."""
        return {
            meter_id: [s.readings[i] for i in sorted(s.readings)]
            for meter_id, s in self._meters.items()
            if s.record.customer_id == customer_id
        }

    # -- to the cloud ----------------------------------------------------------------------
    def source(self, meter_id: str) -> ReceivedReadings:
        """The readings of ``meter_id`` as a reading source for the sealing gateway."""
        state = self._state(meter_id)
        return ReceivedReadings(meter_id, state.record.medium.max_interval, state.readings)


METROLOGICAL_REASONS = frozenset(
    {
        "decryption-check-failed",
        "bad-signature",
        "replayed-access-number",
        "stale-reading",
        "reading-from-the-future",
        "unknown-meter",
        "not-encrypted",
        "unsigned-reading",
        "wrong-medium",
    }
)
"""Refusals that may point at manipulation: the authority's log keeps them too."""


@dataclass(frozen=True)
class ReceivedReadings:
    """A meter's readings as its gateway received them, as a reading source.

    A reading that never arrived is reported with :attr:`MeterStatus.ERROR` and the last
    register before it, and so is the first reading after a gap (its register holds energy
    of the missing quarter hours too): energy that cannot be placed in its quarter hour goes
    to the error register (TR-03109), as :func:`metrocloud.field.gateway.derive_intervals`
    derives it.
    """

    meter_id: str
    max_interval_wh: int
    received: dict[int, Accepted]

    def readings(self, start_index: int, count: int) -> list[Reading]:
        out: list[Reading] = []
        before = [i for i in self.received if i <= start_index]
        last = self.received[max(before)].reading.register_wh if before else 0
        for index in range(start_index, start_index + count):
            got = self.received.get(index)
            if got is None:
                out.append(Reading(self.meter_id, index, last, MeterStatus.ERROR))
                continue
            reading = got.reading
            if index - 1 not in self.received and index > min(start_index, *self.received):
                reading = Reading(self.meter_id, index, reading.register_wh, MeterStatus.ERROR)
            last = reading.register_wh
            out.append(reading)
        return out
