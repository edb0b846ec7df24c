"""The customer's secure display against a running cloud, after a demo month.

One embedded cloud bills a month of TAF 1 for three customers. Customer c-0001 has a
secure display: its key folder comes from enrolment, the display makes the FHE keys
(sealed with the passphrase) and registers them itself, the gateway encrypts under them.
The display then pulls, checks and recomputes its bills, serves its page on 127.0.0.1,
and a real headless Chromium looks at it. A second cloud runs ``legal`` as an insider
manipulated it (a consistent manipulation the duplicate check cannot see): the
recomputation catches it.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import shutil
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest
from typer.testing import CliRunner

from browser import screenshot_path
from metrocloud.bus.connect import connect
from metrocloud.cli import app
from metrocloud.cloud.cluster import Cluster
from metrocloud.core.clock import BillingPeriod
from metrocloud.core.messages import Envelope, TariffResult, seal
from metrocloud.core.ports import free_port
from metrocloud.fhe.packing import Interval
from metrocloud.pki import Role
from metrocloud.receiver.keyfolder import DisplayError, KeyFolder, WrongPassphrase
from metrocloud.receiver.session import CustomerDisplay, serve
from metrocloud.receiver.statement import Statement, euro
from metrocloud.testbed.enrolment import OwnDisplays
from metrocloud.testbed.insider import ENTRY
from metrocloud.testbed.pipeline import MeterOutcome, Pipeline, PipelineConfig

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

T = TypeVar("T")
PASSPHRASE = b"correct horse battery staple"
CUSTOMER, METER = "c-0001", "m-0001"


@dataclass
class Month:
    cluster: Cluster
    pipeline: Pipeline
    folder: KeyFolder
    display: CustomerDisplay

    @property
    def period(self) -> BillingPeriod:
        return self.pipeline.config.period

    def intervals(self) -> list[Interval]:
        assert self.pipeline.gateway is not None
        period = self.period
        return self.pipeline.gateway.intervals(METER, period.start, period.intervals)

    def refresh(self) -> list[Statement]:
        return asyncio.run(with_bus(self.display, self.display.refresh))


async def with_bus(display: CustomerDisplay, work: Callable[[Any], Any]) -> Any:
    nc = await display.connect()
    try:
        return await work(nc)
    finally:
        await nc.drain()


def bill_a_month(
    root: Path, config: PipelineConfig, cluster: Cluster
) -> tuple[Pipeline, OwnDisplays]:
    """The demo month with c-0001's own display making and registering its keys."""
    own = OwnDisplays(cluster, root, PASSPHRASE, [CUSTOMER])
    pipeline = Pipeline(cluster, config, display_keys=own)

    async def month() -> list[MeterOutcome]:
        pipeline.provision()
        await own.register()
        await pipeline.register_keys()
        await pipeline.send([m for meter in pipeline.meter_ids for m in pipeline.uploads(meter)])
        return await pipeline.collect()

    return pipeline, own, asyncio.run(month())


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Month]:
    root = tmp_path_factory.mktemp("display")
    cluster = Cluster(root / "cloud")
    cluster.start()
    try:
        pipeline, own, outcomes = bill_a_month(root, PipelineConfig(meters=3, days=30), cluster)
        assert [o.ok for o in outcomes] == [True] * 3, [o.verdict.reason for o in outcomes]
        yield Month(cluster, pipeline, KeyFolder(root / CUSTOMER), own.displays[CUSTOMER])
    finally:
        cluster.stop()


# -- keys ------------------------------------------------------------------------------------------


def test_the_display_made_and_registered_its_own_keys_once(month: Month) -> None:
    assert month.pipeline.keys_of_displays == {CUSTOMER}
    record = month.folder.registered
    assert record is not None and record["key_tag"] == month.display.keys.key_tag
    # the gateway encrypted under the display's key: the cloud's results decrypt with it
    assert month.pipeline.receivers[CUSTOMER].keys is month.display.keys
    assert asyncio.run(with_bus(month.display, month.display.register_once)) is False
    secret = (month.folder.keys / "secret.sealed").read_bytes()
    assert b"metrocloud-sealed-secret-key/1" in secret


# -- statements ------------------------------------------------------------------------------------


