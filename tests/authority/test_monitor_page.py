"""The authority's verification monitor: the states it derives from logged events, its
check of the logbook, the snapshot it gathers, and its page, as JSON, as HTML and as
headless Chromium renders it."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from browser import screenshot_path
from metrocloud.authority.identification import ComponentReport
from metrocloud.authority.monitor import (
    AnomalyView,
    Frontier,
    FunctionalityCheckView,
    LogbookIntegrity,
    LogbookSource,
    LogbookWatch,
    MonitorSnapshot,
    anomaly_view,
    gather_snapshot,
    latest_checks,
    pending_snapshot,
)
from metrocloud.authority.monitor_web import create_monitor_app, render_page
from metrocloud.authority.reference import (
    ApprovedIdentification,
    ReferenceList,
    ReferenceStore,
    sign_reference,
)
from metrocloud.authority.verification import ComponentStatus
from metrocloud.cloud.software import AUTHORITY_COMPONENTS
from metrocloud.core.events import (
    AnomalyState,
    EventKind,
    LogEvent,
    anomaly_event,
    functionality_check_event,
)
from metrocloud.core.software import SoftwareIdentification
from metrocloud.logbook.api import create_app
from metrocloud.logbook.checkpoint import LOG_ORIGIN, Checkpoint, sign_checkpoint
from metrocloud.logbook.merkle import leaf_hash, tree_hash
from metrocloud.logbook.readers import ReaderPolicy
from metrocloud.logbook.transparency import MerkleLogbook
from metrocloud.logbook.witness import Witness
from metrocloud.logbook.witness_api import create_witness_app
from metrocloud.logbook.witness_client import WitnessClient, gather_cosignatures
from metrocloud.pki import Identity, IdentityStore, Role, TrustStore

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def anomaly(
    component: str, before: AnomalyState, after: AnomalyState, minutes: int, rule: str = "rate"
) -> LogEvent:
    metrics = {"rejections_per_min": 42.0} if after != "green" else {}
    return anomaly_event("monitor", component, before, after, metrics, rule, time=at(minutes))


def check(program: str, failures: int, round_id: str, minutes: int) -> LogEvent:
    verdict = "fail" if failures else "pass"
    return functionality_check_event(
        "authority", program, "1.0.0", verdict, 12, failures, round_id, time=at(minutes)
    )


# -- the views derived from events ------------------------------------------------------
def test_without_anomaly_events_the_state_is_unknown() -> None:
    other = LogEvent(actor="legal", kind=EventKind.PROCESSING, subject="meter-1")
    for events in ([], [other]):
        assert anomaly_view(events) == AnomalyView(
            "unknown", None, "no anomaly detection has reported yet"
        )
    assert latest_checks([other]) == []


def test_the_system_is_as_bad_as_its_worst_component_since_it_became_so() -> None:
    events = [
        anomaly("legal", "green", "green", 0),
        anomaly("legal", "green", "yellow", 1),
        anomaly("storage", "green", "red", 2, rule="disk"),
        anomaly("legal", "yellow", "red", 3),
        anomaly("storage", "red", "green", 4),
        anomaly("legal", "red", "green", 5),
    ]
    states = [anomaly_view(events[: n + 1]) for n in range(len(events))]
    assert [(s.state, s.since) for s in states] == [
        ("green", at(0).isoformat()),
        ("yellow", at(1).isoformat()),
        ("red", at(2).isoformat()),
        ("red", at(2).isoformat()),  # legal turning red too changes nothing
        ("red", at(2).isoformat()),  # storage recovers, legal is still red
        ("green", at(5).isoformat()),
    ]
    assert states[3].detail == (
        "legal red by rule rate (rejections_per_min=42); "
        "storage red by rule disk (rejections_per_min=42)"
    )
    assert states[4].detail == "legal red by rule rate (rejections_per_min=42)"
    assert states[5].detail == "every component reported green (legal, storage)"


def test_the_latest_functionality_check_per_program() -> None:
    events = [
        check("taf2", 0, "r1", 1),
        check("taf1", 0, "r1", 2),
        anomaly("legal", "green", "yellow", 3),
        check("taf1", 3, "r2", 4),
    ]
    assert latest_checks(events) == [
        FunctionalityCheckView(
            "taf1", "1.0.0", False, at(4).isoformat(), "12 checks, 3 failed (round r2)"
        ),
        FunctionalityCheckView(
            "taf2", "1.0.0", True, at(1).isoformat(), "12 checks, 0 failed (round r1)"
        ),
    ]


def test_the_frontier_computes_every_rfc9162_root() -> None:
    frontier = Frontier()
    leaves = [f"entry {n}".encode() for n in range(70)]
    assert frontier.root() == tree_hash([])
    for n, leaf in enumerate(leaves, start=1):
        frontier.append(leaf)
        assert frontier.size == n
        assert frontier.root() == tree_hash([leaf_hash(x) for x in leaves[:n]]), n
    copy = frontier.copy()
    copy.append(b"one more")
    assert frontier.size == 70 and copy.size == 71


# -- the logbook, checked the way the monitor does ----------------------------------------
@dataclass(frozen=True)
class Parties:
    trust: TrustStore
    log: Identity
    w1: Identity
    w2: Identity
    monitor: Identity
    authority: Identity


@pytest.fixture(scope="module")
def parties(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parties]:
    ids = IdentityStore.open_local(tmp_path_factory.mktemp("monitor-pki"))
    yield Parties(
        ids.trust,
        ids.identity("logbook", Role.SERVICE),
        ids.identity("w1", Role.AUTHORITY),
        ids.identity("w2", Role.AUTHORITY),
        ids.identity("monitor", Role.AUTHORITY),
        ids.identity("market-surveillance", Role.AUTHORITY),
    )
    assert ids.pki is not None
    ids.pki.close()


@dataclass
class Log:
    """A logbook file, its two witnesses (in process) and the head note its API serves."""

    parties: Parties
    root: Path
    note: str = ""
    known: dict[str, int] = field(default_factory=dict)
    witnesses: list[WitnessClient] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for identity in (self.parties.w1, self.parties.w2):
            witness = Witness(
                identity, self.root / f"{identity.common_name}.sqlite",
                self.parties.log.certificate, self.parties.trust, log_name=LOG_ORIGIN,
            )  # fmt: skip
            self.witnesses.append(
                WitnessClient(identity.common_name, TestClient(create_witness_app(witness)))
            )

    @property
    def path(self) -> Path:
        return self.root / "logbook.sqlite"

    def append(self, *events: LogEvent, cosigners: int = 2) -> None:
        """Append, sign the new head and have ``cosigners`` witnesses cosign it."""
        with MerkleLogbook(self.path) as book:
            book.append_many(events)
            head = Checkpoint(LOG_ORIGIN, book.size, book.head())
            note = sign_checkpoint(head, LOG_ORIGIN, self.parties.log.key)
            done = gather_cosignatures(
                note, self.witnesses[:cosigners], self.known, book.consistency_proof
            )
        self.note = done.note

    def app(self) -> FastAPI:
        return create_app(
            lambda: MerkleLogbook(self.path),
            lambda: self.note,
            readers=ReaderPolicy(self.parties.trust, lambda name: ()),
        )

    def watch(self, state: Path, quorum: int = 2) -> LogbookWatch:
        source = LogbookSource(
            url="http://logbook.test",
            tls_trust=self.root / "unused.pem",
            log_certificate=self.parties.log.certificate,
            witnesses={"w1": self.parties.w1.certificate, "w2": self.parties.w2.certificate},
            quorum=quorum,
            reader=self.parties.monitor,
            state=state,
        )
        app = self.app()
        return LogbookWatch(source, self.parties.trust, http=lambda: TestClient(app))


def service_event(n: int) -> LogEvent:
    return LogEvent(actor="legal", kind=EventKind.SERVICE, subject="legal", detail={"n": n})


@pytest.fixture
def log(parties: Parties, tmp_path: Path) -> Log:
    made = Log(parties, tmp_path / "log")
    made.append(
        *(service_event(n) for n in range(5)),
        anomaly("legal", "green", "yellow", 1),
        check("taf1", 0, "r1", 2),
        service_event(5),
    )
    return made


def test_the_watch_verifies_the_head_and_reads_the_events_once(log: Log, tmp_path: Path) -> None:
    watch = log.watch(tmp_path / "monitor" / "accepted-head.json")
    first = watch.check()
    assert first.verified, first.detail
    assert first.size == 8 and first.cosigned_by == ["w1", "w2"]
    with MerkleLogbook(log.path) as book:
        assert first.root_hash == book.head().hex()
    assert "no earlier head to compare" in first.detail
    assert "cosigned by 2 of 2 witnesses" in first.detail
    assert [e.kind for e in watch.events] == [EventKind.ANOMALY, EventKind.FUNCTIONALITY_CHECK]

    log.append(anomaly("legal", "yellow", "red", 3), service_event(6))
    second = watch.check()
    assert second.verified and second.size == 10
    assert "extends the head of size 8 accepted before" in second.detail
    assert anomaly_view(watch.events).state == "red"  # each event read once, in order
    assert [e.detail.get("state_to") for e in watch.events] == ["yellow", None, "red"]
    assert (tmp_path / "monitor" / "accepted-head.json").exists()


def test_a_head_short_of_the_quorum_is_not_verified(log: Log, tmp_path: Path) -> None:
    log.append(service_event(9), cosigners=1)
    found = log.watch(tmp_path / "state.json").check()
    assert not found.verified and found.size is None and found.root_hash is None
    assert found.detail.startswith("missing-cosignature:"), found.detail


def test_an_entry_changed_in_the_file_is_caught(log: Log, tmp_path: Path) -> None:
    with sqlite3.connect(log.path) as db:  # the leaf's bytes, not its stored hash
        db.execute("UPDATE leaves SET entry = ? WHERE idx = 5", (service_event(99).to_json(),))
    watch = log.watch(tmp_path / "state.json")
    found = watch.check()
    assert not found.verified
    assert found.detail == (
        "inconsistent: the entries served do not hash to the cosigned head of size 8"
    )
    assert watch.events == []  # nothing from a log that does not verify


def test_a_rolled_back_log_is_caught(log: Log, parties: Parties, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    log.append(service_event(7), service_event(8))
    assert log.watch(state).check().verified
    older = Log(parties, tmp_path / "older")
    older.append(*(service_event(n) for n in range(3)))
    found = older.watch(state).check()  # the same auditor state, a smaller log
    assert not found.verified
    assert found.detail.startswith("rollback: the log shows size 3, but size 10"), found.detail


def test_a_quorum_beyond_the_witnesses_is_reported(log: Log, tmp_path: Path) -> None:
    found = log.watch(tmp_path / "state.json", quorum=3).check()
    assert not found.verified
    assert found.detail.startswith("check failed: ValueError: quorum 3"), found.detail


def test_an_unreachable_logbook_is_reported(parties: Parties, tmp_path: Path) -> None:
    source = LogbookSource(
        "https://127.0.0.1:9", tmp_path / "none.pem", parties.log.certificate, {}, 0,
        parties.monitor, tmp_path / "state.json",
    )  # fmt: skip
    refused = LogbookWatch(
        source, parties.trust, http=lambda: httpx.Client(base_url="http://127.0.0.1:9")
    ).check()
    assert not refused.verified and refused.detail.startswith("unreachable:")
    no_trust = LogbookWatch(source, parties.trust).check()  # the PEM file is missing
    assert not no_trust.verified and no_trust.detail.startswith("cannot reach it:")


# -- gathering a snapshot -------------------------------------------------------------------
def approve(
    store: ReferenceStore, parties: Parties, serial: int, *components: str
) -> ReferenceList:
    own = AUTHORITY_COMPONENTS["monitor"].load().identification
    entries = [ApprovedIdentification(own.component, own.name, own.version, own.checksum)]
    entries += [
        ApprovedIdentification(c, f"metrocloud-{c}", "1.0.0", ident(c).checksum) for c in components
    ]
    reference = ReferenceList(
        parties.authority.common_name, serial, "2026-03-01T00:00:00+00:00", tuple(entries)
    )
    store.install(sign_reference(parties.authority, reference), parties.trust)
    return reference


def test_a_snapshot_shows_every_failure_as_a_state(
    log: Log, parties: Parties, tmp_path: Path
) -> None:
    store = ReferenceStore(tmp_path / "reference")
    own = AUTHORITY_COMPONENTS["monitor"].load()

    def gather(watch: LogbookWatch | None) -> MonitorSnapshot:
        return asyncio.run(
            gather_snapshot(
                components=["legal", "monitor"], trust=parties.trust, reference=store,
                own=own, own_signer="monitor", nc=None, watch=watch,
            )
        )  # fmt: skip

    bare = gather(None)  # no list, no bus, no logbook: red and unknown, no exception
    assert (bare.reference_serial, bare.reference_detail) == (
        None,
        "no reference list approved yet",
    )
    assert [(s.component, s.reason) for s in bare.components] == [
        ("legal", "no-bus"),
        ("monitor", "no-reference-list"),
    ]
    assert not bare.logbook.verified and bare.logbook.detail == "no logbook configured"
    assert bare.anomaly.state == "unknown" and bare.checks == [] and bare.overall == "red"
    assert bare.own == own.identification and bare.own_changed == ()

    approve(store, parties, 1, "legal")
    snapshot = gather(log.watch(tmp_path / "state.json"))
    assert (snapshot.reference_serial, snapshot.reference_issuer) == (1, "market-surveillance")
    monitor = snapshot.components[1]
    assert monitor.green and monitor.report is not None  # judged from what this process loaded
    assert monitor.report.identification == own.identification
    assert snapshot.logbook.verified and snapshot.logbook.size == 8
    assert snapshot.anomaly.state == "yellow" and snapshot.anomaly.since == at(1).isoformat()
    assert [(c.program, c.passed) for c in snapshot.checks] == [("taf1", True)]
    assert snapshot.overall == "red"  # legal is not on the bus
    assert snapshot.overall_detail() == "red: legal"

    (tmp_path / "reference" / "approved.signed").write_bytes(b"not a list")
    refused = gather(None)
    assert refused.reference_serial is None
    assert refused.reference_detail.startswith("the reference list is refused: malformed-reference")
    assert refused.components[1].reason == "no-reference-list"


def test_before_the_first_snapshot_nothing_is_green() -> None:
    own = AUTHORITY_COMPONENTS["monitor"].load()
    pending = pending_snapshot(["legal", "monitor"], own)
    assert [(s.component, s.badge, s.reason) for s in pending.components] == [
        ("legal", "red", "pending"),
        ("monitor", "red", "pending"),
    ]
    assert pending.overall == "red" and not pending.logbook.verified
    assert pending.anomaly.state == "unknown" and pending.own == own.identification
    page = render_page(pending)
    assert '<span class="badge red" data-testid="badge-legal">red</span>' in page
    assert "gathering its first snapshot" in page


# -- the page -------------------------------------------------------------------------------
def ident(component: str, checksum: str = "") -> SoftwareIdentification:
    return SoftwareIdentification(
        component,
        hashlib.md5(component.encode()).hexdigest(),
        f"metrocloud-{component}",
        "1.0.0",
        checksum or hashlib.sha256(component.encode()).hexdigest(),
    )


def green(component: str) -> ComponentStatus:
    return ComponentStatus(
        component, True, "approved", "approved as DE-M-26-0001",
        ComponentReport(ident(component), (), component),
    )  # fmt: skip


def snapshot(case: str) -> MonitorSnapshot:
    """A synthetic snapshot: ``all-green``, or ``mixed`` (two red components, a logbook
    that does not verify, a red anomaly state and a failed check)."""
    components = [green(c) for c in ("communication", "legal", "logbook", "storage")]
    verified = LogbookIntegrity(
        True, 1234, "ab" * 32, ["witness-1", "witness-2"], "2026-03-02T08:00:00+00:00",
        "head of size 1234 signed by the log; cosigned by 2 of 2 witnesses (quorum 2)",
    )  # fmt: skip
    anomaly = AnomalyView("green", at(0).isoformat(), "every component reported green (legal)")
    checks = [FunctionalityCheckView("taf1", "1.0.0", True, at(3).isoformat(), "12 checks")]
    if case == "mixed":
        components += [
            ComponentStatus(
                "display", False, "other-checksum",
                "checksum not approved for display <script>alert(1)</script>",
                ComponentReport(ident("display", "f" * 64), (), "display"),
            ),
            ComponentStatus("tariff-taf3", False, "no-answer", "tariff-taf3 did not answer"),
        ]  # fmt: skip
        verified = LogbookIntegrity(
            False, None, None, [], "2026-03-02T08:00:00+00:00",
            "missing-cosignature: witness-2 did not cosign",
        )  # fmt: skip
        anomaly = AnomalyView("red", at(2).isoformat(), "storage red by rule disk")
        checks.append(
            FunctionalityCheckView("taf2", "1.0.0", False, at(4).isoformat(), "12 checks, 2 failed")
        )
    return MonitorSnapshot(
        taken_at="2026-03-02T08:00:05+00:00",
        reference_serial=3,
        reference_issuer="market-surveillance",
        components=sorted(components, key=lambda s: s.component),
        own=ident("monitor"),
        logbook=verified,
        anomaly=anomaly,
        checks=checks,
    )


def test_the_status_json() -> None:
    client = TestClient(create_monitor_app(lambda: snapshot("mixed")))
    response = client.get("/status.json")
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    assert body["overall"] == "red"
    assert body["overall_detail"] == "red: display, tariff-taf3; the logbook is not verified"
    assert body["reference"] == {"serial": 3, "issuer": "market-surveillance", "detail": ""}
    assert body["monitor"]["component"] == "monitor" and body["monitor"]["changed"] == []
    rows = {row["component"]: row for row in body["components"]}
    assert rows["legal"] == {
        "component": "legal", "badge": "green", "reason": "approved",
        "detail": "approved as DE-M-26-0001", "instance_id": ident("legal").instance_id,
        "name": "metrocloud-legal", "version": "1.0.0", "checksum": ident("legal").checksum,
        "changed": [], "signed_by": "legal",
    }  # fmt: skip
    assert rows["display"]["badge"] == "red" and rows["display"]["checksum"] == "f" * 64
    assert rows["tariff-taf3"]["reason"] == "no-answer" and rows["tariff-taf3"]["name"] is None
    assert body["logbook"]["verified"] is False and body["logbook"]["cosigned_by"] == []
    assert body["anomaly"] == {
        "state": "red",
        "since": at(2).isoformat(),
        "detail": "storage red by rule disk",
    }
    assert [c["passed"] for c in body["checks"]] == [True, False]
    green_body = TestClient(create_monitor_app(lambda: snapshot("all-green"))).get("/status.json")
    assert green_body.json()["overall"] == "green"


def test_the_html_page() -> None:
    response = TestClient(create_monitor_app(lambda: snapshot("mixed"))).get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert page == render_page(snapshot("mixed"))
    assert '<meta http-equiv="refresh" content="10">' in page
    assert '<span class="badge green" data-testid="badge-legal">green</span>' in page
    assert '<span class="badge red" data-testid="badge-display">red</span>' in page
    assert '<span class="reason">other-checksum</span>' in page
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "f" * 64 in page  # the full checksum
    assert '<span class="badge red" data-testid="overall">red</span>' in page
    assert 'data-testid="logbook-integrity"' in page and "NOT verified" in page
    assert '<span class="badge red" data-testid="anomaly-state">red</span>' in page
    assert '<span class="badge red" data-testid="check-taf2">fail</span>' in page
    assert "http://" not in page and "https://" not in page  # no external assets
    assert "reference list <strong>3</strong> of market-surveillance" in page


# -- the page in a real browser -------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` over plain HTTP on 127.0.0.1 (uvicorn in a thread of its own)."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def badge(page: Page, testid: str) -> tuple[str, str]:
    """The badge's class and text."""
    element = page.get_by_test_id(testid)
    return str(element.get_attribute("class")), element.inner_text()


