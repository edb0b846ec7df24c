"""Whether the broker's consumers still make progress (rule ``stalled``).

The cloud service asks the broker, every round, how many messages each durable consumer
has pending (delivered but not acknowledged, plus not yet delivered) and up to which
stream position it has acknowledged everything (its ack floor). A consumer that has
messages pending while its ack floor stands still is stalled: the component behind it no
longer handles readings. A consumer with nothing pending is never stalled, however long
its ack floor stands.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Consumer:
    pending: int
    ack_floor: int
    since: float
    """When the ack floor last moved, or the consumer last had messages pending anew."""


class ConsumerProgress:
    """The last ack floor of each durable consumer and since when it has stood still."""

    def __init__(self) -> None:
        self._consumers: dict[str, _Consumer] = {}

    def update(self, durable: str, pending: int, ack_floor: int, now: float) -> None:
        """Record what the broker says of ``durable`` at ``now`` (monotonic seconds).

        ``pending`` is the number of messages not yet delivered plus those delivered and
        not yet acknowledged; the caller adds them up.
        """
        known = self._consumers.get(durable)
        if known is None or known.ack_floor != ack_floor or known.pending <= 0:
            self._consumers[durable] = _Consumer(pending, ack_floor, now)
        else:
            known.pending = pending

    def stalled(self, now: float) -> dict[str, float]:
        """Per consumer with messages pending and an ack floor standing still: for how long."""
        return {
            durable: now - consumer.since
            for durable, consumer in self._consumers.items()
            if consumer.pending > 0 and now > consumer.since
        }

    def forget(self, durable: str) -> None:
        """Stop watching ``durable`` (it was deleted)."""
        self._consumers.pop(durable, None)