def test_the_bill_verifies_and_equals_the_recomputation(month: Month) -> None:
    (statement,) = month.refresh()
    assert statement.meter_id == METER and statement.period == month.period
    assert statement.status == "verified", statement.reason
    assert statement.recomputation.status == "match", statement.recomputation.reason
    reference = month.pipeline.reference(METER)
    assert statement.registers == reference == statement.recomputation.registers
    assert [iv.energy_wh for iv in statement.recomputation.intervals] == [
        0 if iv.error else iv.energy_wh for iv in month.intervals()
    ]
    program = month.pipeline.contracts[METER]
    assert statement.tariff_id["name"] == "taf1"
    assert statement.tariff_id["version"] == program.version
    assert statement.tariff_id["checksum"] == program.software_id.checksum


def test_another_customers_meter_is_refused(month: Month) -> None:
    receiver = month.display.receiver
    period = month.period

    async def ask(nc: Any) -> list[str]:
        refusals = []
        for request in (
            receiver.fetch_periods(nc, "m-0002"),
            receiver.fetch(nc, "m-0002", period),
            receiver.fetch_transmission(nc, "m-0002", period, 0),
        ):
            with pytest.raises(PermissionError) as caught:
                await request
            refusals.append(str(caught.value))
        return refusals

    refusals = asyncio.run(with_bus(month.display, ask))
    assert all("not-your-meter" in r and "c-0001 may not read m-0002" in r for r in refusals)


# -- errors a customer can act on ------------------------------------------------------------------


def copy_of(month: Month, tmp_path: Path) -> KeyFolder:
    shutil.copytree(month.folder.root, tmp_path / "copy")
    return KeyFolder(tmp_path / "copy")


def test_the_crls_are_renewed_from_the_pki(month: Month, tmp_path: Path) -> None:
    """A key folder whose CRLs are gone (or out of date): without the PKI's address no
    result verifies, with it the display fetches current ones and keeps them."""
    folder = copy_of(month, tmp_path)
    for crl in (folder.trust_dir / "crl").glob("*.crl"):
        crl.unlink()
    enrolment = json.loads(folder.enrolment_file.read_text())
    assert enrolment["pki"] == month.cluster.pki_url
    enrolment["pki"] = ""
    folder.enrolment_file.write_text(json.dumps(enrolment))
    blind = CustomerDisplay.open(folder, PASSPHRASE)
    (statement,) = asyncio.run(with_bus(blind, blind.refresh))
    assert statement.status == "not-verified" and "CRL" in statement.reason
    enrolment["pki"] = month.cluster.pki_url
    folder.enrolment_file.write_text(json.dumps(enrolment))
    display = CustomerDisplay.open(folder, PASSPHRASE)
    (statement,) = asyncio.run(with_bus(display, display.refresh))
    assert statement.status == "verified", statement.reason
    kept = sorted(p.name for p in (folder.trust_dir / "crl").glob("*.crl"))
    assert "root.crl" in kept and "services.crl" in kept and "gateways.crl" in kept
    assert display.renew_crls() == 0  # nothing newer since


def test_a_wrong_passphrase_is_said_plainly(month: Month) -> None:
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        CustomerDisplay.open(month.folder, b"correct horse battery stable")


def test_an_unreachable_cloud_is_said_plainly(month: Month, tmp_path: Path) -> None:
    folder = copy_of(month, tmp_path)
    enrolment = json.loads(folder.enrolment_file.read_text())
    enrolment["cloud"] = f"tls://127.0.0.1:{free_port()}"  # nothing listens there
    folder.enrolment_file.write_text(json.dumps(enrolment))
    display = CustomerDisplay.open(folder, PASSPHRASE)
    with pytest.raises(DisplayError, match=r"cannot reach the cloud at tls://127\.0\.0\.1:"):
        asyncio.run(display.connect())


def test_an_expired_certificate_is_said_plainly(month: Month) -> None:
    cert = month.folder.identity_certificate()
    later = cert.not_valid_after_utc + timedelta(days=1)
    with pytest.raises(DisplayError, match=r"your customer certificate expired on .* new one"):
        CustomerDisplay.open(month.folder, PASSPHRASE, at=later)
    earlier = cert.not_valid_before_utc - timedelta(days=1)
    with pytest.raises(DisplayError, match=r"valid only from .* clock"):
        CustomerDisplay.open(month.folder, PASSPHRASE, at=earlier)


