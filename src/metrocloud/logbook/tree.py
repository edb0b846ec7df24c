"""An append-only RFC 9162 Merkle tree of byte entries in SQLite or PostgreSQL.

Tables::

    leaves(idx, leaf_hash, entry)   every entry with its leaf hash, idx = 0, 1, 2, ...
    nodes(level, idx, hash)         every perfect subtree once complete: leaves
                                    [idx * 2^level, (idx + 1) * 2^level), level >= 1

A perfect subtree never changes once complete, so its hash is written once and only read
afterwards: appending touches no stored row. The hash of any range, and with it the root
of any earlier size and every proof, is put together from at most two perfect subtrees per
level (:meth:`MerkleTree.subtree`), so proofs cost O(log² n) point reads at any size.

The *frontier* (the perfect subtrees that make up the current tree, at most one per level)
is kept in memory and rebuilt from ``nodes`` when the file is opened; an append of a batch
merges new leaves into it and inserts the completed nodes, all in one transaction.

The tree lives in a SQLite file (a path) or a PostgreSQL database (a ``postgresql://``
URL): the same tables and SQL on either, through :class:`~metrocloud.store.db.Database`.
One process appends; others may read (each opening its own instance). After a lost
PostgreSQL connection the writer reads its size and frontier again from the database, so
an append whose commit was in doubt is neither lost nor repeated.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import psycopg

from metrocloud.core.errors import MetrocloudError
from metrocloud.logbook.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    split,
)
from metrocloud.store.db import Database, connect, redacted

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leaves (
    idx {bigint} PRIMARY KEY, leaf_hash {blob} NOT NULL, entry {blob} NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    level {bigint} NOT NULL, idx {bigint} NOT NULL, hash {blob} NOT NULL,
    PRIMARY KEY (level, idx)
) {without_rowid};
"""


Subtree = tuple[int, int, bytes]
"""A perfect subtree: (level, index at that level, hash)."""


def _push(frontier: list[Subtree], index: int, digest: bytes) -> list[Subtree]:
    """Add leaf ``index`` to the right edge ``frontier``; returns the subtrees it completes.

    Equal-sized perfect subtrees at the right edge merge, as the digits of a binary counter
    carry: leaf 7 completes the subtrees of leaves 6-7, 4-7 and 0-7.
    """
    completed: list[Subtree] = []
    level, position, value = 0, index, digest
    while frontier and frontier[-1][0] == level:
        _, _, left = frontier.pop()
        level, position = level + 1, position >> 1
        value = node_hash(left, value)
        completed.append((level, position, value))
    frontier.append((level, position, value))
    return completed


class TreeError(MetrocloudError):
    """The tree's storage is unusable or a request is outside the tree."""


