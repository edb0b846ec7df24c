"""Merkle tree hashes and proofs exactly as RFC 9162 (section 2.1) defines them.

Pure functions over SHA-256, no storage. A leaf hash is ``SHA-256(0x00 || entry)``, an
interior node ``SHA-256(0x01 || left || right)``; the hash of the empty tree is
``SHA-256("")``. A tree of ``n`` leaves splits at ``k``, the largest power of two below
``n``.

Proof generation takes ``subtree(start, end)``: the Merkle tree hash of leaves
``[start, end)``. A store answers it from the perfect subtrees it keeps
(:mod:`metrocloud.logbook.tree`); :func:`tree_hash` computes it from a list of leaf hashes.
Verification follows the RFC's algorithms (2.1.3.2 and 2.1.4.2) step by step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

SubtreeHash = Callable[[int, int], bytes]
"""``subtree(start, end)``: the Merkle tree hash of leaves ``start`` to ``end - 1``."""


def leaf_hash(entry: bytes) -> bytes:
    """``SHA-256(0x00 || entry)``."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """``k``: the largest power of two smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def tree_hash(leaves: Sequence[bytes]) -> bytes:
    """The Merkle tree hash (MTH) of a list of leaf hashes."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    # Pairing left to right, level by level, and carrying an odd last node up unchanged
    # gives the same tree as splitting at the largest power of two (RFC 9162, 2.1.1).
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def _check_range(index: int, size: int) -> None:
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")


def inclusion_proof(index: int, size: int, subtree: SubtreeHash) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162, 2.1.3.1: the audit path of leaf ``index``."""
    _check_range(index, size)
    proof: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = split(end - start)
        if index < start + k:
            proof.append(subtree(start + k, end))
            end = start + k
        else:
            proof.append(subtree(start, start + k))
            start += k
    proof.reverse()  # the path runs from the leaf up
    return proof


def consistency_proof(old_size: int, new_size: int, subtree: SubtreeHash) -> list[bytes]:
    """PROOF(old_size, D[0:new_size]) of RFC 9162, 2.1.4.1."""
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
    proof: list[bytes] = []
    if old_size == new_size:
        return proof
    # SUBPROOF(m, D[start:end], b), unrolled: each step adds the sibling it leaves behind.
    start, end, m, complete = 0, new_size, old_size, True
    while True:
        n = end - start
        if m == n:
            if not complete:
                proof.append(subtree(start, end))
            break
        k = split(n)
        if m <= k:
            proof.append(subtree(start + k, end))
            end = start + k
        else:
            proof.append(subtree(start, start + k))
            start, m, complete = start + k, m - k, False
    proof.reverse()
    return proof


def root_from_inclusion(entry_hash: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` leads to from leaf ``index`` (RFC 9162, 2.1.3.2).

    Raises ``ValueError`` when the proof has the wrong length for ``index`` and ``size``.
    """
    _check_range(index, size)
    if len(entry_hash) != HASH_SIZE or any(len(p) != HASH_SIZE for p in proof):
        raise ValueError(f"hashes must be {HASH_SIZE} bytes")
    fn, sn = index, size - 1
    r = entry_hash
    for p in proof:
        if sn == 0:
            raise ValueError("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("inclusion proof too short")
    return r


def verify_inclusion(
    entry_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` shows leaf ``entry_hash`` at ``index`` in the tree ``root``."""
    if len(root) != HASH_SIZE:
        return False
    try:
        return root_from_inclusion(entry_hash, index, size, proof) == root
    except ValueError:
        return False


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows the tree ``new_root`` extends ``old_root`` (RFC 9162, 2.1.4.2)."""
    if not 0 < old_size <= new_size:
        return False
    if any(len(h) != HASH_SIZE for h in (old_root, new_root, *proof)):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
