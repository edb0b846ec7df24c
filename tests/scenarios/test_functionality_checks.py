"""Confidential functionality checks on a running cloud: the authority's test meters among
ordinary customers, a round per billing period checked against secret test vectors.

One cloud bills one period after another on TAF 1 while legal changes underneath: honest,
then run by an insider with a tariff program that bills wrongly (a different price, a
constant added to every result, a skipped reading), then honest again with a refactoring
shipped as an update (which passes) and with a patch that bills more (which fails). The
rounds go to the logbook per program version and the verification monitor shows the
latest. TAF 2 and TAF 3 (a shifted schedule, a wrong threshold) are checked through
``metrocloud authority check``.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from metrocloud.authority.checks import CheckRound
from metrocloud.cli import app
from metrocloud.cloud.cluster import Cluster
from metrocloud.cloud.runtime import DataDir
from metrocloud.core.clock import BillingPeriod
from metrocloud.core.events import EventKind, LogEvent
from metrocloud.core.http import open_http
from metrocloud.download.build import build_update
from metrocloud.pki import Role
from metrocloud.testbed.insider import ENTRY as INSIDER
from metrocloud.testbed.observe import logbook_entries, wait_for
from metrocloud.testbed.pipeline import MeterOutcome, Pipeline, PipelineConfig

TAF1 = "metrocloud.tariffs.taf1"
CONFIG = PipelineConfig(meters=3, test_meters=2, days=1, tariff="taf1")


def cli(*args: str) -> tuple[int, str]:
    """Exit code and output, table rules and bars (box drawing) turned into spaces."""
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "300", "NO_COLOR": "1"})
    return result.exit_code, " ".join(re.sub("[\u2500-\u257f]", " ", result.output).split())


def taf1_source(version: str, old: str = "", new: str = "") -> bytes:
    source = Path(__import__(TAF1, fromlist=["x"]).__file__).read_text()
    assert 'version = "2.0.0"' in source and old in source
    return source.replace('version = "2.0.0"', f'version = "{version}"').replace(old, new).encode()


REFACTORED = (  # the price read once, in one place: what prices() returns is unchanged
    "    def prices(self) -> list[int]:\n        return [self.price]\n",
    "    def prices(self) -> list[int]:\n        price = self.price\n        return [price]\n",
)
BILLS_MORE = (
    "    def prices(self) -> list[int]:\n        return [self.price]\n",
    "    def prices(self) -> list[int]:\n        return [self.price * 11 // 10]\n",
)


class Field:
    """The testbed's field with the authority's test meters: one period after another."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.pipeline = Pipeline(cluster, CONFIG)
        self.pipeline.provision()
        asyncio.run(self.pipeline.register_keys())
        self.periods = 0
        self.fault: str | None = None

    def bill(self) -> tuple[list[MeterOutcome], CheckRound]:
        """The next period: sent, fetched by every display, checked and logged."""
        self.periods += 1
        first = CONFIG.first_day + timedelta(days=CONFIG.days * self.periods)
        period = BillingPeriod.days(first, CONFIG.days)
        gateway = self.pipeline.gateway
        assert gateway is not None
        uploads = [m for meter in self.pipeline.meter_ids for m in gateway.uploads(meter, period)]

        async def run() -> tuple[list[MeterOutcome], CheckRound]:
            await self.pipeline.send(uploads)
            outcomes = await self.pipeline.collect(120.0, period=period)
            check_round = self.pipeline.check(period)
            assert check_round is not None
            await self.pipeline.log_check(check_round)
            return outcomes, check_round

        return asyncio.run(run())

    def run_legal(self, fault: str | None) -> None:
        """Restart legal, run by an insider with ``fault`` or honest (None)."""
        self.fault = fault
        options = self.cluster.options.setdefault("legal", {})
        if fault:
            options["fault"] = fault
            self.cluster.entries["legal"] = INSIDER
        else:
            options.pop("fault", None)
            self.cluster.entries.pop("legal", None)
        self.cluster.kill("legal", signal.SIGTERM)
        self.cluster.restart("legal")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Field]]:
    cluster = Cluster(tmp_path_factory.mktemp("checks") / "data")
    cluster.start()
    try:
        yield cluster, Field(cluster)
    finally:
        cluster.stop()


def round_events(cluster: Cluster, round_id: str) -> list[LogEvent]:
    """The logbook's events of one round, once there are any."""

    def logged() -> list[LogEvent]:
        found = logbook_entries(cluster.data, EventKind.FUNCTIONALITY_CHECK)
        return [e.event for e in found if e.event.detail["round_id"] == round_id]

    wait_for(lambda: bool(logged()), timeout_s=30)
    return logged()


def verdict(check_round: CheckRound) -> list[tuple[str, str, int, int]]:
    return [(v.program, v.program_version, v.checks, v.failures) for v in check_round.verdicts]


def test_an_honest_cloud_passes_and_the_round_is_logged_without_test_meters(
    cloud: tuple[Cluster, Field],
) -> None:
    cluster, field = cloud
    outcomes, check_round = field.bill()
    assert [o.meter_id for o in outcomes] == field.pipeline.customer_meter_ids
    assert all(o.ok for o in outcomes) and len(outcomes) == CONFIG.meters
    assert check_round.passed, [o.reason for o in check_round.outcomes]
    assert verdict(check_round) == [("taf1", "2.0.0", 2, 0)]
    for outcome in check_round.outcomes:  # each one compared with its own test vector
        assert outcome.found == outcome.expected and outcome.expected.total_register_wh > 0
    (event,) = round_events(cluster, check_round.round_id)
    assert event.actor == "authority" and event.subject == "taf1"
    assert event.detail["verdict"] == "pass" and event.detail["round_id"] == check_round.round_id
    test_meters = field.pipeline.authority.plan.meters if field.pipeline.authority else ()
    raw = event.to_json().decode()
    for meter in test_meters:
        assert meter.meter_id not in raw and meter.customer_id not in raw