class MerkleTree:
    """Byte entries in an RFC 9162 Merkle tree, stored in SQLite at ``path`` or in the
    PostgreSQL database at a ``postgresql://`` URL.

    One writer process; one instance may be shared by threads (a lock guards the
    connection).
    """

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        """``read_only``: open an existing tree to read it (an auditor's tool), creating
        nothing and writing nothing; :class:`TreeError` if there is no tree."""
        self._db: Database = connect(path, timeout=30, read_only=read_only)
        self._lock = self._db.lock
        if not read_only:
            self._db.create(_SCHEMA)
            self._create()
            self._load()
            return
        try:
            self._load()
        except (sqlite3.Error, psycopg.Error) as exc:
            self._db.close()
            raise TreeError(f"no logbook tree there: {str(exc).strip()}") from exc

    def _create(self) -> None:
        """Hook for subclasses: more tables to create when the storage is opened."""

    def _load(self) -> None:
        """Read the size and the frontier from the database."""
        with self._lock:
            row = self._db.fetchone("SELECT COUNT(*) FROM leaves")
            self._size = 0 if row is None else int(row[0])
            self._frontier = self._load_frontier(self._size)
            self._generation = self._db.generation

    def _refresh(self) -> None:
        """After a reconnection (or a failed append) read the state again: an append whose
        commit was in doubt may or may not be in the database."""
        with self._lock:
            if self._db.generation != self._generation:
                self._load()

    @property
    def path(self) -> Path:
        """The SQLite file (a tree in PostgreSQL has none: see :attr:`location`)."""
        path = getattr(self._db, "path", None)
        if not isinstance(path, Path):
            raise TreeError(f"the tree is in {self.location}, not in a file")
        return path

    @property
    def location(self) -> str:
        """Where the tree is: the SQLite file's path or the PostgreSQL URL (no password)."""
        return redacted(self._db.location)

    # -- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> MerkleTree:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- appending ----------------------------------------------------------------------
    def append_many(self, entries: Sequence[bytes]) -> int:
        """Append ``entries`` in order in one transaction; returns the index of the first."""
        with self._lock:
            self._refresh()
            first = self._size
            frontier = list(self._frontier)
            leaves: list[tuple[int, bytes, bytes]] = []
            nodes: list[Subtree] = []
            for offset, entry in enumerate(entries):
                index = first + offset
                digest = leaf_hash(entry)
                leaves.append((index, digest, entry))
                nodes += _push(frontier, index, digest)
            if not leaves:
                return first
            db = self._db
            try:
                with db.transaction():
                    db.executemany("INSERT INTO leaves VALUES (?, ?, ?)", leaves)
                    db.executemany("INSERT INTO nodes VALUES (?, ?, ?)", nodes)
                    self._store_extra(db)
            except BaseException:
                self._generation = -1  # the commit may or may not have happened: reload
                raise
            self._size = first + len(leaves)
            self._frontier = frontier
            return first

    def append(self, entry: bytes) -> int:
        """Append one entry; returns its index."""
        return self.append_many([entry])

    def _store_extra(self, db: Database) -> None:
        """Hook for subclasses: more rows to write in an append's transaction."""

    # -- reading ------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self._size

    def root(self, size: int | None = None) -> bytes:
        """The root hash of the tree's first ``size`` entries (default: all)."""
        size = self._size if size is None else size
        if not 0 <= size <= self._size:
            raise TreeError(f"no tree of size {size}: the log has {self._size} entries")
        if size == self._size:  # the frontier holds the current root's parts
            if not self._frontier:
                return EMPTY_ROOT
            value = self._frontier[-1][2]
            for _, _, left in reversed(self._frontier[:-1]):
                value = node_hash(left, value)
            return value
        return self.subtree(0, size) if size else EMPTY_ROOT

    def entry(self, index: int) -> bytes:
        row = self._read("SELECT entry FROM leaves WHERE idx = ?", (index,))
        return bytes(row[0])

    def leaf_hash(self, index: int) -> bytes:
        row = self._read("SELECT leaf_hash FROM leaves WHERE idx = ?", (index,))
        return bytes(row[0])

    def subtree(self, start: int, end: int) -> bytes:
        """The Merkle tree hash of entries ``[start, end)`` (``0 <= start < end <= size``)."""
        if not 0 <= start < end <= self._size:
            raise TreeError(f"no range [{start}, {end}) in a tree of {self._size}")
        n = end - start
        if n & (n - 1) == 0 and start % n == 0:  # a perfect subtree: stored
            level = n.bit_length() - 1
            if level == 0:
                return self.leaf_hash(start)
            row = self._read(
                "SELECT hash FROM nodes WHERE level = ? AND idx = ?", (level, start >> level)
            )
            return bytes(row[0])
        k = split(n)
        return node_hash(self.subtree(start, start + k), self.subtree(start + k, end))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """The audit path of entry ``index`` in the tree of ``size`` entries."""
        size = self._size if size is None else size
        if not 0 <= index < size <= self._size:
            raise TreeError(f"no entry {index} in a tree of {size} (the log has {self._size})")
        return inclusion_proof(index, size, self.subtree)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """The proof that the tree of ``new_size`` entries extends that of ``old_size``."""
        new_size = self._size if new_size is None else new_size
        if not 0 < old_size <= new_size <= self._size:
            raise TreeError(
                f"no consistency proof from {old_size} to {new_size} (log has {self._size})"
            )
        return consistency_proof(old_size, new_size, self.subtree)

    def first_mismatch(self, batch: int = 65536) -> int | None:
        """Recompute every leaf and node hash from the stored entries.

        Returns the index of the first entry whose stored data does not hash to what the
        tree holds (a changed, deleted, inserted or reordered entry, or a changed node
        below it), or None when everything matches.
        """
        frontier: list[Subtree] = []
        expected = 0
        stored_nodes = self._db.fetchall("SELECT level, idx, hash FROM nodes")
        node_rows = {(int(r[0]), int(r[1])): bytes(r[2]) for r in stored_nodes}
        for offset in range(0, self._size, batch):
            rows = self._db.fetchall(
                "SELECT idx, leaf_hash, entry FROM leaves WHERE idx >= ? ORDER BY idx LIMIT ?",
                (offset, batch),
            )
            for idx, stored_leaf, entry in rows:
                if idx != expected or leaf_hash(bytes(entry)) != bytes(stored_leaf):
                    return expected
                for level, position, value in _push(frontier, int(idx), bytes(stored_leaf)):
                    if node_rows.get((level, position)) != value:
                        return position << level  # the first entry under the bad node
                expected += 1
        return None if expected == self._size else expected

    # -- internals ----------------------------------------------------------------------
    def _read(self, sql: str, args: tuple[int, ...]) -> tuple[bytes, ...]:
        row = self._db.fetchone(sql, args)
        if row is None:
            raise TreeError(f"the tree's storage lacks a row for {args}: damaged?")
        return tuple(row)

    def _load_frontier(self, size: int) -> list[Subtree]:
        """The perfect subtrees of a tree of ``size`` leaves, largest (leftmost) first."""
        frontier: list[Subtree] = []
        start = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                frontier.append((level, start >> level, self.subtree(start, start + (1 << level))))
                start += 1 << level
        return frontier
