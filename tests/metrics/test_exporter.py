"""A component's metrics: the names, the values psutil reads, and the HTTP endpoint."""

from __future__ import annotations

import os
import socket

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from metrocloud.bus.subjects import subject_family
from metrocloud.metrics import ComponentMetrics, serve_metrics


def samples(metrics: ComponentMetrics) -> dict[str, float]:
    text = generate_latest(metrics.registry).decode()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            found[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return found


def test_process_metrics_are_this_process() -> None:
    metrics = ComponentMetrics()
    before = samples(metrics)
    held = [socket.socket() for _ in range(3)]
    sum(i * i for i in range(300_000))  # some CPU
    try:
        after = samples(metrics)
    finally:
        for s in held:
            s.close()
    assert after["metrocloud_process_sockets"] >= before["metrocloud_process_sockets"] + 3
    assert after["metrocloud_process_open_fds"] >= after["metrocloud_process_sockets"]
    assert (
        after["metrocloud_process_cpu_seconds_total"]
        > before["metrocloud_process_cpu_seconds_total"]
    )
    rss = after["metrocloud_process_resident_memory_bytes"]
    with open(f"/proc/{os.getpid()}/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    assert abs(rss - resident_pages * os.sysconf("SC_PAGE_SIZE")) < 64 * 1024 * 1024
    assert after["metrocloud_process_threads"] >= 1
    assert "metrocloud_process_io_read_bytes_total" in after


def test_application_metrics_count_by_subject_family_never_by_meter() -> None:
    metrics = ComponentMetrics(process=False)
    for meter in ("m-0001", "m-0002", "m-0003"):
        metrics.received(f"legal.in.reading.{meter}")
    metrics.sent("legal.results.m-0001")
    metrics.rejected("replay")
    metrics.failed(ValueError("x"))
    with metrics.step("tariff-taf1:evaluate"):
        pass
    with pytest.raises(RuntimeError), metrics.step("tariff-taf1:read-out"):
        raise RuntimeError("timed all the same")
    metrics.loaded("legal", "1.0.0", "ab" * 32)
    found = samples(metrics)
    assert found['metrocloud_messages_in_total{subject="legal.in.reading.*"}'] == 3
    assert found['metrocloud_messages_out_total{subject="legal.results.*"}'] == 1
    assert found['metrocloud_rejections_total{reason="replay"}'] == 1
    assert found['metrocloud_errors_total{kind="ValueError"}'] == 1
    assert found['metrocloud_processing_seconds_count{step="tariff-taf1:evaluate"}'] == 1
    assert found['metrocloud_processing_seconds_count{step="tariff-taf1:read-out"}'] == 1
    info = (
        'metrocloud_software_info{checksum="' + "ab" * 32 + '",component="legal",version="1.0.0"}'
    )
    assert found[info] == 1
    assert not any("m-0001" in key for key in found)


@pytest.mark.parametrize(
    ("subject", "family"),
    [
        ("ingress.upload.gw-0001", "ingress.upload.*"),
        ("legal.in.close.m-1", "legal.in.close.*"),
        ("legal.keys.c-0001", "legal.keys.*"),
        ("egress.results.m-1.100-200", "egress.results.>"),
        ("legal.log.storage", "legal.log.storage"),
        ("software.identify.tariff.taf1", "software.identify.>"),
        ("egress.display.fetch", "egress.display.>"),
        ("ingress", "ingress"),
    ],
)
def test_subject_family(subject: str, family: str) -> None:
    assert subject_family(subject) == family


def test_served_on_loopback_in_the_text_format() -> None:
    metrics = ComponentMetrics()
    metrics.received("ingress.upload.gw-1")
    server = serve_metrics(metrics)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        response = httpx.get(server.url, timeout=5)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        names = {f.name for f in text_string_to_metric_families(response.text)}
        assert {"metrocloud_messages_in", "metrocloud_process_cpu_seconds"} <= names
        with socket.create_connection(("127.0.0.1", server.port), timeout=5):
            pass
    finally:
        server.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url, timeout=2)


@pytest.mark.parametrize("host", ["127.0.3.7", "::1"])
def test_served_on_the_address_it_is_given(host: str) -> None:
    """A process on a host of its own serves its metrics on that host's address; its URL
    names the address (an IPv6 one in brackets)."""
    if ":" in host and not socket.has_ipv6:
        pytest.fail("this machine has no IPv6: the IPv6 case needs ::1")
    server = serve_metrics(ComponentMetrics(), 0, host)
    try:
        shown = f"[{host}]" if ":" in host else host
        assert server.url == f"http://{shown}:{server.port}/metrics"
        assert httpx.get(server.url, timeout=5).status_code == 200
    finally:
        server.close()
