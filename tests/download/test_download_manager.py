"""The download manager offline (no switcher): an approved update is installed on trial; every
other package is refused or fails with its reason, switches nothing, leaves nothing behind,
and is in the logbook as one ``software-update`` event."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from download_support import (
    BASE,
    MAKER,
    SCHEDULE,
    TAF1,
    TAF1_COMPONENT,
    TAF1_NAME,
    TAF2,
    TAF2_COMPONENT,
    FullDisk,
    checksum_over,
    identification,
    metadata,
    moment,
    opened_metadata,
    package,
    release_file,
    release_names,
    source_of,
    taf1_files,
    taf2_files,
    tree,
)

from metrocloud.authority.reference import ApprovedIdentification, ReferenceList
from metrocloud.cloud.software import (
    all_components,
    exclusive_modules,
    host_of,
    updatable_host,
)
from metrocloud.core.events import EventKind, LogEvent, check_detail
from metrocloud.core.messages import Envelope
from metrocloud.core.software import SoftwareId
from metrocloud.download.build import build_update
from metrocloud.download.installroot import TRIAL, InstallRoot, Pointer
from metrocloud.download.manager import DownloadManager, Installation, InstallOutcome
from metrocloud.download.package import pack
from metrocloud.download.preflight import identify
from metrocloud.pki import Identity, IdentityStore, Role, TrustStore

AUTHORITY = "market-surveillance"
A_FILES = taf1_files("2.1.0")
"""The update installed in every test's root (sequence 5)."""
B_FILES = taf1_files("2.2.0")
"""The next update, which installs on top of A."""
LOW_FILES = taf1_files("2.0.5")
BOOM_FILES = taf1_files("2.3.0", b'\nraise RuntimeError("boom")\n')
TAF2_FILES = taf2_files("2.1.0")


@dataclass(frozen=True)
class Software:
    installed: SoftwareId
    a: SoftwareId
    b: SoftwareId
    low: SoftwareId
    boom: SoftwareId
    taf2: SoftwareId
    taf2_installed: SoftwareId


@pytest.fixture(scope="module")
def software() -> Software:
    """The identifications, computed as a manufacturer's build computes them."""
    modules = all_components()[TAF1_COMPONENT].modules
    a = identification(TAF1_COMPONENT, "2.1.0", A_FILES)
    assert checksum_over(modules, A_FILES) == a.checksum  # the helper below computes alike
    return Software(
        installed=SoftwareId(TAF1_NAME, "2.0.0", checksum_over(modules, {})),
        a=a,
        b=identification(TAF1_COMPONENT, "2.2.0", B_FILES),
        low=identification(TAF1_COMPONENT, "2.0.5", LOW_FILES),
        # no process can load it, so no build can identify it: the checksum by hand
        boom=SoftwareId(TAF1_NAME, "2.3.0", checksum_over(modules, BOOM_FILES)),
        taf2=identification(TAF2_COMPONENT, "2.1.0", TAF2_FILES),
        taf2_installed=SoftwareId(
            "metrocloud-tariff-taf2",
            "2.0.0",
            checksum_over(all_components()[TAF2_COMPONENT].modules, {}),
        ),
    )


def reference(*approved: tuple[str, SoftwareId]) -> ReferenceList:
    return ReferenceList(
        AUTHORITY,
        1,
        moment(),
        tuple(ApprovedIdentification(c, s.name, s.version, s.checksum) for c, s in approved),
    )


@pytest.fixture(scope="module")
def approved(software: Software) -> ReferenceList:
    """The authority approved every identification these tests ship (the failing one too)."""
    return reference(
        *[(TAF1_COMPONENT, s) for s in (software.installed, software.a, software.b)],
        (TAF1_COMPONENT, software.low),
        (TAF1_COMPONENT, software.boom),
        (TAF2_COMPONENT, software.taf2),
    )


