"""Hash-chained, append-only logbook in SQLite: the cloud's tamper-evident audit trail.

Every entry has a 0-based sequence number ``seq`` and a 32-byte ``entry_hash``::

    entry_hash[n] = SHA-256(0x00 || prev_hash[n] || event_n.to_json())
    prev_hash[0]  = 32 zero bytes,  prev_hash[n] = entry_hash[n - 1]

The ``0x00`` domain byte is the RFC 9162 leaf prefix, so the per-entry hash stays
leaf-hash-like when a Merkle transparency log replaces the chain behind the same
:class:`Logbook` interface. The *head* of the log is the hash of its last entry (32 zero
bytes when empty); a head and size seen earlier can be checked later with
:meth:`HashChainLogbook.verify_against` (the log must only have been appended to).

The database is opened in WAL mode with ``synchronous=FULL``. One instance may be shared by
several threads (one connection guarded by a lock), and several processes may append to the
same file: the read-last-then-insert of an append runs inside ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time as _time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from metrocloud.core.errors import MetrocloudError
from metrocloud.core.events import EventKind, LogEvent

__all__ = [
    "HASH_SIZE",
    "LEAF_PREFIX",
    "ZERO_HASH",
    "ChainVerdict",
    "HashChainLogbook",
    "LogEntry",
    "Logbook",
    "LogbookError",
    "chain_hash",
]

HASH_SIZE = 32
"""Length in bytes of every entry hash and of a head (SHA-256)."""

LEAF_PREFIX = b"\x00"
"""Domain-separation byte hashed in front of every entry (RFC 9162 leaf prefix)."""

ZERO_HASH = bytes(HASH_SIZE)
"""``prev_hash`` of entry 0 and the head of an empty log."""

_SCHEMA_VERSION = 1
_BUSY_TIMEOUT_S = 60.0

_COLUMNS = "seq, event_id, time, actor, kind, subject, detail, prev_hash, entry_hash"

_Row = tuple[Any, ...]


class LogbookError(MetrocloudError):
    """The logbook cannot be used: closed, unknown schema, or a stored entry is unreadable."""


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry of the log: the event at position ``seq`` and its chained hash."""

    seq: int
    event: LogEvent
    entry_hash: bytes
    prev_hash: bytes


@dataclass(frozen=True, slots=True)
class ChainVerdict:
    """Outcome of a verification.

    ``size`` and ``head`` describe the log as stored when verified (``head`` is the stored
    hash of the last entry, 32 zero bytes when empty). When ``ok`` is false,
    ``first_bad_seq`` is the first sequence number found to be missing, altered or out of
    place, and ``reason`` says what is wrong; when ``ok`` is true, ``reason`` is ``"ok"``.
    """

    ok: bool
    size: int
    head: bytes
    first_bad_seq: int | None
    reason: str


class Logbook(Protocol):
    """What every logbook implementation offers (hash chain now, Merkle tree later)."""

    def append(self, event: LogEvent) -> LogEntry: ...

    def append_many(self, events: Iterable[LogEvent]) -> list[LogEntry]: ...

    def size(self) -> int: ...

    def head(self) -> bytes: ...

    def get(self, seq: int) -> LogEntry: ...

    def entries(
        self,
        *,
        kind: EventKind | None = None,
        subject_prefix: str | None = None,
        start: int = 0,
        limit: int | None = None,
    ) -> list[LogEntry]: ...

    def verify(self) -> ChainVerdict: ...

    def verify_against(self, head: bytes, size: int) -> ChainVerdict: ...

    def close(self) -> None: ...


def chain_hash(prev_hash: bytes, event: LogEvent) -> bytes:
    """The entry hash of ``event`` chained after ``prev_hash``."""
    return _hash(prev_hash, event.to_json())


def _hash(prev_hash: bytes, canonical: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + prev_hash + canonical).digest()


