"""Stalled consumers: messages pending while the ack floor stands still."""

from __future__ import annotations

from metrocloud.detection.progress import ConsumerProgress


def test_a_consumer_with_pending_messages_and_a_standing_ack_floor_is_stalled() -> None:
    progress = ConsumerProgress()
    progress.update("legal", pending=5, ack_floor=100, now=10.0)
    assert progress.stalled(10.0) == {}
    progress.update("legal", pending=7, ack_floor=100, now=12.0)
    assert progress.stalled(12.0) == {"legal": 2.0}
    assert progress.stalled(30.0) == {"legal": 20.0}


def test_any_advance_of_the_ack_floor_resets_the_clock() -> None:
    progress = ConsumerProgress()
    progress.update("legal", pending=5, ack_floor=100, now=0.0)
    progress.update("legal", pending=5, ack_floor=100, now=10.0)
    progress.update("legal", pending=5, ack_floor=101, now=12.0)
    assert progress.stalled(12.0) == {}
    progress.update("legal", pending=5, ack_floor=101, now=20.0)
    assert progress.stalled(20.0) == {"legal": 8.0}


def test_a_consumer_with_nothing_pending_is_never_stalled() -> None:
    progress = ConsumerProgress()
    progress.update("legal", pending=0, ack_floor=100, now=0.0)
    progress.update("legal", pending=0, ack_floor=100, now=60.0)
    assert progress.stalled(120.0) == {}


def test_the_clock_starts_when_messages_are_first_seen_pending() -> None:
    progress = ConsumerProgress()
    progress.update("legal", pending=0, ack_floor=100, now=0.0)
    progress.update("legal", pending=3, ack_floor=100, now=50.0)
    progress.update("legal", pending=3, ack_floor=100, now=55.0)
    assert progress.stalled(55.0) == {"legal": 5.0}
    progress.update("legal", pending=0, ack_floor=100, now=56.0)
    progress.update("legal", pending=2, ack_floor=100, now=70.0)
    assert progress.stalled(71.0) == {"legal": 1.0}


def test_consumers_are_watched_apart_and_can_be_forgotten() -> None:
    progress = ConsumerProgress()
    for now in (0.0, 20.0):
        progress.update("legal", pending=4, ack_floor=10, now=now)
        progress.update("storage", pending=4, ack_floor=int(now), now=now)
    assert progress.stalled(20.0) == {"legal": 20.0}
    progress.forget("legal")
    assert progress.stalled(20.0) == {}
