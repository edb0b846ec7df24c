"""The stored Merkle tree, on SQLite and on PostgreSQL: the same roots and proofs as the pure
RFC 9162 functions, however it was batched or reopened, and tampering with stored rows found
at the right index."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.logbook.merkle import (
    EMPTY_ROOT,
    leaf_hash,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)
from metrocloud.logbook.tree import MerkleTree, TreeError
from postgres_fixture import Locations, raw_execute

ENTRIES = [f"entry {i}".encode() * (1 + i % 3) for i in range(300)]
LEAVES = [leaf_hash(e) for e in ENTRIES]


@pytest.fixture
def tree(locations: Locations) -> Iterator[MerkleTree]:
    with MerkleTree(locations.new("tree.sqlite")) as t:
        t.append_many(ENTRIES)
        yield t


def test_empty_tree(locations: Locations) -> None:
    with MerkleTree(locations.new("empty.sqlite")) as t:
        assert t.size == 0 and t.root() == EMPTY_ROOT
        with pytest.raises(TreeError):
            t.inclusion_proof(0)


def test_roots_of_every_size_match_the_rfc(tree: MerkleTree) -> None:
    for size in range(len(ENTRIES) + 1):
        assert tree.root(size) == tree_hash(LEAVES[:size]), size
    with pytest.raises(TreeError):
        tree.root(len(ENTRIES) + 1)


def test_every_inclusion_proof_verifies(tree: MerkleTree) -> None:
    for size in (1, 2, 3, 7, 8, 9, 100, 255, 256, 257, 300):
        root = tree_hash(LEAVES[:size])
        for index in {0, 1 % size, size // 2, size - 1}:
            proof = tree.inclusion_proof(index, size)
            assert verify_inclusion(LEAVES[index], index, size, proof, root)
            assert not verify_inclusion(LEAVES[index - 1], index, size, proof, root) or size == 1


def test_every_consistency_proof_verifies(tree: MerkleTree) -> None:
    for old in range(1, len(ENTRIES) + 1, 7):
        for new in (old, min(len(ENTRIES), old + 1), len(ENTRIES)):
            proof = tree.consistency_proof(old, new)
            assert verify_consistency(
                old, new, tree_hash(LEAVES[:old]), tree_hash(LEAVES[:new]), proof
            ), (old, new)


def test_any_batching_gives_the_same_tree(locations: Locations, backend: str) -> None:
    """Fewer examples on PostgreSQL (a database each): the SQL is the same."""
    numbers = iter(range(1000))

    @settings(max_examples=25 if backend == "sqlite" else 5, deadline=None)
    @given(cuts=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=12))
    def check(cuts: list[int]) -> None:
        location = locations.new(f"tree-{next(numbers)}.sqlite")
        with MerkleTree(location) as t:
            start = 0
            for cut in cuts:
                batch = ENTRIES[start : start + cut]  # empty once past the last entry
                assert t.append_many(batch) == start
                start += len(batch)
            assert t.root() == tree_hash(LEAVES[:start])
        with MerkleTree(location) as reopened:  # the frontier is rebuilt from the stored nodes
            assert reopened.size == start and reopened.root() == tree_hash(LEAVES[:start])
            reopened.append(b"one more")
            assert reopened.root() == tree_hash([*LEAVES[:start], leaf_hash(b"one more")])

    check()


def test_entries_and_leaf_hashes_are_kept(tree: MerkleTree) -> None:
    assert tree.entry(42) == ENTRIES[42] and tree.leaf_hash(42) == LEAVES[42]
    assert tree.first_mismatch() is None


def _tamper(tree: MerkleTree, sql: str, *args: object) -> None:
    raw_execute(tree.location, sql, *args)


@pytest.mark.parametrize(
    ("label", "sql", "args", "first_bad"),
    [
        ("changed entry", "UPDATE leaves SET entry = ? WHERE idx = ?", (b"forged", 137), 137),
        ("changed leaf hash", "UPDATE leaves SET leaf_hash = ? WHERE idx = ?", (bytes(32), 5), 5),
        ("deleted entry", "DELETE FROM leaves WHERE idx = ?", (200,), 200),
        (
            "changed node",
            "UPDATE nodes SET hash = ? WHERE level = 3 AND idx = ?",
            (bytes(32), 4),
            32,
        ),
    ],
)
def test_tampering_names_the_first_bad_entry(
    tree: MerkleTree, label: str, sql: str, args: tuple[object, ...], first_bad: int
) -> None:
    _tamper(tree, sql, *args)
    assert tree.first_mismatch() == first_bad, label


def test_reordered_entries_are_found(tree: MerkleTree) -> None:
    _tamper(tree, "UPDATE leaves SET idx = -1 WHERE idx = 10")
    _tamper(tree, "UPDATE leaves SET idx = 10 WHERE idx = 11")
    _tamper(tree, "UPDATE leaves SET idx = 11 WHERE idx = -1")
    assert tree.first_mismatch() == 10


def test_an_inserted_entry_is_found(tree: MerkleTree) -> None:
    """Shifting entries up to make room changes every leaf after the insertion point."""
    _tamper(tree, "UPDATE leaves SET idx = idx + 1000 WHERE idx >= 50")
    _tamper(tree, "UPDATE leaves SET idx = idx - 999 WHERE idx >= 1000")
    _tamper(tree, "INSERT INTO leaves VALUES (50, ?, ?)", leaf_hash(b"inserted"), b"inserted")
    assert tree.first_mismatch() == 50


def test_ranges_outside_the_tree_are_refused(tree: MerkleTree) -> None:
    for bad in ((0, 0), (5, 3), (-1, 2), (0, 301)):
        with pytest.raises(TreeError):
            tree.subtree(*bad)
    with pytest.raises(TreeError):
        tree.inclusion_proof(300, 300)
    with pytest.raises(TreeError):
        tree.consistency_proof(0, 10)
    with pytest.raises(TreeError):
        tree.consistency_proof(20, 10)