class Harness:
    """A download manager over ``root`` whose logbook is a list."""

    def __init__(
        self, root: InstallRoot, trust: TrustStore, approved: ReferenceList | None
    ) -> None:
        self.root = root
        self.reference = approved
        self.events: list[LogEvent] = []

        async def log(event: LogEvent) -> None:
            self.events.append(event)

        self.manager = DownloadManager(
            root,
            trust,
            lambda: self.reference,
            Installation(updatable_host, exclusive_modules),
            log,
        )

    def receive(self, raw: bytes) -> tuple[InstallOutcome, LogEvent]:
        """One attempt: its outcome and the one event it logged."""
        before = len(self.events)
        outcome = asyncio.run(self.manager.receive(raw))
        assert len(self.events) == before + 1, "every attempt logs exactly one event"
        return outcome, self.events[-1]

    def refused(self, raw: bytes, result: str, reason: str) -> tuple[InstallOutcome, LogEvent]:
        """An attempt that must change nothing in the install root."""
        before = tree(self.root)
        outcome, event = self.receive(raw)
        assert (outcome.result, outcome.reason) == (result, reason), outcome.detail
        assert tree(self.root) == before  # nothing switched, written or left behind
        assert not any(n.startswith(".") for n in release_names(self.root, outcome.component))
        return outcome, event


def logged(
    event: LogEvent,
    outcome: InstallOutcome,
    old: SoftwareId | None,
    new: SoftwareId | None,
    *,
    by: str = MAKER,
    component: str = TAF1_COMPONENT,
) -> None:
    """``event`` is the software-update event of ``outcome``, and it is what it should be."""
    check_detail(event)
    assert event.kind is EventKind.SOFTWARE_UPDATE
    assert (event.actor, event.subject) == ("download", component)
    assert (outcome.component, outcome.by, outcome.old, outcome.new) == (component, by, old, new)
    detail: dict[str, object] = {
        "component": component,
        "old": None if old is None else old.to_dict(),
        "new": None if new is None else new.to_dict(),
        "result": outcome.result,
        "by": by,
    }
    if outcome.result != "installed":
        assert outcome.reason
        detail["reason"] = outcome.reason
    assert event.detail == detail
    assert LogEvent.from_json(event.to_json()).detail == detail  # as the logbook reads it


@dataclass(frozen=True)
class Installed:
    root: Path
    raw: bytes
    outcome: InstallOutcome
    event: LogEvent


@pytest.fixture(scope="module")
def installed(
    tmp_path_factory: pytest.TempPathFactory,
    maker: Identity,
    trust: TrustStore,
    approved: ReferenceList,
) -> Installed:
    """A root in which update A (2.1.0, sequence 5) was installed: each test starts from a
    copy of it."""
    root = InstallRoot(tmp_path_factory.mktemp("installed") / "software")
    raw = build_update(maker, TAF1_COMPONENT, "2.1.0", 5, A_FILES)
    outcome, event = Harness(root, trust, approved).receive(raw)
    return Installed(root.root, raw, outcome, event)


@pytest.fixture
def harness(
    installed: Installed, tmp_path: Path, trust: TrustStore, approved: ReferenceList
) -> Harness:
    shutil.copytree(installed.root, tmp_path / "software")
    return Harness(InstallRoot(tmp_path / "software"), trust, approved)


POINTER_A = Pointer("5-2.1.0", None, TRIAL, "legal")


# -- installed ----------------------------------------------------------------------------------
def test_an_approved_update_is_installed_on_trial(installed: Installed, software: Software) -> None:
    outcome, root = installed.outcome, InstallRoot(installed.root)
    assert outcome.result == "installed" and outcome.reason is None
    logged(installed.event, outcome, software.installed, software.a)
    assert root.pointer(TAF1_COMPONENT) == POINTER_A
    assert root.on_trial("legal") == [TAF1_COMPONENT]
    release = root.release(TAF1_COMPONENT, "5-2.1.0")
    assert release.modules == (TAF1,)
    assert release_file(release, TAF1) == A_FILES[TAF1]
    assert release_names(root, TAF1_COMPONENT) == ["5-2.1.0"]
    # the next start of the component runs the new code
    found = identify(root.root, TAF1_COMPONENT)
    assert SoftwareId(found["name"], found["version"], found["checksum"]) == software.a


