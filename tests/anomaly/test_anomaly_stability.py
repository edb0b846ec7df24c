"""Faults that affect stability: a crashed service and a stalled consumer reach red, slow
storage reaches yellow or red, each within 30 s, in a cloud under a steady workload."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from anomaly_helpers import Watched, detect, watched_cloud


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    with watched_cloud(tmp_path_factory.mktemp("stability") / "data") as cloud:
        yield cloud


def test_a_crashed_service_is_red_and_green_again_once_restarted(watched: Watched) -> None:
    detect(watched, "crash", "legal", red=True)
    [event] = [
        e.event
        for e in watched.anomaly_events()
        if e.event.detail["component"] == "legal" and e.event.detail["state_to"] == "red"
    ][-1:]
    assert event.detail["rule"] == "down"
    assert event.detail["metrics"]["legal/down_scrapes"] >= 2
    watched.wait_state("legal", {"green"}, timeout_s=90.0)


def test_a_stalled_consumer_is_red(watched: Watched) -> None:
    detect(watched, "stall", "storage", red=True)
    rules = [
        e.event.detail["rule"]
        for e in watched.anomaly_events()
        if e.event.detail["component"] == "storage" and e.event.detail["state_to"] == "red"
    ]
    assert rules[-1] == "stalled"


def test_slow_storage_is_seen(watched: Watched) -> None:
    detect(watched, "slow-storage", "storage", red=False)