def test_missing_evaluation_keys_are_said_plainly(month: Month, tmp_path: Path) -> None:
    folder = copy_of(month, tmp_path)
    (folder.keys / "registered.json").unlink()  # as if never registered
    (folder.keys / "evaluation.bin").unlink()
    display = CustomerDisplay.open(folder, PASSPHRASE)
    with pytest.raises(DisplayError, match="missing evaluation keys"):
        asyncio.run(with_bus(display, display.register_once))


def run_cli(folder: Path, passphrase: bytes, *extra: str) -> Any:
    return CliRunner().invoke(
        app,
        ["display", "--key-dir", str(folder), "--once", *extra],
        env={"METROCLOUD_DISPLAY_PASSPHRASE": passphrase.decode()},
    )


def test_the_command_prints_the_bills_and_plain_errors(month: Month, tmp_path: Path) -> None:
    done = run_cli(month.folder.root, PASSPHRASE)
    assert done.exit_code == 0, done.output
    assert "verified" in done.output and "taf1" in done.output and "match" in done.output
    reference = month.pipeline.reference(METER)
    assert euro(reference.bill_microcent) in done.output
    wrong = run_cli(month.folder.root, b"guess")
    assert wrong.exit_code == 2 and "wrong passphrase" in wrong.output
    nowhere = run_cli(tmp_path, PASSPHRASE)
    assert nowhere.exit_code == 2 and "not a customer's key folder" in nowhere.output
    for result in (wrong, nowhere):
        assert "Traceback" not in result.output


# -- the page -------------------------------------------------------------------------------------