def test_an_update_on_top_of_an_update(
    harness: Harness, maker: Identity, software: Software
) -> None:
    outcome, event = harness.receive(package(maker, software.b, B_FILES, 6))
    assert outcome.result == "installed"
    logged(event, outcome, software.a, software.b)
    assert harness.root.pointer(TAF1_COMPONENT) == Pointer("6-2.2.0", "5-2.1.0", TRIAL, "legal")
    assert release_names(harness.root, TAF1_COMPONENT) == ["5-2.1.0", "6-2.2.0"]


# -- replay and downgrade -------------------------------------------------------------------------
def test_the_same_package_again_is_a_replay(
    harness: Harness, installed: Installed, maker: Identity, software: Software
) -> None:
    outcome, event = harness.refused(installed.raw, "refused", "replayed-metadata")
    logged(event, outcome, software.a, software.a)
    assert "5" in outcome.detail


def test_an_older_sequence_is_a_replay_though_its_version_is_newer(
    harness: Harness, maker: Identity, software: Software
) -> None:
    outcome, event = harness.refused(
        package(maker, software.b, B_FILES, 4), "refused", "replayed-metadata"
    )
    logged(event, outcome, software.a, software.b)
    # a current statement of the same release still installs
    assert harness.receive(package(maker, software.b, B_FILES, 6))[0].result == "installed"


def test_a_lower_version_is_a_rollback_though_its_sequence_is_newer(
    harness: Harness, maker: Identity, software: Software
) -> None:
    outcome, event = harness.refused(
        package(maker, software.low, LOW_FILES, 6), "refused", "rolled-back-version"
    )
    logged(event, outcome, software.a, software.low)
    assert "2.1.0" in outcome.detail and "2.0.5" in outcome.detail


def test_the_running_version_again_is_a_rollback(
    harness: Harness, maker: Identity, software: Software
) -> None:
    outcome, event = harness.refused(
        package(maker, software.a, A_FILES, 6), "refused", "rolled-back-version"
    )
    logged(event, outcome, software.a, software.a)


def test_the_installed_version_is_no_update(
    tmp_path: Path, trust: TrustStore, approved: ReferenceList, maker: Identity, software: Software
) -> None:
    """On a root without updates: the installed code again, under a fresh sequence."""
    fresh = Harness(InstallRoot(tmp_path / "software"), trust, approved)
    same = {TAF1: source_of(TAF1)}
    outcome, event = fresh.refused(
        package(maker, software.installed, same, 1), "refused", "rolled-back-version"
    )
    logged(event, outcome, software.installed, software.installed)
    assert fresh.root.pointer(TAF1_COMPONENT) is None


# -- the component ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "component", ["tariff-taf9", "gateway", "authority", "tariff", "download", "monitor"]
)
def test_an_unknown_component_is_refused(
    harness: Harness, maker: Identity, software: Software, component: str
) -> None:
    raw = package(maker, software.b, B_FILES, 6, component=component)
    outcome, event = harness.refused(raw, "refused", "unknown-component")
    logged(event, outcome, None, software.b, component=component)


@pytest.mark.parametrize(
    ("component", "files", "outside"),
    [
        (TAF1_COMPONENT, {**B_FILES, BASE: source_of(BASE) + b"\n# cheaper\n"}, BASE),
        (TAF1_COMPONENT, {**B_FILES, TAF2: source_of(TAF2)}, TAF2),
        (TAF2_COMPONENT, {**TAF2_FILES, TAF1: B_FILES[TAF1]}, TAF1),
        (TAF1_COMPONENT, {TAF1: B_FILES[TAF1], "metrocloud.cloud.legal": b""}, "cloud.legal"),
    ],
    ids=["shared-base", "other-tariff", "taf2-ships-taf1", "legal-service"],
)
def test_files_outside_the_component_are_refused(
    harness: Harness,
    maker: Identity,
    software: Software,
    component: str,
    files: dict[str, bytes],
    outside: str,
) -> None:
    raw = package(maker, software.b, files, 6, component=component)
    outcome, event = harness.refused(raw, "refused", "outside-component")
    assert outside in outcome.detail
    logged(event, outcome, None, software.b, component=component)


def test_the_exclusive_modules_the_tests_rely_on() -> None:
    assert exclusive_modules(TAF1_COMPONENT) == {TAF1}
    assert exclusive_modules(TAF2_COMPONENT) == {SCHEDULE, TAF2}
    assert host_of(TAF1_COMPONENT) == host_of(TAF2_COMPONENT) == "legal"
    # the download manager runs the download component but does not update itself
    assert host_of("download") == "download" and updatable_host("download") is None


