"""Software updates on a running cloud: installed while readings flow (none lost, none
processed twice), attacks refused over the download manager's HTTPS API, a release that
fails to start rolled back, and code changed on disk shown red. Each attempt is in the
logbook."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from metrocloud.authority.identification import ComponentReport, request_identification
from metrocloud.bus.connect import connect
from metrocloud.cli import app
from metrocloud.cloud.cluster import Cluster
from metrocloud.core.clock import READINGS_PER_DAY
from metrocloud.core.events import EventKind, LogEvent
from metrocloud.core.http import open_http
from metrocloud.download.build import build_update
from metrocloud.download.manager import install_root
from metrocloud.download.package import pack, unpack
from metrocloud.pki import Identity, Role
from metrocloud.testbed.observe import logbook_entries, wait_for
from metrocloud.testbed.pipeline import Pipeline, PipelineConfig

TAF1 = "metrocloud.tariffs.taf1"


def taf1_source(version: str, extra: str = "") -> bytes:
    source = Path(__import__(TAF1, fromlist=["x"]).__file__).read_text()
    assert 'version = "2.0.0"' in source
    return (source.replace('version = "2.0.0"', f'version = "{version}"') + extra).encode()


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "300", "NO_COLOR": "1"})
    return result.exit_code, " ".join(result.output.split())


def identity(cluster: Cluster, name: str, role: Role) -> Identity:
    return cluster.data.issue_identity(name, role)


def identify(cluster: Cluster, component: str) -> ComponentReport:
    trust = cluster.data.trust_store()

    async def ask() -> ComponentReport:
        nc = await connect(
            cluster.server.url, cluster.data.credentials("monitor"), name="t", role="monitor"
        )
        try:
            return await request_identification(nc, component, trust)
        finally:
            await nc.close()

    return asyncio.run(ask())


def updates(cluster: Cluster, count: int) -> list[LogEvent]:
    """The software-update events, once the logbook holds ``count`` of them."""

    def logged() -> list[LogEvent]:
        return [e.event for e in logbook_entries(cluster.data, EventKind.SOFTWARE_UPDATE)]

    wait_for(lambda: len(logged()) >= count, timeout_s=30)
    return logged()


def push(cluster: Cluster, raw: bytes) -> tuple[int, dict[str, Any]]:
    with open_http(
        cluster.url("download"), tls_trust=cluster.data.pki / "root.pem", timeout_s=300
    ) as client:
        response = client.post("/v1/packages", content=raw)
    return response.status_code, response.json()


def approve(cluster: Cluster, *packages: Path) -> None:
    extra = [a for p in packages for a in ("--package", str(p))]
    code, out = cli("authority", "approve", "--data", str(cluster.data.root), *extra)
    assert code == 0, out


def evaluated(cluster: Cluster) -> list[tuple[str, object]]:
    return [
        (e.event.subject, e.event.detail.get("seq"))
        for e in logbook_entries(cluster.data, EventKind.PROCESSING)
        if e.event.detail.get("step") == "evaluate"
    ]


def test_an_approved_update_is_installed_while_readings_flow(
    cluster: Cluster, tmp_path: Path
) -> None:
    data = str(cluster.data.root)
    new_source = tmp_path / "taf1.py"
    new_source.write_bytes(taf1_source("2.1.0"))
    package = tmp_path / "taf1-2.1.0.mcu"
    code, out = cli(
        "update", "build", "--data", data, "--as", "acme-meters", "--component",
        "tariff-taf1", "--version", "2.1.0", "--sequence", "1",
        "--module", f"{TAF1}={new_source}", "--out", str(package),
    )  # fmt: skip
    assert code == 0 and "signed by acme-meters" in out, out
    approve(cluster, package)
    before = identify(cluster, "tariff-taf1").identification
    assert before.version == "2.0.0"

    config = PipelineConfig(meters=2, days=6, readings_per_transmission=READINGS_PER_DAY)
    pipeline = Pipeline(cluster, config)
    pipeline.provision()
    asyncio.run(pipeline.register_keys())
    per_meter = [pipeline.uploads(m) for m in pipeline.meter_ids]  # six days, then closing
    uploads = [msg for day in zip(*per_meter, strict=True) for msg in day]
    asyncio.run(pipeline.send(uploads[:6]))
    wait_for(lambda: len(evaluated(cluster)) >= 2, timeout_s=60)

    pushed: dict[str, tuple[int, str]] = {}
    pusher = threading.Thread(
        target=lambda: pushed.setdefault("out", cli("update", "push", str(package), "--data", data))
    )
    pusher.start()
    root = install_root(cluster.data.root)
    wait_for(lambda: root.pointer("tariff-taf1") is not None, timeout_s=60)
    asyncio.run(pipeline.send(uploads[6:]))  # the rest of the month arrives during the switch
    pusher.join(timeout=180)
    code, out = pushed["out"]
    assert code == 0 and "installed: tariff-taf1 2.1.0" in out, out

    for outcome in asyncio.run(pipeline.collect(timeout_s=180)):
        assert outcome.verdict.verified, outcome.verdict.reason
        assert outcome.verdict.registers == outcome.reference
    work = evaluated(cluster)
    assert sorted(work) == sorted((m, s) for m in pipeline.meter_ids for s in range(6))
    actors = [
        (e.event.kind, e.event.detail.get("event"), e.event.detail.get("step"))
        for e in logbook_entries(cluster.data)
        if e.event.actor == "legal"
    ]
    restarted = actors.index((EventKind.SERVICE, "started", None), 1)
    assert (EventKind.PROCESSING, None, "evaluate") in actors[restarted:]  # the new code billed

    after = identify(cluster, "tariff-taf1")
    assert after.identification.version == "2.1.0" and after.changed == ()
    assert after.identification.instance_id != before.instance_id
    (event,) = updates(cluster, 1)
    assert event.detail["result"] == "installed" and event.detail["by"] == "acme-meters"
    assert event.detail["old"]["version"] == "2.0.0"
    assert event.detail["new"] == after.identification.software.to_dict()
    status = CliRunner().invoke(app, ["update", "status", "--data", data, "--json"])
    assert status.exit_code == 0, status.output
    releases = json.loads(status.output)["releases"]
    assert releases == {
        "tariff-taf1": {
            "release": "1-2.1.0", "previous": None, "state": "committed", "host": "legal",
            "version": "2.1.0", "sequence": 1,
        }
    }  # fmt: skip
    code, out = cli("authority", "verify", "--data", data)
    assert code == 0 and "tariff-taf1" in out, out

    # The release's code changed on disk while legal runs it: shown red at once.
    release = root.current("tariff-taf1")
    assert release is not None
    release.path(TAF1).write_bytes(taf1_source("2.1.0", "\nPRICE_OVERRIDE = 1\n"))
    assert identify(cluster, "tariff-taf1").changed == (TAF1,)
    code, out = cli("authority", "verify", "--data", data)
    assert code == 1 and "not verified: tariff-taf1" in out and TAF1 in out, out
    # ... and on the verification monitor's page, which logs the change of its badge
    with open_http(cluster.url("monitor"), tls_trust=cluster.data.pki / "root.pem") as monitor:

        def badge() -> tuple[str, str]:
            rows = monitor.get("/status.json").raise_for_status().json()["components"]
            (row,) = [r for r in rows if r["component"] == "tariff-taf1"]
            return row["badge"], row["reason"]

        wait_for(lambda: badge() == ("red", "changed-on-disk"), timeout_s=30)

    def flagged() -> list[LogEvent]:
        return [
            e.event
            for e in logbook_entries(cluster.data, EventKind.VERIFICATION_FAILURE)
            if e.event.actor == "monitor"
            and e.event.subject == "tariff-taf1"
            and e.event.detail["reason"] == "changed-on-disk"
        ]

    wait_for(lambda: len(flagged()) == 1, timeout_s=30)
    (failure,) = flagged()
    assert failure.detail["reason"] == "changed-on-disk" and failure.detail["changed"] == [TAF1]


def test_attacks_on_the_download_manager_are_refused_and_logged(
    cluster: Cluster, tmp_path: Path
) -> None:
    maker = identity(cluster, "acme-meters", Role.MANUFACTURER)
    good = build_update(maker, "tariff-taf1", "2.1.0", 5, {TAF1: taf1_source("2.1.0")})
    unapproved = build_update(maker, "tariff-taf1", "2.2.0", 6, {TAF1: taf1_source("2.2.0")})
    older = build_update(maker, "tariff-taf1", "1.9.0", 7, {TAF1: taf1_source("1.9.0")})
    (tmp_path / "good.mcu").write_bytes(good)
    (tmp_path / "older.mcu").write_bytes(older)
    approve(cluster, tmp_path / "good.mcu", tmp_path / "older.mcu")
    legal = identify(cluster, "legal").identification.instance_id

    metadata, files = unpack(good)
    tampered = pack(metadata, {TAF1: files[TAF1].replace(b"price", b"prize", 1)})
    service = identity(cluster, "legal", Role.SERVICE)
    wrong_role = build_update(service, "tariff-taf1", "2.1.0", 5, {TAF1: taf1_source("2.1.0")})
    from metrocloud.core.messages import Envelope  # the signed metadata, its body bare

    unsigned = pack(Envelope.decode(metadata).body, files)
    expired = build_update(
        maker, "tariff-taf1", "2.1.0", 5, {TAF1: taf1_source("2.1.0")},
        valid_for=timedelta(seconds=-1),
    )  # fmt: skip
    cases = [
        (unsigned, "unsigned-package"),
        (tampered, "digest-mismatch"),
        (wrong_role, "wrong-role"),
        (expired, "expired-metadata"),
        (unapproved, "not-approved"),
        (b"\x00garbage", "malformed-package"),
    ]
    for raw, reason in cases:
        status, outcome = push(cluster, raw)
        assert (status, outcome["result"], outcome["reason"]) == (422, "refused", reason)
    status, outcome = push(cluster, good)
    assert (status, outcome["result"]) == (200, "installed"), outcome
    for raw, reason in ((good, "replayed-metadata"), (older, "rolled-back-version")):
        status, outcome = push(cluster, raw)
        assert (status, outcome["reason"]) == (422, reason), outcome

    logged = updates(cluster, len(cases) + 3)
    assert [(e.detail["result"], e.detail.get("reason")) for e in logged] == [
        *(("refused", reason) for _, reason in cases),
        ("installed", None),
        ("refused", "replayed-metadata"),
        ("refused", "rolled-back-version"),
    ]
    assert logged[2].detail["by"] == "legal" and logged[-1].detail["by"] == "acme-meters"
    assert logged[5].detail["new"] is None  # garbage states nothing
    assert identify(cluster, "tariff-taf1").identification.version == "2.1.0"
    assert identify(cluster, "legal").identification.instance_id != legal  # one switch


def test_a_release_that_fails_to_start_is_rolled_back(cluster: Cluster, tmp_path: Path) -> None:
    maker = identity(cluster, "acme-meters", Role.MANUFACTURER)
    # Imports cleanly in the preflight, fails only inside the service process.
    broken = taf1_source(
        "2.1.0",
        '\nimport sys as _sys\nif "metrocloud.cloud.serve" in _sys.modules:\n'
        '    raise RuntimeError("taf1 2.1.0 cannot start here")\n',
    )
    raw = build_update(maker, "tariff-taf1", "2.1.0", 1, {TAF1: broken})
    (tmp_path / "broken.mcu").write_bytes(raw)
    approve(cluster, tmp_path / "broken.mcu")
    before = identify(cluster, "tariff-taf1").identification

    status, outcome = push(cluster, raw)
    assert (status, outcome["result"], outcome["reason"]) == (500, "rolled-back", "switch-failed")
    assert "went back" in outcome["detail"], outcome
    now = identify(cluster, "tariff-taf1").identification
    assert now.software == before.software and now.instance_id != before.instance_id
    assert install_root(cluster.data.root).pointer("tariff-taf1") is None
    assert "cannot start here" in cluster.log_tail("legal", 20000)
    (event,) = updates(cluster, 1)
    assert (event.detail["result"], event.detail["reason"]) == ("rolled-back", "switch-failed")
    assert not cluster.dead()