@pytest.mark.parametrize("case", ["mixed", "all-green"])
def test_the_page_in_chromium(browser: Browser, case: str) -> None:
    shown = snapshot(case)
    with serving(create_monitor_app(lambda: shown)) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url + "/")
        assert page.title() == "metrocloud verification monitor"
        for status in shown.components:
            assert badge(page, f"badge-{status.component}") == (
                f"badge {status.badge}",
                status.badge,
            ), status.component
            row = page.locator(f'tr[data-component="{status.component}"]')
            if not status.green:
                assert row.locator(".reason").inner_text() == status.reason
                assert status.detail in row.inner_text()  # escaped text, shown as text
            else:
                assert row.locator(".reason").count() == 0
        logbook = page.get_by_test_id("logbook-integrity")
        if case == "all-green":
            assert badge(page, "overall") == ("badge green", "green")
            assert badge(page, "logbook-badge") == ("badge green", "verified")
            assert page.get_by_test_id("logbook-size").inner_text() == "1234"
            assert page.get_by_test_id("logbook-cosigners").inner_text() == "witness-1, witness-2"
            assert badge(page, "anomaly-state") == ("badge green", "green")
        else:
            assert badge(page, "overall") == ("badge red", "red")
            assert "NOT verified" in logbook.inner_text()
            assert "missing-cosignature" in logbook.inner_text()
            assert badge(page, "anomaly-state") == ("badge red", "red")
            assert badge(page, "check-taf2") == ("badge red", "fail")
            assert page.evaluate("() => document.scripts.length") == 0
        assert badge(page, "check-taf1") == ("badge green", "pass")
        assert shown.own.checksum in page.get_by_test_id("monitor-identification").inner_text()
        # The badge colours are really there, not just the class names.
        colour = page.get_by_test_id("overall").evaluate("e => getComputedStyle(e).backgroundColor")
        assert colour == ("rgb(26, 127, 55)" if case == "all-green" else "rgb(207, 34, 46)")
        path = screenshot_path(f"monitor-{case}")
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000
