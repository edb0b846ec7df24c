"""The logbook as an RFC 9162 transparency log: events as leaves of a Merkle tree.

Each entry's leaf is the canonical JSON of its :class:`~metrocloud.core.events.LogEvent`
(``LogEvent.to_json``), so a leaf hash is ``SHA-256(0x00 || event JSON)`` and any RFC 9162
verifier can check an entry with its inclusion proof. The head of the log is the tree's
root hash; a head seen earlier is checked with a consistency proof.

Besides the tree (:class:`~metrocloud.logbook.tree.MerkleTree`: leaves and perfect-subtree
nodes) one table, ``events``, indexes the events by id, kind, subject and actor, for
idempotent appends and filtered reads. Reads return what the leaves hold, never what the
index says, so an index that was tampered with can hide an entry from a filter but not
change one; ``verify`` also checks the index against the leaves.

Implements the :class:`~metrocloud.logbook.chain.Logbook` interface of the hash chain it
replaces, with ``head()`` the root hash (``SHA-256("")`` for the empty log).

The log is kept in a SQLite file or a PostgreSQL database (:func:`open_logbook`), with the
same tables and SQL on either; one process (the logbook service) appends, others read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from metrocloud.core.events import EventKind, LogEvent
from metrocloud.logbook.chain import ChainVerdict, LogbookError, LogEntry, _prepare
from metrocloud.logbook.merkle import HASH_SIZE, verify_consistency
from metrocloud.logbook.tree import MerkleTree, TreeError
from metrocloud.store.db import Database

_INDEX = """
CREATE TABLE IF NOT EXISTS events (
    seq {bigint} PRIMARY KEY, event_id {key} NOT NULL UNIQUE, actor {key} NOT NULL,
    kind {key} NOT NULL, subject {key} NOT NULL
);
CREATE INDEX IF NOT EXISTS events_kind ON events (kind, seq);
"""

AUDIENCES: dict[str, frozenset[EventKind] | None] = {
    "authority": None,  # everything
    "gateway-administrator": frozenset(
        {
            EventKind.ARRIVAL,
            EventKind.REJECTION,
            EventKind.KEY_REGISTRATION,
            EventKind.SERVICE,
            EventKind.CERTIFICATE_ISSUED,
            EventKind.CERTIFICATE_REVOKED,
            EventKind.SOFTWARE_UPDATE,
            EventKind.ANOMALY,
        }
    ),
    "consumer": frozenset(
        {
            EventKind.ARRIVAL,
            EventKind.PROCESSING,
            EventKind.STORAGE,
            EventKind.KEY_REGISTRATION,
            EventKind.USER_ACTIVITY,
            EventKind.VERIFICATION_FAILURE,
            EventKind.VERIFICATION_SUCCESS,
            EventKind.SOFTWARE_UPDATE,
        }
    ),
}
"""The kinds each audience's view shows (None: all), filtered from the one tree, as a smart
meter gateway keeps separate logs for consumer, administrator and authority.