# -- identification and approval ----------------------------------------------------------------
@pytest.mark.parametrize(
    "states",
    [
        lambda b: SoftwareId(b.name, b.version, hashlib.sha256(b"other code").hexdigest()),
        lambda b: SoftwareId(b.name, "2.5.0", b.checksum),
        lambda b: SoftwareId("metrocloud-tariff-taf2", b.version, b.checksum),
    ],
    ids=["checksum", "version", "name"],
)
def test_metadata_stating_another_identification_is_refused(
    harness: Harness,
    maker: Identity,
    software: Software,
    approved: ReferenceList,
    states: Callable[[SoftwareId], SoftwareId],
) -> None:
    claim = states(software.b)
    harness.reference = reference(
        *[(e.component, e.software) for e in approved.entries], (TAF1_COMPONENT, claim)
    )  # approving the claim helps not
    outcome, event = harness.refused(
        package(maker, claim, B_FILES, 6), "refused", "identification-mismatch"
    )
    logged(event, outcome, software.a, claim)
    assert str(software.b) in outcome.detail


@pytest.mark.parametrize("listed", ["without", "other-checksum", "other-component", "empty"])
def test_an_identification_the_authority_did_not_approve_is_refused(
    harness: Harness, maker: Identity, software: Software, approved: ReferenceList, listed: str
) -> None:
    others = [(e.component, e.software) for e in approved.entries if e.software != software.b]
    if listed == "without":
        harness.reference = reference(*others)
    elif listed == "other-checksum":
        other = SoftwareId(software.b.name, software.b.version, hashlib.sha256(b"x").hexdigest())
        harness.reference = reference(*others, (TAF1_COMPONENT, other))
    elif listed == "other-component":
        harness.reference = reference(*others, (TAF2_COMPONENT, software.b))
    else:
        harness.reference = reference()
    raw = package(maker, software.b, B_FILES, 6)
    outcome, event = harness.refused(raw, "refused", "not-approved")
    logged(event, outcome, software.a, software.b)
    # once the authority approves it, the same package installs: the refusal burnt nothing
    harness.reference = approved
    assert harness.receive(raw)[0].result == "installed"
    assert harness.root.pointer(TAF1_COMPONENT) == Pointer("6-2.2.0", "5-2.1.0", TRIAL, "legal")


def test_without_a_reference_list_nothing_is_installed(
    harness: Harness, maker: Identity, software: Software
) -> None:
    harness.reference = None
    outcome, event = harness.refused(
        package(maker, software.b, B_FILES, 6), "refused", "no-reference-list"
    )
    logged(event, outcome, software.a, software.b)


# -- the package itself, at the manager ------------------------------------------------------
@dataclass(frozen=True)
class Bad:
    raw: bytes
    reason: str
    by: str
    new: SoftwareId | None
    component: str = TAF1_COMPONENT


def _unsigned(ids: IdentityStore, maker: Identity, b: SoftwareId) -> Bad:
    return Bad(pack(metadata(b, B_FILES, 6).encode(), B_FILES), "unsigned-package", "unknown", b)


def _tampered(ids: IdentityStore, maker: Identity, b: SoftwareId) -> Bad:
    envelope, _, files = opened_metadata(package(maker, b, B_FILES, 6))
    source = bytearray(files[TAF1])
    source[100] ^= 0x20
    raw = pack(envelope.encode(), {TAF1: bytes(source)})
    return Bad(raw, "digest-mismatch", maker.common_name, b)


def _wrong_role(ids: IdentityStore, maker: Identity, b: SoftwareId) -> Bad:
    service = ids.identity("legal", Role.SERVICE)
    body = metadata(b, B_FILES, 6).encode()
    raw = pack(Envelope(body, service.certificate_der, service.sign(body)).encode(), B_FILES)
    return Bad(raw, "wrong-role", "legal", b)


