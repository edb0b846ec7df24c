"""Revoking a gateway's certificate stops its uploads at ingress within one CRL refresh.

The authority revokes through the PKI service over HTTPS; every service fetches CRLs once
per refresh interval. Uploads signed before the revocation that were already accepted stay
accepted; the gateway's later uploads are refused as ``certificate-revoked``, each with a
logbook entry, and the revocation itself is in the cloud logbook.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from metrocloud.cloud.cluster import Cluster
from metrocloud.core.clock import READINGS_PER_DAY
from metrocloud.core.events import EventKind
from metrocloud.pki import Role
from metrocloud.pki.client import PkiClient
from metrocloud.testbed.observe import logbook_entries, rejections, wait_for
from metrocloud.testbed.pipeline import Pipeline, PipelineConfig

REFRESH_S = 1.0
FETCH_SLACK_S = 1.0  # one round of six CRL fetches over TLS, on a busy 2-core machine


@dataclass
class Revoked:
    cluster: Cluster
    serial: int
    before: int  # arrivals accepted before the revocation
    refused_after: int  # uploads sent after one refresh interval
    revoked_at: float


def arrivals(cluster: Cluster) -> int:
    return len(logbook_entries(cluster.data, EventKind.ARRIVAL))


@pytest.fixture(scope="module")
def revoked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Revoked]:
    root: Path = tmp_path_factory.mktemp("revocation")
    cluster = Cluster(root / "data", crl_refresh_s=REFRESH_S)
    cluster.start()
    try:
        config = PipelineConfig(meters=2, days=2, readings_per_transmission=READINGS_PER_DAY)
        pipeline = Pipeline(cluster, config)
        pipeline.provision()
        assert pipeline.gateway is not None
        uploads = {m: pipeline.uploads(m) for m in pipeline.meter_ids}
        asyncio.run(pipeline.register_keys())
        first_days = [uploads[m][0] for m in pipeline.meter_ids]
        asyncio.run(pipeline.send(first_days))
        wait_for(lambda: arrivals(cluster) >= len(first_days), 30)
        before = arrivals(cluster)

        pki = cluster.data.open_pki()
        authority = cluster.data.identities_store(pki).identity("notified-body", Role.AUTHORITY)
        pki.close()
        serial = pipeline.gateway.identity.certificate.serial_number
        with PkiClient.connect(cluster.pki_url, tls_trust=cluster.data.pki / "root.pem") as c:
            c.revoke(authority, serial, x509.ReasonFlags.key_compromise)
        revoked_at = time.monotonic()
        time.sleep(REFRESH_S + FETCH_SLACK_S)

        later = [u for m in pipeline.meter_ids for u in uploads[m][1:]]
        asyncio.run(pipeline.send(later))
        wait_for(
            lambda: (
                sum(r["reason"] == "certificate-revoked" for r in rejections(cluster.data))
                >= len(later)
            ),
            30,
        )
        yield Revoked(cluster, serial, before, len(later), revoked_at)
    finally:
        cluster.stop()


def test_uploads_after_one_refresh_are_refused_as_revoked(revoked: Revoked) -> None:
    refused = [r for r in rejections(revoked.cluster.data) if r["reason"] == "certificate-revoked"]
    assert len(refused) == revoked.refused_after
    assert all("gw-0001" in str(r["detail"]) for r in refused)


def test_nothing_accepted_before_the_revocation_is_lost(revoked: Revoked) -> None:
    assert arrivals(revoked.cluster) == revoked.before
    store = revoked.cluster.data.open_store()
    try:
        assert store.gateway_known("gw-0001")
    finally:
        store.close()


def test_the_revocation_is_in_the_cloud_logbook(revoked: Revoked) -> None:
    entries = logbook_entries(revoked.cluster.data, EventKind.CERTIFICATE_REVOKED)
    assert [(e.event.actor, e.event.detail["serial"]) for e in entries] == [
        ("pki", format(revoked.serial, "x"))
    ]
    assert entries[0].event.detail["requested_by"] == "notified-body"
    assert entries[0].event.detail["reason"] == "keyCompromise"
