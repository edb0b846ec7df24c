"""FHE parameter sets: one BFV set per circuit depth, each with a known-answer test.

Every parameter set can fail silently (wrong numbers, no error), so a set is only used after
``tests/fhe`` has checked it against the plaintext reference at the edges of its range.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

# Smallest prime above 2**40 that is 1 mod 32768, so batching works up to N = 16384.
PLAINTEXT_MODULUS_40 = 1_099_511_922_689


@dataclass(frozen=True)
class FheParameters:
    """Parameters of a BFV crypto context.

    ``plaintext_modulus`` bounds every value the circuit may produce: results are exact
    integers modulo it. ``multiplicative_depth`` is what the tariff circuit consumes; a
    multiplication by a non-constant plaintext mask counts as one level.
    """

    scheme: str = "BFV"
    plaintext_modulus: int = PLAINTEXT_MODULUS_40
    multiplicative_depth: int = 1
    security_level: str = "HEStd_128_classic"
    ring_dimension: int = 8192

    def __post_init__(self) -> None:
        if self.scheme != "BFV":
            raise ValueError(f"scheme {self.scheme!r} not supported (BFV only)")
        if self.plaintext_modulus % (2 * self.ring_dimension) != 1:
            raise ValueError(
                "plaintext_modulus must be 1 mod 2N for batching "
                f"(t={self.plaintext_modulus}, N={self.ring_dimension})"
            )
        if not 1 <= self.multiplicative_depth <= 30:
            raise ValueError("multiplicative_depth must be between 1 and 30")

    @property
    def slots(self) -> int:
        return self.ring_dimension

    @property
    def row(self) -> int:
        """Slots per row: rotations act on each of the two rows of N/2 slots."""
        return self.ring_dimension // 2

    def to_dict(self) -> dict[str, int | str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> FheParameters:
        return cls(
            scheme=str(d["scheme"]),
            plaintext_modulus=int(str(d["plaintext_modulus"])),
            multiplicative_depth=int(str(d["multiplicative_depth"])),
            security_level=str(d["security_level"]),
            ring_dimension=int(str(d["ring_dimension"])),
        )

    @property
    def parameters_id(self) -> str:
        """A short stable name of this parameter set (travels with every ciphertext)."""
        raw = json.dumps(self.to_dict(), sort_keys=True).encode()
        return "bfv-" + hashlib.sha256(raw).hexdigest()[:16]


DEFAULT_PARAMETERS = FheParameters()