def _canonical_detail(detail: dict[str, Any]) -> str:
    # Exactly the rendering LogEvent.to_json uses for the detail member.
    return json.dumps(detail, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class _Prepared:
    event: LogEvent
    canonical: bytes
    time: str
    detail: str


def _prepare(event: LogEvent) -> _Prepared:
    """Normalise ``event`` to what the stored columns reproduce, or refuse it."""
    try:
        raw = event.to_json()
        normal = LogEvent.from_json(raw)
        canonical = normal.to_json()
        detail = _canonical_detail(normal.detail)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"event {event.event_id!r} is not JSON-serialisable: {exc}") from exc
    if canonical != raw:
        raise ValueError(f"event {event.event_id!r} does not serialise canonically")
    return _Prepared(normal, canonical, normal.time.isoformat(), detail)


class _Undecodable(Exception):
    pass


def _decode_event(row: _Row, *, strict: bool) -> LogEvent:
    """Rebuild the event from the stored columns of ``row`` (``_COLUMNS`` order).

    ``strict`` also requires the stored time and detail to be in canonical form, so that a
    rewrite that keeps the meaning but changes the stored text is still caught.
    """
    _, event_id, time_s, actor, kind_s, subject, detail_s = row[:7]
    for name, value in (
        ("event_id", event_id),
        ("time", time_s),
        ("actor", actor),
        ("kind", kind_s),
        ("subject", subject),
        ("detail", detail_s),
    ):
        if not isinstance(value, str):
            raise _Undecodable(f"{name} is not text")
    try:
        kind = EventKind(kind_s)
    except ValueError:
        raise _Undecodable(f"unknown kind {kind_s!r}") from None
    try:
        when = datetime.fromisoformat(time_s)
    except ValueError:
        raise _Undecodable("time is not an ISO 8601 timestamp") from None
    try:
        detail = json.loads(detail_s)
    except ValueError:
        raise _Undecodable("detail is not JSON") from None
    if not isinstance(detail, dict):
        raise _Undecodable("detail is not a JSON object")
    if strict:
        if when.isoformat() != time_s:
            raise _Undecodable("time is not in canonical form")
        if _canonical_detail(detail) != detail_s:
            raise _Undecodable("detail is not canonical JSON")
    try:
        return LogEvent(
            actor=actor, kind=kind, subject=subject, detail=detail, time=when, event_id=event_id
        )
    except ValueError as exc:  # a typed event whose detail fails its check
        raise _Undecodable(str(exc)) from None


def _entry_from_row(row: _Row) -> LogEntry:
    try:
        event = _decode_event(row, strict=False)
    except _Undecodable as exc:
        raise LogbookError(f"stored entry {row[0]} is unreadable ({exc}); run verify()") from None
    prev_hash, entry_hash = row[7], row[8]
    if not isinstance(prev_hash, bytes) or not isinstance(entry_hash, bytes):
        raise LogbookError(f"stored entry {row[0]} has non-binary hashes; run verify()")
    return LogEntry(seq=row[0], event=event, entry_hash=entry_hash, prev_hash=prev_hash)


