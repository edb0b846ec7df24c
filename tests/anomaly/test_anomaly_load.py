"""Faults of load: a CPU hog and a memory leak in legal and a message flood at ingress each
reach yellow or red within 30 s; normal operation raises no red and at most one yellow."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from anomaly_helpers import Watched, detect, watched_cloud


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    with watched_cloud(tmp_path_factory.mktemp("load") / "data") as cloud:
        yield cloud


def test_normal_operation_stays_green(watched: Watched) -> None:
    time.sleep(15.0)  # 30 rounds
    raised = [
        e.event.detail for e in watched.anomaly_events() if e.event.detail["state_to"] != "green"
    ]
    assert not [d for d in raised if d["state_to"] == "red"], raised
    assert len(raised) <= 1, raised
    assert watched.workload.stats.verified > 0


def test_a_cpu_hog_is_seen(watched: Watched) -> None:
    detect(watched, "cpu-hog", "legal", red=False)


def test_a_memory_leak_is_seen(watched: Watched) -> None:
    detect(watched, "memory-leak", "legal", red=False)


def test_a_message_flood_is_seen(watched: Watched) -> None:
    detect(watched, "flood", "communication", red=False)
