"""Faults through the test controller: injected, seen by anomaly detection, shown by the
authority's verification monitor, cleared; and refused where they cannot apply."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from metrocloud.cloud.cluster import Cluster
from metrocloud.testbed.controller import TestbedClient
from metrocloud.testbed.faulty import ENTRY as FAULTY
from metrocloud.testbed.faulty import fault_file_name
from metrocloud.testbed.observe import wait_for
from metrocloud.testbed.testbed import Testbed


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestbedClient, Testbed]]:
    client, testbed = TestbedClient.in_process(tmp_path_factory.mktemp("faults"))
    try:
        client.start(faults=True, anomaly_training_s=4, anomaly_interval_s=0.5)
        yield client, testbed
    finally:
        client.stop()
        client.close()


def monitor_status(cluster: Cluster) -> dict[str, Any]:
    trust = ssl.create_default_context(cafile=cluster.data.pki / "root.pem")
    with httpx.Client(base_url=cluster.url("monitor"), verify=trust, timeout=10) as http:
        body: dict[str, Any] = http.get("/status.json").raise_for_status().json()
    return body


def test_the_services_take_faults_and_detection_learns_its_baseline(
    controller: tuple[TestbedClient, Testbed],
) -> None:
    client, testbed = controller
    assert testbed.cluster is not None
    entries = testbed.cluster.entries
    assert entries["legal"] == FAULTY and "anomaly" not in entries
    state = wait_for(lambda: client.anomaly()["events"] and client.anomaly(), 60)
    assert state["components"]["anomaly"]["rule"] == "baseline-learned"
    assert state["state"] == "green"


def test_a_crash_turns_red_on_the_monitor_and_green_once_restarted(
    controller: tuple[TestbedClient, Testbed],
) -> None:
    client, testbed = controller
    assert testbed.cluster is not None
    wait_for(lambda: client.anomaly()["events"], 60)
    assert client.inject_fault("crash", "display") == {
        "fault": "crash",
        "service": "display",
        "seconds": 60.0,
    }
    red = wait_for(lambda: client.anomaly()["state"] == "red" and client.anomaly(), 30)
    assert red["components"]["display"]["rule"] == "down"
    assert "display red by rule down" in red["detail"]
    cluster = testbed.cluster

    def monitor_red() -> dict[str, Any] | None:
        status = monitor_status(cluster)
        return status if status["anomaly"]["state"] == "red" else None

    shown: Any = wait_for(monitor_red, 30)
    assert "display" in shown["anomaly"]["detail"]
    client.http.post("/v1/services/display/start").raise_for_status()
    wait_for(lambda: client.anomaly()["state"] == "green", 60)


def test_an_in_process_fault_is_ordered_through_the_fault_file_and_cleared(
    controller: tuple[TestbedClient, Testbed],
) -> None:
    client, testbed = controller
    assert testbed.cluster is not None
    path: Path = testbed.cluster.data.run / fault_file_name("storage")
    client.inject_fault("slow-storage", "storage", seconds=30)
    order = json.loads(path.read_text())
    assert order["fault"] == "slow-storage" and order["until"] > time.time() + 20
    client.clear_fault("storage")
    assert not path.exists()


def test_faults_that_cannot_apply_are_refused(
    controller: tuple[TestbedClient, Testbed],
) -> None:
    client, _ = controller

    def refused(status: int, method: str, path: str, **kwargs: Any) -> str:
        response = client.http.request(method, path, **kwargs)
        assert response.status_code == status, response.text
        return response.text

    # anomaly detection itself never takes in-process faults
    assert "does not take injected faults" in refused(
        422, "POST", "/v1/faults/cpu-hog", json={"service": "anomaly"}
    )
    assert "its target is communication" in refused(
        422, "POST", "/v1/faults/flood", json={"service": "legal"}
    )
    refused(422, "POST", "/v1/faults/meltdown", json={})
    refused(404, "POST", "/v1/faults/crash", json={"service": "nobody"})
    refused(404, "DELETE", "/v1/faults/nobody")
    refused(422, "POST", "/v1/faults/crash", json={"seconds": -1})