class HashChainLogbook:
    """Hash-chained append-only log of :class:`LogEvent` in an SQLite file at ``path``.

    Appending is idempotent on ``event_id``: an event whose id is already in the log is not
    added again; the existing entry is returned (even if the redelivered copy differs).
    """

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._lock = threading.RLock()
        conn = sqlite3.connect(
            str(self._path),
            timeout=_BUSY_TIMEOUT_S,
            isolation_level=None,  # autocommit; transactions are explicit
            check_same_thread=False,
        )
        try:
            self._setup(conn)
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn

    # -- lifecycle -------------------------------------------------------------------------

    @staticmethod
    def _setup(conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        deadline = _time.monotonic() + _BUSY_TIMEOUT_S
        while True:  # switching to WAL can report "locked" without waiting on its own
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or _time.monotonic() > deadline:
                    raise
                _time.sleep(0.01)
        if str(mode).lower() != "wal":
            raise LogbookError(f"cannot put the logbook database in WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        if conn.execute("PRAGMA user_version").fetchone()[0] == _SCHEMA_VERSION:
            return  # already set up: no write lock needed just to open
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                conn.execute(
                    """
                    CREATE TABLE IF NOT EXISTS entries (
                        seq        INTEGER PRIMARY KEY,
                        event_id   TEXT NOT NULL UNIQUE,
                        time       TEXT NOT NULL,
                        actor      TEXT NOT NULL,
                        kind       TEXT NOT NULL,
                        subject    TEXT NOT NULL,
                        detail     TEXT NOT NULL,
                        prev_hash  BLOB NOT NULL,
                        entry_hash BLOB NOT NULL
                    )
                    """
                )
                conn.execute("CREATE INDEX IF NOT EXISTS entries_kind ON entries (kind, seq)")
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            elif version != _SCHEMA_VERSION:
                raise LogbookError(f"unknown logbook schema version {version}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @property
    def path(self) -> Path:
        return self._path

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LogbookError("logbook is closed")
        return self._conn

    def close(self) -> None:
        """Close the database; further use raises :class:`LogbookError`. Idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> HashChainLogbook:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- appending -------------------------------------------------------------------------

    def append(self, event: LogEvent) -> LogEntry:
        """Append ``event``; if its ``event_id`` is already logged, return that entry."""
        return self.append_many([event])[0]

    def append_many(self, events: Iterable[LogEvent]) -> list[LogEntry]:
        """Append ``events`` in order in one transaction; one entry per input event.

        Events whose ``event_id`` is already logged (or repeats earlier in the batch) are
        not added again; their existing entry is returned in their place.
        """
        prepared = [_prepare(event) for event in events]
        if not prepared:
            return []
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                last = conn.execute(
                    "SELECT seq, entry_hash FROM entries ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                next_seq: int = 0 if last is None else last[0] + 1
                prev: bytes = ZERO_HASH if last is None else last[1]
                if not isinstance(prev, bytes):
                    raise LogbookError(f"stored entry {next_seq - 1} has a non-binary hash")
                done: dict[str, LogEntry] = {}
                out: list[LogEntry] = []
                for item in prepared:
                    event_id = item.event.event_id
                    entry = done.get(event_id)
                    if entry is None:
                        row = conn.execute(
                            f"SELECT {_COLUMNS} FROM entries WHERE event_id = ?", (event_id,)
                        ).fetchone()
                        if row is not None:
                            entry = _entry_from_row(row)
                        else:
                            digest = _hash(prev, item.canonical)
                            conn.execute(
                                f"INSERT INTO entries ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                                (
                                    next_seq,
                                    event_id,
                                    item.time,
                                    item.event.actor,
                                    item.event.kind.value,
                                    item.event.subject,
                                    item.detail,
                                    prev,
                                    digest,
                                ),
                            )
                            entry = LogEntry(next_seq, item.event, digest, prev)
                            next_seq += 1
                            prev = digest
                        done[event_id] = entry
                    out.append(entry)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return out

    # -- reading ---------------------------------------------------------------------------

    def size(self) -> int:
        """Number of entries, i.e. the sequence number the next entry will get."""
        with self._lock:
            row = self._db().execute("SELECT MAX(seq) FROM entries").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def head(self) -> bytes:
        """Stored hash of the last entry; 32 zero bytes for an empty log."""
        with self._lock:
            row = (
                self._db()
                .execute("SELECT entry_hash FROM entries ORDER BY seq DESC LIMIT 1")
                .fetchone()
            )
        if row is None:
            return ZERO_HASH
        if not isinstance(row[0], bytes):
            raise LogbookError("the last stored entry has a non-binary hash; run verify()")
        return row[0]

    def get(self, seq: int) -> LogEntry:
        """The entry at ``seq``; :class:`IndexError` if there is none."""
        with self._lock:
            row = (
                self._db().execute(f"SELECT {_COLUMNS} FROM entries WHERE seq = ?", (seq,))
            ).fetchone()
        if row is None:
            raise IndexError(f"no logbook entry {seq}")
        return _entry_from_row(row)

    def entries(
        self,
        *,
        kind: EventKind | None = None,
        subject_prefix: str | None = None,
        start: int = 0,
        limit: int | None = None,
    ) -> list[LogEntry]:
        """Entries with ``seq >= start`` in sequence order, optionally filtered.

        ``kind`` keeps one kind of event; ``subject_prefix`` keeps subjects that start with
        it (exact, case-sensitive); ``limit`` caps the number of entries returned.
        """
        if start < 0:
            raise ValueError("start must be >= 0")
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        where = ["seq >= ?"]
        params: list[Any] = [start]
        if kind is not None:
            where.append("kind = ?")
            params.append(EventKind(kind).value)
        if subject_prefix:
            prefix = subject_prefix.encode("utf-8")
            where.append("substr(CAST(subject AS BLOB), 1, ?) = ?")
            params += [len(prefix), prefix]
        params.append(-1 if limit is None else limit)
        sql = f"SELECT {_COLUMNS} FROM entries WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
        with self._lock:
            rows = self._db().execute(sql, params).fetchall()
        return [_entry_from_row(row) for row in rows]

    # -- verification ----------------------------------------------------------------------

    def verify(self) -> ChainVerdict:
        """Recompute every hash from the stored fields and check contiguity and prev links."""
        return self._walk(None)

    def verify_against(self, head: bytes, size: int) -> ChainVerdict:
        """Check that a log of ``size`` entries with ``head`` seen earlier is a prefix of
        this one (it was only appended to since) and that the whole chain verifies.

        A rollback (fewer than ``size`` entries now) or a rewritten history (entry
        ``size - 1`` no longer has hash ``head``, even if the rewritten chain is internally
        consistent) makes the verdict fail.
        """
        head = bytes(head)
        if len(head) != HASH_SIZE:
            raise ValueError(f"head must be {HASH_SIZE} bytes")
        if size < 0:
            raise ValueError("size must be >= 0")
        if size == 0:
            if head != ZERO_HASH:
                raise ValueError("the head of an empty log is 32 zero bytes")
            return self._walk(None)
        return self._walk((size - 1, head))

    def _walk(self, checkpoint: tuple[int, bytes] | None) -> ChainVerdict:
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN")  # one read snapshot for the whole walk
            try:
                return self._walk_locked(conn, checkpoint)
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    @staticmethod
    def _walk_locked(
        conn: sqlite3.Connection, checkpoint: tuple[int, bytes] | None
    ) -> ChainVerdict:
        count: int = conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
        last = conn.execute("SELECT entry_hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        head = bytes(last[0]) if last is not None and isinstance(last[0], bytes) else ZERO_HASH

        def bad(seq: int, reason: str) -> ChainVerdict:
            return ChainVerdict(False, count, head, seq, reason)

        expected = 0
        prev = ZERO_HASH
        for row in conn.execute(f"SELECT {_COLUMNS} FROM entries ORDER BY seq"):
            seq: int = row[0]
            if seq < 0:
                continue  # out of range; shows up as a gap where it is missing
            if seq != expected:
                return bad(expected, f"entry {expected} missing: sequence gap")
            problem = _check_row(row, prev)
            if problem is not None:
                return bad(seq, problem)
            entry_hash: bytes = row[8]
            if checkpoint is not None and seq == checkpoint[0] and entry_hash != checkpoint[1]:
                return bad(
                    seq,
                    f"entry {seq} differs from the previously seen head of size {seq + 1}: "
                    "history rewritten",
                )
            prev = entry_hash
            expected += 1
        if expected < count:
            return bad(expected, f"entry {expected} missing: sequence gap")
        if checkpoint is not None and count <= checkpoint[0]:
            return bad(
                count,
                f"log shrank to {count} entries from a previously seen {checkpoint[0] + 1}: "
                f"entry {count} missing (rollback)",
            )
        return ChainVerdict(True, count, head, None, "ok")


def _check_row(row: _Row, expected_prev: bytes) -> str | None:
    """Why the stored ``row`` does not chain after ``expected_prev``; None if it does."""
    seq: int = row[0]
    prev_hash, entry_hash = row[7], row[8]
    if prev_hash != expected_prev:
        if seq == 0:
            return "chain broken at 0: prev_hash of the first entry is not 32 zero bytes"
        return f"chain broken at {seq}: prev_hash does not match entry {seq - 1}"
    try:
        event = _decode_event(row, strict=True)
    except _Undecodable as exc:
        return f"entry {seq} altered: {exc}"
    if not isinstance(entry_hash, bytes) or entry_hash != chain_hash(prev_hash, event):
        return f"entry {seq} altered: hash mismatch"
    return None
