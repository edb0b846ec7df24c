"""The authority's check of a component's signed identification answer."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from metrocloud.authority.identification import ComponentReport, open_report
from metrocloud.authority.reference import ApprovedIdentification, ReferenceList
from metrocloud.authority.verification import judge
from metrocloud.core.errors import Rejected
from metrocloud.core.messages import Envelope, SoftwareReport, seal
from metrocloud.core.software import SoftwareIdentification
from metrocloud.pki import Identity, IdentityStore, Role


def report(component: str = "legal", sent: datetime | None = None) -> SoftwareReport:
    return SoftwareReport(
        component=component,
        instance_id="f" * 32,
        name=f"metrocloud-{component}",
        version="1.0.0",
        checksum="c" * 64,
        changed=["metrocloud.cloud.legal"],
        sent_at=(sent or datetime.now(timezone.utc)).isoformat(),
    )


@pytest.fixture(scope="module")
def ids(tmp_path_factory: pytest.TempPathFactory) -> IdentityStore:
    return IdentityStore.open_local(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def legal(ids: IdentityStore) -> Identity:
    return ids.identity("legal", Role.SERVICE)


def test_a_good_answer(ids: IdentityStore, legal: Identity) -> None:
    found = open_report(seal(legal, report()), "legal", ids.trust)
    assert found.identification.checksum == "c" * 64 and found.signed_by == "legal"
    assert found.changed == ("metrocloud.cloud.legal",)


def test_answers_that_do_not_count(ids: IdentityStore, legal: Identity) -> None:
    storage = ids.identity("storage", Role.SERVICE)
    auditor = ids.identity("someone", Role.AUTHORITY)
    stale = datetime.now(timezone.utc) - timedelta(hours=1)
    raw = seal(legal, report())
    envelope = Envelope.decode(raw)
    forged = Envelope(envelope.body.replace(b"c" * 8, b"d" * 8), envelope.certificate,
                      envelope.signature).encode()  # fmt: skip
    cases = {
        "wrong-signer": (seal(storage, report()), "legal"),  # storage speaking for legal
        "wrong-component": (seal(legal, report("storage")), "legal"),
        "wrong-role": (seal(auditor, report("someone")), "someone"),
        "bad-signature": (forged, "legal"),
        "stale-message": (seal(legal, report(sent=stale)), "legal"),
        "malformed-message": (b"\x00junk", "legal"),
    }
    for reason, (raw_answer, component) in cases.items():
        with pytest.raises(Rejected) as refused:
            open_report(raw_answer, component, ids.trust)
        assert refused.value.reason == reason, (reason, refused.value)


def test_badges() -> None:
    ident = SoftwareIdentification("legal", "f" * 32, "metrocloud-legal", "1.0.0", "c" * 64)
    approved = ApprovedIdentification("legal", "metrocloud-legal", "1.0.0", "c" * 64)
    reference = ReferenceList("market-surveillance", 1, "2026-11-21T12:00:00+00:00", (approved,))
    green = judge("legal", ComponentReport(ident, (), "legal"), reference)
    assert green.green and green.badge == "green" and green.reason == "approved"
    changed = judge(
        "legal", ComponentReport(ident, ("metrocloud.cloud.legal",), "legal"), reference
    )
    assert not changed.green and changed.reason == "changed-on-disk"
    assert "metrocloud.cloud.legal" in changed.detail
    other = SoftwareIdentification("legal", "f" * 32, "metrocloud-legal", "1.0.0", "d" * 64)
    refused = judge("legal", ComponentReport(other, (), "legal"), reference)
    assert refused.badge == "red" and refused.reason == "other-checksum"
    unknown = judge("storage", ComponentReport(ident, (), "storage"), reference)
    assert unknown.reason == "unknown-component"