def _forged(ids: IdentityStore, maker: Identity, b: SoftwareId) -> Bad:
    impostor = ids.identity("impostor-meters", Role.MANUFACTURER)
    body = metadata(b, B_FILES, 6).encode()
    raw = pack(Envelope(body, maker.certificate_der, impostor.sign(body)).encode(), B_FILES)
    return Bad(raw, "bad-signature", maker.common_name, b)


def _expired(ids: IdentityStore, maker: Identity, b: SoftwareId) -> Bad:
    raw = package(
        maker,
        b,
        B_FILES,
        6,
        issued_at=moment(-timedelta(days=2)),
        expires=moment(-timedelta(days=1)),
    )
    return Bad(raw, "expired-metadata", maker.common_name, b)


def _bad_certificate(ids: IdentityStore, maker: Identity, b: SoftwareId) -> Bad:
    der = bytearray(maker.certificate_der)
    der[der.index(b"\xa0\x03\x02\x01\x02") + 4] ^= 0x01  # X.509 version 3 -> 4: none
    body = metadata(b, B_FILES, 6).encode()
    raw = pack(Envelope(body, bytes(der), maker.sign(body)).encode(), B_FILES)
    return Bad(raw, "malformed-certificate", "unknown", b)


def _garbage(ids: IdentityStore, maker: Identity, b: SoftwareId) -> Bad:
    return Bad(b"\x93garbage", "malformed-package", "unknown", None, component="download")


@pytest.mark.parametrize(
    "bad",
    [_unsigned, _tampered, _wrong_role, _forged, _bad_certificate, _expired, _garbage],
    ids=lambda f: f.__name__.strip("_"),
)
def test_a_package_that_does_not_open_is_refused(
    harness: Harness,
    ids: IdentityStore,
    maker: Identity,
    software: Software,
    bad: Callable[[IdentityStore, Identity, SoftwareId], Bad],
) -> None:
    case = bad(ids, maker, software.b)
    outcome, event = harness.refused(case.raw, "refused", case.reason)
    logged(event, outcome, None, case.new, by=case.by, component=case.component)


# -- failures on the way ---------------------------------------------------------------------
def test_code_that_cannot_load_fails_its_preflight(
    harness: Harness, maker: Identity, software: Software
) -> None:
    outcome, event = harness.refused(
        package(maker, software.boom, BOOM_FILES, 6), "failed", "preflight-failed"
    )
    assert "boom" in outcome.detail
    logged(event, outcome, software.a, software.boom)
    assert release_names(harness.root, TAF1_COMPONENT) == ["5-2.1.0"]
    # what was accepted before still runs, and the next good update installs
    assert harness.receive(package(maker, software.b, B_FILES, 7))[0].result == "installed"
    assert harness.root.pointer(TAF1_COMPONENT) == Pointer("7-2.2.0", "5-2.1.0", TRIAL, "legal")


def test_a_disk_that_fills_up_while_staging_leaves_nothing_behind(
    installed: Installed,
    tmp_path: Path,
    trust: TrustStore,
    approved: ReferenceList,
    maker: Identity,
    software: Software,
) -> None:
    shutil.copytree(installed.root, tmp_path / "software")
    disk = FullDisk(tmp_path / "software", fail_at=2)  # the second module file
    harness = Harness(disk, trust, approved)
    raw = package(maker, software.taf2, TAF2_FILES, 1, component=TAF2_COMPONENT)
    outcome, event = harness.refused(raw, "failed", "stage-failed")
    assert disk.written == [f"{SCHEDULE}.py"]  # it did fail halfway
    assert "No space left" in outcome.detail
    logged(event, outcome, software.taf2_installed, software.taf2, component=TAF2_COMPONENT)
    assert release_names(disk, TAF2_COMPONENT) == []
    assert disk.pointer(TAF2_COMPONENT) is None
    assert disk.pointer(TAF1_COMPONENT) == POINTER_A  # the other component is untouched
    # with room on the disk again, the same package installs
    outcome, _ = harness.receive(raw)
    assert outcome.result == "installed", outcome.detail
    assert disk.pointer(TAF2_COMPONENT) == Pointer("1-2.1.0", None, TRIAL, "legal")
    release = disk.release(TAF2_COMPONENT, "1-2.1.0")
    assert {m: release_file(release, m) for m in release.modules} == TAF2_FILES