class DisplayServer:
    """``serve`` in a thread with its own event loop (Playwright's sync API holds this one)."""

    def __init__(self, display: CustomerDisplay) -> None:
        self.display = display
        self.port = free_port()
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        try:
            asyncio.run(
                serve(
                    self.display,
                    self.port,
                    on_ready=lambda _: self.ready.set(),
                    should_exit=self.stop.is_set,
                )
            )
        except BaseException as exc:  # reported by __enter__ / __exit__
            self.failure = exc
            self.ready.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> DisplayServer:
        self.thread.start()
        assert self.ready.wait(120), "the display did not start"
        if self.failure:
            raise self.failure
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def off_the_loop(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``work`` in a thread of its own: Playwright's sync API holds this thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work()).result()


def publish_as_admin(cluster: Cluster, subject: str, data: bytes) -> None:
    async def publish() -> None:
        nc = await connect(
            cluster.bus_url, cluster.data.credentials("admin"), name="insider", role="admin"
        )
        try:
            await nc.jetstream().publish(subject, data)
        finally:
            await nc.drain()

    off_the_loop(publish)


def bars(page: Page) -> list[tuple[int, int]]:
    return [
        (int(i), int(wh))
        for i, wh in page.eval_on_selector_all(
            "[data-testid=chart] rect.bar",
            "els => els.map(e => [e.dataset.index, e.dataset.wh])",
        )
    ]


def test_the_page_shows_bills_marks_and_the_readings(month: Month, browser: Browser) -> None:
    reference = month.pipeline.reference(METER)
    valid = [(iv.index, 0 if iv.error else iv.energy_wh) for iv in month.intervals()]
    period = month.period
    subject = f"egress.results.{METER}.{period.period_id}"
    honest = off_the_loop(
        lambda: with_bus(month.display, lambda nc: month.display.receiver.fetch(nc, METER, period))
    )
    assert honest is not None
    with DisplayServer(month.display) as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server.url + "/")
        row = page.locator("[data-testid=statement]")
        assert row.count() == 1
        assert row.get_attribute("data-meter") == METER
        assert row.locator("[data-testid=mark]").get_attribute("data-status") == "verified"
        assert row.locator("[data-testid=bill]").inner_text() == euro(reference.bill_microcent)
        page.screenshot(path=str(screenshot_path("display-overview")), full_page=True)

        row.get_by_role("link", name="details").click()
        assert page.locator("[data-testid=reason]").inner_text().startswith("verified")
        assert page.locator("[data-testid=tariff-name]").inner_text() == "taf1"
        checksum = month.pipeline.contracts[METER].software_id.checksum
        assert page.locator("[data-testid=tariff-checksum]").inner_text() == checksum
        assert page.locator("[data-testid=recomputation]").get_attribute("data-status") == "match"
        assert page.locator("[data-testid=register]").count() == 1
        # the month: one bar per quarter hour, each the decrypted reading
        chart = page.locator("[data-testid=chart]")
        assert chart.get_attribute("data-zoom") == "month"
        assert bars(page) == valid and len(valid) == 30 * 96
        assert page.locator("[data-testid=chart] rect.bar").first.bounding_box() is not None
        page.screenshot(path=str(screenshot_path("display-month")), full_page=True)
        # zoom to a day, then the next day; to a week
        page.get_by_test_id("zoom-day").click()
        assert bars(page) == valid[:96]
        page.get_by_test_id("next").click()
        assert bars(page) == valid[96:192]
        page.screenshot(path=str(screenshot_path("display-day")), full_page=True)
        page.get_by_test_id("zoom-week").click()
        assert bars(page) == valid[: 7 * 96]

        # exports: the readings and the bill as the page shows them
        readings = list(
            csv.DictReader(io.StringIO(httpx.get(server.url + "/export/readings.csv").text))
        )
        assert [(int(r["index"]), int(r["energy_wh"])) for r in readings] == valid
        assert readings[0]["start_utc"] == "2026-01-01T00:00:00Z"
        bills = httpx.get(server.url + "/export/bills.json").json()
        assert bills[0]["bill_eur"] == f"{reference.bill_microcent / 1e8:.4f}"
        assert bills[0]["status"] == "verified" and bills[0]["tariff"] == "taf1"
        assert "bill_eur" in httpx.get(server.url + "/export/bills.csv").text
        assert len(httpx.get(server.url + "/export/readings.json").json()) == len(valid)
        statements = httpx.get(server.url + "/api/statements.json").json()
        assert statements[0]["readings"]["wh"] == [wh for _, wh in valid]

        # an insider with legal's key swaps the halves of r': dec(r) != dec(r')
        env = Envelope.decode(honest)
        result = TariffResult.decode(env.body)
        forged = dataclasses.replace(result, r_dup=list(reversed(result.r_dup)))
        legal = month.cluster.data.identities_store().identity("legal", Role.SERVICE)
        publish_as_admin(month.cluster, subject, seal(legal, forged))
        try:
            page.goto(server.url + "/")
            page.get_by_role("button", name="Fetch again").click()
            row = page.locator("[data-testid=statement]")
            assert row.locator("[data-testid=mark]").get_attribute("data-status") == "not-verified"
            assert "dec(r) != dec(r')" in row.inner_text()
            assert "result manipulated" in row.inner_text()
            page.screenshot(path=str(screenshot_path("display-not-verified")), full_page=True)
            row.get_by_role("link", name="details").click()
            assert "dec(r) != dec(r')" in page.locator("[data-testid=reason]").inner_text()
        finally:
            publish_as_admin(month.cluster, subject, honest)
        page.goto(server.url + "/")
        page.get_by_role("button", name="Fetch again").click()
        mark = page.locator("[data-testid=statement] [data-testid=mark]")
        assert mark.get_attribute("data-status") == "verified"


def test_a_consistent_manipulation_is_caught_by_recomputing(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """``legal`` adds 500 Wh to the register, the total and the bill alike, in r and r':
    the duplicate check and the register checks pass, the recomputation does not."""
    root = tmp_path_factory.mktemp("insider")
    cluster = Cluster(root / "cloud", options={"legal": {"fault": "add-constant:500"}})
    cluster.entries["legal"] = ENTRY
    cluster.start()
    try:
        pipeline, own, outcomes = bill_a_month(root, PipelineConfig(meters=1, days=2), cluster)
        display = own.displays[CUSTOMER]
        (statement,) = asyncio.run(with_bus(display, display.refresh))
    finally:
        cluster.stop()
    reference = pipeline.reference(METER)
    assert outcomes[0].verdict.verified and not outcomes[0].bill_matches  # as the display sees
    assert statement.verdict is not None and statement.verdict.verified  # r = r', consistent
    assert statement.status == "not-verified"
    assert statement.recomputation.status == "mismatch"
    expected = f"register T1: cloud {reference.tariff_registers_wh[0] + 500} Wh, recomputed"
    assert expected in statement.reason
    assert statement.recomputation.registers == reference
