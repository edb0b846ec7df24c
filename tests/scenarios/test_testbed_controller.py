"""Scenarios driven through the test controller's API, as a researcher would: a defined
start state, atomic actions on the field and the cloud, and what the system detects.

The controller app runs in-process (FastAPI's TestClient), the cloud it drives is the real
embedded one: broker, services and witnesses as processes on 127.0.0.1.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from metrocloud.testbed.controller import TestbedClient
from metrocloud.testbed.testbed import Testbed


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestbedClient, Testbed]]:
    client, testbed = TestbedClient.in_process(tmp_path_factory.mktemp("testbed"))
    try:
        yield client, testbed
    finally:
        client.stop()
        client.close()


def metrological(client: TestbedClient) -> list[tuple[str, str | None, Any]]:
    return [
        (e["kind"], e["meter"], e["detail"].get("reason"))
        for e in client.gateway_log("metrological")
    ]


def all_verified(outcomes: list[dict[str, Any]]) -> bool:
    return bool(outcomes) and all(o["ok"] for o in outcomes)


def test_the_api_is_described_and_refuses_actions_before_the_start(
    controller: tuple[TestbedClient, Testbed],
) -> None:
    client, _ = controller
    document = client.http.get("/openapi.json").json()
    for path in ("/v1/start", "/v1/field/measure", "/v1/field/inject", "/v1/bill"):
        assert path in document["paths"]
    assert client.state() == {"running": False}
    with pytest.raises(httpx.HTTPStatusError) as refused:
        client.measure(4)
    assert refused.value.response.status_code == 409
    assert "not started" in refused.value.response.json()["error"]


def test_a_lossy_radio_channel_still_bills_every_meter_correctly(
    controller: tuple[TestbedClient, Testbed],
) -> None:
    client, _ = controller
    state = client.start(meters=3, days=1, channel="realistic", seed=11)
    assert state["running"] and len(state["meters"]) == 3
    field = client.measure()
    lost = sum(v for k, v in field["channel"].items() if k.startswith("lost_"))
    refused = {k: v for k, v in field["outcomes"].items() if k != "accepted"}
    assert lost + sum(refused.values()) > 0, field  # the channel did disturb it
    assert field["outcomes"]["accepted"] < field["sent"]
    # what never arrived is booked to the error register: every bill still verifies
    assert all_verified(client.bill())


def test_replay_and_wrong_key_are_refused_and_reach_the_authoritys_log(
    controller: tuple[TestbedClient, Testbed],
) -> None:
    client, _ = controller
    meters = client.start(meters=2, days=1)["meters"]
    client.measure(8)
    client.inject(replay_of=meters[0])  # a captured telegram sent again
    client.change_key(meters[1], bytes(range(16, 32)))  # the gateway was not told
    client.measure(4)
    client.change_key(meters[1], bytes(range(16, 32)), tell_gateway=True)
    field = client.measure()
    assert field["outcomes"]["replayed-access-number"] == 1
    assert field["outcomes"]["decryption-check-failed"] == 4
    log = metrological(client)
    assert ("telegram-refused", meters[0], "replayed-access-number") in log
    assert log.count(("telegram-refused", meters[1], "decryption-check-failed")) == 4
    assert ("key-changed", meters[1], None) in log
    assert all("register" not in e["detail"] for e in client.gateway_log("administrator"))
    assert all_verified(client.bill())


def test_a_register_set_on_the_meter_lands_in_the_error_register(
    controller: tuple[TestbedClient, Testbed],
) -> None:
    client, testbed = controller
    meters = client.start(meters=1, days=1)["meters"]
    client.measure(10)
    client.set_register(meters[0], 9_000_000)  # a jump no quarter hour can consume
    client.measure()
    consumer = client.gateway_log("consumer")
    assert max(e["detail"]["register"] for e in consumer) >= 9_000_000
    (outcome,) = client.bill()
    assert outcome["ok"], outcome  # verified, and equal to the plaintext reference
    assert testbed.pipeline is not None and testbed.pipeline.gateway is not None
    period = testbed.pipeline.config.period
    intervals = testbed.pipeline.gateway.intervals(meters[0], period.start, period.intervals)
    assert sum(i.error for i in intervals) == 1  # exactly the quarter hour of the jump


def test_a_revoked_gateway_certificate_is_refused_by_the_cloud(
    controller: tuple[TestbedClient, Testbed],
) -> None:
    client, _ = controller
    client.start(meters=1, days=1, crl_refresh_s=1.0)
    client.measure()
    client.revoke("gw-0001")
    time.sleep(3.0)  # one CRL refresh, with room
    (outcome,) = client.bill(timeout_s=10.0)  # nothing was accepted: no result can come
    assert (outcome["ok"], outcome["reason"]) == (False, "no-result")
    reasons = [e["detail"].get("reason") for e in client.logbook("rejection")]
    assert reasons.count("certificate-revoked") == 2  # the transmission and the closing


def test_a_crashed_legal_service_loses_nothing(
    controller: tuple[TestbedClient, Testbed],
) -> None:
    client, _ = controller
    client.start(meters=2, days=1)
    client.measure()
    client.service("legal", "kill")
    assert client.state()["services"]["legal"] is False
    client.service("legal", "start")
    assert all_verified(client.bill())
