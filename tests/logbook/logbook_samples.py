"""Sample data shared by the logbook tests."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

from metrocloud.logbook.checkpoint import LOG_ORIGIN, Checkpoint, sign_checkpoint
from metrocloud.logbook.merkle import consistency_proof, leaf_hash, tree_hash
from metrocloud.pki.identity import Identity

CERTIFICATE = {
    "serial": "1f",
    "role": "gateway",
    "issuer": "devices",
    "curve": "P-256",
    "not_after": "2027-11-21T12:00:00+00:00",
    "requested_by": "operator",
}
"""The detail a ``certificate-issued`` event must carry (``REQUIRED_DETAIL``)."""


@dataclass
class MemoryLog:
    """A log in memory: leaf hashes, signed checkpoints and consistency proofs, for driving
    witnesses without a logbook file."""

    identity: Identity
    leaves: list[bytes] = field(default_factory=list)
    origin: str = LOG_ORIGIN

    def grow(self, count: int, rng: random.Random) -> None:
        self.leaves += [leaf_hash(rng.randbytes(16)) for _ in range(count)]

    @property
    def size(self) -> int:
        return len(self.leaves)

    def checkpoint(self, size: int | None = None) -> Checkpoint:
        size = self.size if size is None else size
        return Checkpoint(self.origin, size, tree_hash(self.leaves[:size]))

    def note(self, size: int | None = None) -> str:
        return sign_checkpoint(self.checkpoint(size), self.origin, self.identity.key)

    def proof(self, old: int, new: int | None = None) -> list[bytes]:
        new = self.size if new is None else new
        if old == 0:
            return []
        return consistency_proof(old, new, lambda s, e: tree_hash(self.leaves[s:e]))

    def fork(self, at: int, rng: random.Random) -> MemoryLog:
        """A log with the same first ``at`` leaves and different ones after."""
        other = dataclasses.replace(self, leaves=self.leaves[:at])
        other.grow(self.size - at, rng)
        return other