@pytest.mark.parametrize(
    ("fault", "displays_see_it"),
    [
        ("price:10", True),  # the display recomputes the bill from the registers
        ("add-constant:500", False),  # consistent: only the test vectors show it
        ("skip-reading:3", True),  # tariff registers + error no longer equal the total
    ],
)
def test_a_tariff_program_that_bills_wrongly_fails_the_check(
    cloud: tuple[Cluster, Field], fault: str, displays_see_it: bool
) -> None:
    cluster, field = cloud
    field.run_legal(fault)  # from one fault straight to the next: the update test ends it
    outcomes, check_round = field.bill()
    assert verdict(check_round) == [("taf1", "2.0.0", 2, 2)], fault
    for outcome in check_round.outcomes:
        assert not outcome.passed
        if displays_see_it:
            assert outcome.reason.startswith("the display's check failed"), outcome.reason
        else:
            assert outcome.reason.startswith("result differs from the test vector")
            assert outcome.found is not None and outcome.found.consistent
            assert outcome.found.total_register_wh == outcome.expected.total_register_wh + 500
    verified = [o.verdict.verified for o in outcomes]
    assert verified == [not displays_see_it] * CONFIG.meters, (fault, verified)
    assert not any(o.bill_matches for o in outcomes)
    (logged,) = round_events(cluster, check_round.round_id)
    assert logged.detail["verdict"] == "fail" and logged.detail["failures"] == 2


def push(cluster: Cluster, raw: bytes) -> dict[str, Any]:
    with open_http(
        cluster.url("download"), tls_trust=cluster.data.pki / "root.pem", timeout_s=300
    ) as client:
        response = client.post("/v1/packages", content=raw)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def approve(cluster: Cluster, tmp_path: Path, raw: bytes) -> None:
    package = tmp_path / "update.mcu"
    package.write_bytes(raw)
    code, out = cli("authority", "approve", "--data", str(cluster.data.root), "--package",
                    str(package))  # fmt: skip
    assert code == 0, out


def test_a_refactoring_shipped_as_update_passes_and_a_patch_that_bills_more_fails(
    cloud: tuple[Cluster, Field], tmp_path: Path
) -> None:
    cluster, field = cloud
    if field.fault is not None:
        field.run_legal(None)
    maker = cluster.data.issue_identity("acme-meters", Role.MANUFACTURER)
    refactored = build_update(maker, "tariff-taf1", "2.0.1", 1,
                              {TAF1: taf1_source("2.0.1", *REFACTORED)})  # fmt: skip
    approve(cluster, tmp_path, refactored)
    push(cluster, refactored)
    _, check_round = field.bill()
    assert verdict(check_round) == [("taf1", "2.0.1", 2, 0)]

    patched = build_update(maker, "tariff-taf1", "2.0.2", 2,
                           {TAF1: taf1_source("2.0.2", *BILLS_MORE)})  # fmt: skip
    approve(cluster, tmp_path, patched)  # approved on the manufacturer's word, then checked
    push(cluster, patched)
    _, check_round = field.bill()
    assert verdict(check_round) == [("taf1", "2.0.2", 2, 2)]

    # the verification monitor shows the latest round of the program
    with open_http(cluster.url("monitor"), tls_trust=cluster.data.pki / "root.pem") as monitor:

        def latest() -> dict[str, Any]:
            found = monitor.get("/status.json").raise_for_status().json()
            (row,) = [c for c in found["checks"] if c["program"] == "taf1"]
            return dict(row)

        wait_for(lambda: latest()["version"] == "2.0.2", timeout_s=30)
        row = latest()
        assert not row["passed"] and "2 checks, 2 failed" in row["detail"]


def test_authority_check_prints_the_verdicts_and_catches_a_shifted_schedule(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    code, out = cli("authority", "check", "--tariff", "taf2", "--meters", "2", "--test-meters",
                    "1", "--insider", "shift-schedule:8", "--data", str(data))  # fmt: skip
    assert code == 1, out
    assert "taf2 2.0.0 1 1 FAIL" in out and "result differs from the test vector" in out
    assert "2 of 2 ordinary customers' bills verified by their displays" in out  # consistent
    assert "functionality check failed" in out
    (entry,) = logbook_entries(DataDir(data), EventKind.FUNCTIONALITY_CHECK)
    assert entry.event.detail["verdict"] == "fail" and entry.event.detail["program"] == "taf2"


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (("--test-meters", "0"), "--test-meters must be at least 1"),
        (("--insider", "bill-double"), "no insider fault 'bill-double'"),
        (("--tariff", "taf9"), "unknown tariff program 'taf9'"),
        (("--days", "40"), "--days must be between 1 and 31"),
    ],
)
def test_authority_check_refuses_bad_options(args: tuple[str, ...], why: str) -> None:
    code, out = cli("authority", "check", *args)
    assert code == 2 and why in out, out
