"""Each legally relevant service of a running cloud answers the authority's identification
request with what it loaded, signed; the answer matches this installation's code and the
identification the service logged when it started."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner

from metrocloud.authority.identification import ComponentReport, request_identification
from metrocloud.bus.connect import connect
from metrocloud.cli import app
from metrocloud.cloud.cluster import Cluster
from metrocloud.cloud.software import LEGAL_COMPONENTS
from metrocloud.core.errors import Rejected
from metrocloud.core.events import EventKind
from metrocloud.logbook.transparency import MerkleLogbook

SERVICES = ("communication", "legal", "storage", "logbook", "display")


def test_running_components_identify_themselves(cluster: Cluster) -> None:
    trust = cluster.data.trust_store()

    async def ask() -> tuple[dict[str, ComponentReport], Rejected]:
        nc = await connect(
            cluster.server.url, cluster.data.credentials("monitor"), name="monitor",
            role="monitor",
        )  # fmt: skip
        try:
            found = {s: await request_identification(nc, s, trust) for s in SERVICES}
            with pytest.raises(Rejected) as refused:  # the CA is not legally relevant
                await request_identification(nc, "pki", trust, timeout_s=1.0)
            return found, refused.value
        finally:
            await nc.close()

    reports, refused = asyncio.run(ask())
    assert refused.reason == "no-answer"
    with MerkleLogbook(cluster.data.logbook) as book:
        for service, report in reports.items():
            expected = LEGAL_COMPONENTS[service].load().identification
            ident = report.identification
            assert (ident.component, ident.name, ident.version, ident.checksum) == (
                expected.component, expected.name, expected.version, expected.checksum,
            )  # fmt: skip
            assert report.changed == () and report.signed_by == service
            started = book.entries(kind=EventKind.SERVICE, subjects=[service])[0].event
            assert started.detail["software"] == ident.to_dict()  # the same process
    assert len({r.identification.instance_id for r in reports.values()}) == len(SERVICES)


def authority(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["authority", *args], env={"COLUMNS": "300", "NO_COLOR": "1"})
    return result.exit_code, " ".join(result.output.split())


def test_the_authority_approves_and_verifies_a_running_cloud(cluster: Cluster) -> None:
    data = str(cluster.data.root)
    code, out = authority("verify", "--data", data)
    assert code == 1 and "no reference list" in out, out

    code, out = authority("approve", "--data", data, "--certificate", "DE-M-26-0001")
    assert code == 0 and "reference list 1 signed by market-surveillance" in out, out
    code, out = authority("verify", "--data", data)
    assert code == 0, out
    assert "verified: every legally relevant component runs software approved" in out
    assert out.count("green") >= len(SERVICES) and "approved as DE-M-26-0001" in out

    # A newer list that leaves out the logbook and the display: both turn red.
    code, out = authority(
        "approve", "--data", data, *(a for c in SERVICES[:3] for a in ("--component", c))
    )
    assert code == 0 and "reference list 2" in out, out
    code, out = authority("verify", "--data", data)
    assert code == 1 and "not verified: logbook, display" in out, out

    code, out = authority("approve", "--data", data, "--component", "billing-ui")
    assert code == 2 and "not legally relevant: billing-ui" in out
