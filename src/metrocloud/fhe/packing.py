"""What a gateway knows about each quarter hour, and the integrity protocol's fingerprints.

The tariff programs lay intervals out in their own way (coefficients for the register
tariffs, lanes of bit planes for the comparison tariffs); both carry, next to the energies,
the reading indices and a pseudo-random fingerprint of (meter, index) for every interval,
so that the receiver can check that exactly the expected readings went into a result.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def index_fingerprint(meter_id: str, index: int) -> int:
    """A 32-bit pseudo-random tag of (meter, index): sums of tags do not cancel out."""
    digest = hashlib.sha256(b"metrocloud/index/" + meter_id.encode() + b"/" + str(index).encode())
    return int.from_bytes(digest.digest()[:4], "big")


@dataclass(frozen=True)
class Interval:
    """The energy of one quarter hour as the gateway derived it from the meter register."""

    index: int
    energy_wh: int
    error: bool = False