Of the typed kinds (:data:`~metrocloud.core.events.REQUIRED_DETAIL`): ``software-update`` is
shown to the gateway administrator, who runs the system, and to the consumer, who is to see
that the software measuring and billing them changed; ``anomaly`` (the system's health) to
the administrator only; ``functionality-check`` to the authority only, since its rounds run
on test meters that must stay secret (the event itself carries no meter id either). The
authority sees everything. A consumer's view is further narrowed to the consumer's own
subjects with ``subjects=`` (:meth:`MerkleLogbook.entries`)."""

SUBJECTS_PER_QUERY = 500
"""How many exact subjects one SQL ``IN (...)`` holds; more are read in several queries."""


def _subject_list(subjects: Collection[str]) -> list[str]:
    """``subjects`` checked, without repeats, sorted (so chunks do not overlap)."""
    if isinstance(subjects, (str, bytes)):
        raise TypeError("subjects must be a collection of subjects, not one string")
    wanted = set(subjects)
    for subject in wanted:
        if not isinstance(subject, str):
            raise TypeError(f"a subject must be a string, not {subject!r}")
    return sorted(wanted)


def _event(raw: bytes, seq: int) -> LogEvent:
    try:
        return LogEvent.from_json(raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise LogbookError(f"stored entry {seq} is unreadable ({exc}); run verify()") from None


class MerkleLogbook(MerkleTree):
    """Append-only logbook of events in an RFC 9162 Merkle tree (SQLite at ``path``, or
    PostgreSQL at a ``postgresql://`` URL)."""

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self._pending_index: list[tuple[Any, ...]] = []
        super().__init__(path, read_only=read_only)

    def _create(self) -> None:
        self._db.create(_INDEX)

    def __enter__(self) -> MerkleLogbook:
        return self

    # -- appending ----------------------------------------------------------------------
    def append(self, event: LogEvent) -> LogEntry:  # type: ignore[override]
        """Append ``event``; if its ``event_id`` is already logged, return that entry."""
        return self.append_events([event])[0]

    def append_many(self, events: Iterable[LogEvent]) -> list[LogEntry]:  # type: ignore[override]
        return self.append_events(events)

    def append_events(self, events: Iterable[LogEvent]) -> list[LogEntry]:
        """Append ``events`` in order, in one transaction; one entry per input event.

        An event whose ``event_id`` is already logged (or repeats in the batch) is not
        added again: its existing entry is returned in its place.
        """
        return [self.get(seq) for seq in self.append_positions(events)]

    def append_positions(self, events: Iterable[LogEvent]) -> list[int]:
        """As :meth:`append_events`, returning only each event's position (no read-back:
        the logbook service's path)."""
        prepared = [_prepare(event) for event in events]
        ids = [p.event.event_id for p in prepared]
        with self._lock:
            known = self._known(ids)
            fresh: list[bytes] = []
            index_rows: list[tuple[int, str, str, str, str]] = []
            places: list[int] = []
            for item in prepared:
                event = item.event
                if event.event_id not in known:
                    seq = self.size + len(fresh)
                    known[event.event_id] = seq
                    fresh.append(item.canonical)
                    index_rows.append(
                        (seq, event.event_id, event.actor, event.kind.value, event.subject)
                    )
                places.append(known[event.event_id])
            if fresh:
                self._append(fresh, index_rows)
            return places

    def _known(self, ids: list[str]) -> dict[str, int]:
        """The positions of the events of ``ids`` already logged, read with the size and
        frontier of the same connection (read again if it had to be opened again)."""
        while True:
            self._refresh()
            generation = self._db.generation
            known: dict[str, int] = {}
            for chunk in range(0, len(ids), 500):
                part = ids[chunk : chunk + 500]
                marks = ",".join("?" * len(part))
                for event_id, seq in self._db.fetchall(
                    f"SELECT event_id, seq FROM events WHERE event_id IN ({marks})",
                    [self._db.key(i) for i in part],
                ):
                    known[self._db.unkey(event_id)] = int(seq)
            if self._db.generation == generation:
                return known

    def _append(self, entries: list[bytes], index_rows: list[tuple[Any, ...]]) -> None:
        self._pending_index = index_rows
        try:
            MerkleTree.append_many(self, entries)
        finally:
            self._pending_index = []

    def _store_extra(self, db: Database) -> None:
        key = db.key
        db.executemany(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
            [(seq, *map(key, texts)) for seq, *texts in self._pending_index],
        )

    # -- reading ------------------------------------------------------------------------
    def head(self) -> bytes:
        """The root hash of the whole log (``SHA-256("")`` when empty)."""
        return self.root()

    def get(self, seq: int) -> LogEntry:
        """The entry at ``seq``; :class:`IndexError` if there is none."""
        if not 0 <= seq < self.size:
            raise IndexError(f"no logbook entry {seq}")
        row = self._db.fetchone("SELECT entry, leaf_hash FROM leaves WHERE idx = ?", (seq,))
        if row is None:
            raise LogbookError(f"stored entry {seq} is missing; run verify()")
        return LogEntry(seq, _event(bytes(row[0]), seq), bytes(row[1]), b"")

    def entries(
        self,
        *,
        kind: EventKind | None = None,
        subject_prefix: str | None = None,
        start: int = 0,
        limit: int | None = None,
        audience: str | None = None,
        subjects: Collection[str] | None = None,
    ) -> list[LogEntry]:
        """Entries with ``seq >= start`` in order, filtered by kind, subject prefix, the
        ``audience``'s view (:data:`AUDIENCES`) and ``subjects`` (exact subjects, such as a
        customer's name and meter ids: a customer's view); ``limit`` caps how many."""
        rows = self._select(
            "l.idx, l.entry, l.leaf_hash",
            "events e JOIN leaves l ON l.idx = e.seq",
            kind,
            subject_prefix,
            start,
            limit,
            audience,
            subjects,
        )
        return [LogEntry(int(s), _event(bytes(e), int(s)), bytes(h), b"") for s, e, h in rows]

    def positions(
        self,
        *,
        kind: EventKind | None = None,
        subject_prefix: str | None = None,
        start: int = 0,
        limit: int | None = None,
        audience: str | None = None,
        subjects: Collection[str] | None = None,
    ) -> list[int]:
        """The sequence numbers :meth:`entries` would return, from the index alone (so a
        reader of raw leaves is served even where a stored entry no longer parses)."""
        rows = self._select(
            "e.seq", "events e", kind, subject_prefix, start, limit, audience, subjects
        )
        return [int(row[0]) for row in rows]

    def _select(
        self,
        columns: str,
        source: str,
        kind: EventKind | None,
        subject_prefix: str | None,
        start: int,
        limit: int | None,
        audience: str | None,
        subjects: Collection[str] | None,
    ) -> list[tuple[Any, ...]]:
        """``columns`` (the first one the seq) of the matching rows of ``source``, by seq.

        With ``subjects``, one query per :data:`SUBJECTS_PER_QUERY` of them (each ``IN`` a
        plain bound list, exact to the byte), in one read transaction; each query is
        limited too, so the first ``limit`` rows of all of them are the answer.
        """
        where, params = self._filter(kind, subject_prefix, start, limit, audience)
        tail = [self._db.unlimited if limit is None else limit]
        if subjects is None:
            groups: list[list[str] | None] = [None]
        else:
            wanted = _subject_list(subjects)
            step = SUBJECTS_PER_QUERY
            groups = [wanted[i : i + step] for i in range(0, len(wanted), step)]
        rows: list[tuple[Any, ...]] = []
        with contextlib.ExitStack() as stack:
            if len(groups) > 1:  # the chunks see one state of the log
                stack.enter_context(self._db.transaction(write=False))
            for group in groups:
                clause, values = where, params
                if group is not None:
                    clause = f"{where} AND e.subject IN ({','.join('?' * len(group))})"
                    values = [*params, *map(self._db.key, group)]
                sql = f"SELECT {columns} FROM {source} WHERE {clause} ORDER BY e.seq LIMIT ?"
                rows += self._db.fetchall(sql, [*values, *tail])
        if len(groups) > 1:
            rows.sort(key=lambda row: int(row[0]))
            if limit is not None:
                del rows[limit:]
        return rows

    def _filter(
        self,
        kind: EventKind | None,
        subject_prefix: str | None,
        start: int,
        limit: int | None,
        audience: str | None,
    ) -> tuple[str, list[Any]]:
        """The WHERE clause (on ``events e``) and its parameters, without subjects."""
        if start < 0 or (limit is not None and limit < 0):
            raise ValueError("start and limit must be >= 0")
        where: list[str] = ["e.seq >= ?"]
        params: list[Any] = [start]
        if kind is not None:
            where.append("e.kind = ?")
            params.append(self._db.key(EventKind(kind).value))
        if audience is not None:
            if audience not in AUDIENCES:
                raise ValueError(f"unknown audience {audience!r}; one of {sorted(AUDIENCES)}")
            kinds = AUDIENCES[audience]
            if kinds is not None:
                where.append(f"e.kind IN ({','.join('?' * len(kinds))})")
                params += [self._db.key(k) for k in sorted(k.value for k in kinds)]
        if subject_prefix:
            prefix = subject_prefix.encode("utf-8")
            subject = self._db.key_bytes("e.subject")
            where.append(f"substr({subject}, 1, CAST(? AS INTEGER)) = ?")
            params += [len(prefix), prefix]
        return " AND ".join(where), params

    # -- verification -------------------------------------------------------------------
    def verify(self) -> ChainVerdict:
        """Recompute every leaf and node from the stored events; check the index too."""
        head = self.root()
        bad = self.first_mismatch()
        if bad is not None:
            return ChainVerdict(
                False, self.size, head, bad, f"entry {bad} does not match the tree: altered"
            )
        rows = self._db.fetchall(
            "SELECT l.idx, l.entry, e.seq, e.event_id, e.kind, e.subject, e.actor "
            "FROM leaves l LEFT JOIN events e ON e.seq = l.idx ORDER BY l.idx"
        )
        for idx, raw, seq, event_id, kind, subject, actor in rows:
            try:
                event = LogEvent.from_json(bytes(raw))
            except (ValueError, KeyError, TypeError) as exc:
                return ChainVerdict(
                    False, self.size, head, int(idx), f"entry {idx} is not a valid event: {exc}"
                )
            unkey = self._db.unkey
            texts = (event_id, kind, subject, actor)
            indexed = (seq, *(None if t is None else unkey(t) for t in texts))
            if indexed != (idx, event.event_id, event.kind.value, event.subject, event.actor):
                return ChainVerdict(
                    False, self.size, head, int(idx), f"index of entry {idx} altered"
                )
        return ChainVerdict(True, self.size, head, None, "ok")

    def verify_against(self, head: bytes, size: int) -> ChainVerdict:
        """Check that the log of ``size`` entries with root ``head`` seen earlier is a prefix
        of this one (appended to only), then verify the whole log."""
        if len(head) != HASH_SIZE or size < 0:
            raise ValueError(f"head must be {HASH_SIZE} bytes and size >= 0")
        current = self.root()
        if size > self.size:
            return ChainVerdict(
                False,
                self.size,
                current,
                self.size,
                f"log shrank to {self.size} entries from a previously seen {size}: "
                f"entry {self.size} missing (rollback)",
            )
        try:
            earlier = self.root(size)
        except TreeError as exc:
            return ChainVerdict(False, self.size, current, size, str(exc))
        if earlier != bytes(head):
            return ChainVerdict(
                False,
                self.size,
                current,
                size - 1,
                f"the first {size} entries differ from the head seen before: history rewritten",
            )
        if size and not verify_consistency(
            size, self.size, earlier, current, self.consistency_proof(size)
        ):
            return ChainVerdict(False, self.size, current, size, "inconsistent tree")
        return self.verify()


def open_logbook(path_or_url: Path | str, *, read_only: bool = False) -> MerkleLogbook:
    """The logbook in the SQLite file at a path (or ``sqlite:///<path>``), or in the
    PostgreSQL database at a ``postgresql://user@host:port/database`` URL; ``read_only``
    to audit it without a write."""
    return MerkleLogbook(path_or_url, read_only=read_only)
