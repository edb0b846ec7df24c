"""The authority's signed list of approved software identifications, and its store."""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrocloud.authority.reference import (
    ApprovedIdentification,
    DuplicateEntry,
    ReferenceList,
    ReferenceStore,
    encode_reference,
    open_reference,
    sign_reference,
)
from metrocloud.core.errors import Rejected
from metrocloud.core.messages import Envelope
from metrocloud.core.software import SoftwareId
from metrocloud.pki import Identity, IdentityStore, Role, TrustStore

AUTHORITY = "market-surveillance"
ISSUED = "2025-03-01T09:00:00+00:00"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


LEGAL_1_0 = ApprovedIdentification(
    "legal", "metrocloud-legal", "1.0", digest("legal 1.0"), "2025-01-15", "DE-M-25-001"
)
LEGAL_1_1 = ApprovedIdentification(
    "legal", "metrocloud-legal", "1.1", digest("legal 1.1"), "2025-02-20T10:30:00+01:00"
)
DISPLAY = ApprovedIdentification(
    "display", "metrocloud-display", "2.3", digest("display 2.3"), None, "DE-M-24-117"
)


@pytest.fixture(scope="module")
def ids(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdentityStore]:
    store = IdentityStore.open_local(tmp_path_factory.mktemp("reference-pki"))
    yield store
    assert store.pki is not None
    store.pki.close()


@pytest.fixture(scope="module")
def authority(ids: IdentityStore) -> Identity:
    return ids.identity(AUTHORITY, Role.AUTHORITY)


@pytest.fixture(scope="module")
def trust(ids: IdentityStore, authority: Identity) -> TrustStore:
    assert ids.pki is not None
    return ids.pki.trust_store()


def reference(serial: int = 1, *entries: ApprovedIdentification) -> ReferenceList:
    return ReferenceList(AUTHORITY, serial, ISSUED, entries or (LEGAL_1_1, DISPLAY, LEGAL_1_0))


def envelope(signer: Identity, body: bytes) -> bytes:
    """``body`` signed by ``signer`` as it is, whatever it holds."""
    return Envelope(body, signer.certificate_der, signer.sign(body)).encode()


def rejected(reason: str, call: Callable[[], object]) -> Rejected:
    with pytest.raises(Rejected) as info:
        call()
    assert info.value.reason == reason, info.value
    return info.value


# -- round trip and verdicts ----------------------------------------------------------


def test_round_trip(authority: Identity, trust: TrustStore) -> None:
    original = reference(7)
    opened = open_reference(sign_reference(authority, original), trust, not_before_serial=6)
    assert opened == original
    assert opened.issuer == AUTHORITY
    assert [e.version for e in opened.approved("legal")] == ["1.0", "1.1"]
    assert opened.approved("display") == [DISPLAY]
    assert opened.approved("tariff") == []


def test_canonical_body() -> None:
    body = encode_reference(reference(3))
    assert b" " not in body
    data = json.loads(body)
    assert list(data) == sorted(data)
    assert data["kind"] == "approved-identifications"
    assert [e["version"] for e in data["entries"]] == ["2.3", "1.0", "1.1"]
    assert data["entries"][0]["approved_at"] is None
    assert body == json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("query", "approved", "reason", "detail"),
    [
        (
            ("legal", "metrocloud-legal", "1.0", digest("legal 1.0")),
            True,
            "approved",
            "DE-M-25-001",
        ),
        (("legal", "metrocloud-legal", "1.1", digest("legal 1.1")), True, "approved", "approved"),
        (
            ("legal", "metrocloud-legal", "1.1", digest("legal 1.1").upper()),
            True,
            "approved",
            "approved",
        ),
        (
            ("tariff", "metrocloud-legal", "1.0", digest("legal 1.0")),
            False,
            "unknown-component",
            "",
        ),
        (
            ("legal", "metrocloud-legal", "1.0", digest("patched")),
            False,
            "other-checksum",
            "another checksum",
        ),
        (
            ("legal", "metrocloud-legal", "1.2", digest("legal 1.0")),
            False,
            "other-version",
            "as metrocloud-legal 1.0",
        ),
        (("legal", "metrocloud-legal", "1.2", digest("x")), False, "unknown-version", "1.2"),
        (("legal", "other-legal", "1.0", digest("x")), False, "unknown-software", "other-legal"),
        (("legal", "metrocloud-legal", "1.0", "abc"), False, "malformed-checksum", ""),
        (
            ("display", "metrocloud-display", "2.3", digest("legal 1.0")),
            False,
            "other-checksum",
            "",
        ),
    ],
)
def test_verdicts(
    query: tuple[str, str, str, str], approved: bool, reason: str, detail: str
) -> None:
    verdict = reference().verdict(*query)
    assert (verdict.approved, verdict.reason) == (approved, reason)
    assert detail in str(verdict)
    assert (verdict.entry is not None) == approved


def test_verdict_of_a_software_id() -> None:
    ok = reference().verdict_of(
        "display", SoftwareId("metrocloud-display", "2.3", DISPLAY.checksum)
    )
    assert ok.approved and ok.detail == "approved as DE-M-24-117" and ok.entry == DISPLAY


@pytest.mark.parametrize(
    "fields",
    [
        {"checksum": "A" * 64},
        {"checksum": "0" * 63},
        {"checksum": "g" * 64},
        {"checksum": "0" * 64 + "\n"},
        {"component": ""},
        {"name": " padded"},
        {"version": "1.0\n"},
        {"approved_at": "2025-01-15T10:00:00"},
        {"approved_at": "yesterday"},
        {"certificate": ""},
    ],
)
def test_entries_are_validated(fields: dict[str, Any]) -> None:
    values: dict[str, Any] = {**LEGAL_1_0.to_dict(), **fields}
    with pytest.raises(ValueError):
        ApprovedIdentification(**values)


def test_lists_are_validated() -> None:
    with pytest.raises(DuplicateEntry):
        reference(1, LEGAL_1_0, DISPLAY, LEGAL_1_0)
    with pytest.raises(ValueError):
        ReferenceList(AUTHORITY, -1, ISSUED, ())
    with pytest.raises(ValueError):
        ReferenceList(AUTHORITY, 1, "2025-03-01T09:00:00", ())


# -- who signs ------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.SERVICE, Role.MANUFACTURER, Role.GATEWAY])
def test_only_an_authority_signs(ids: IdentityStore, trust: TrustStore, role: Role) -> None:
    other = ids.identity(f"not-authority-{role.value}", role)
    rejected("wrong-role", lambda: sign_reference(other, reference()))
    forged = envelope(other, encode_reference(reference()))
    rejected("wrong-role", lambda: open_reference(forged, trust))


def test_the_signer_is_the_issuer(authority: Identity) -> None:
    with pytest.raises(ValueError):
        sign_reference(authority, ReferenceList("someone-else", 1, ISSUED, (DISPLAY,)))


def test_a_revoked_authority_is_refused(tmp_path: Path) -> None:
    ids = IdentityStore.open_local(tmp_path)
    assert ids.pki is not None
    try:
        identity = ids.identity(AUTHORITY, Role.AUTHORITY)
        signed = sign_reference(identity, reference())
        store = ReferenceStore(tmp_path / "authority")
        store.install(signed, ids.pki.trust_store())
        ids.pki.revoke(identity.certificate.serial_number)
        trust = ids.pki.trust_store()
        rejected("certificate-revoked", lambda: open_reference(signed, trust))
        rejected("certificate-revoked", lambda: store.current(trust))
    finally:
        ids.pki.close()


def test_a_flipped_body_byte_breaks_the_signature(authority: Identity, trust: TrustStore) -> None:
    signed = Envelope.decode(sign_reference(authority, reference()))
    body = bytearray(signed.body)
    at = body.index(b"DE-M-25-001")
    body[at + 10] ^= 0x01  # "DE-M-25-000": still a valid body
    tampered = Envelope(bytes(body), signed.certificate, signed.signature).encode()
    rejected("bad-signature", lambda: open_reference(tampered, trust))


def test_tampered_and_resigned_by_a_service(
    ids: IdentityStore, authority: Identity, trust: TrustStore
) -> None:
    body = Envelope.decode(sign_reference(authority, reference())).body
    tampered = body.replace(digest("legal 1.0").encode(), digest("patched").encode())
    service = ids.identity("operator-legal", Role.SERVICE)
    rejected("wrong-role", lambda: open_reference(envelope(service, tampered), trust))
    # the authority's certificate with the service's signature
    mixed = Envelope(tampered, authority.certificate_der, service.sign(tampered)).encode()
    rejected("bad-signature", lambda: open_reference(mixed, trust))


# -- malformed bodies -----------------------------------------------------------------


def canonical(data: object) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def valid_body() -> dict[str, Any]:
    return json.loads(encode_reference(reference(4)))  # type: ignore[no-any-return]


def _entry(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def apply(body: dict[str, Any]) -> None:
        change(body["entries"][1])

    return apply


def _set(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.__setitem__(key, value)


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.__delitem__(key)


BODY_CHANGES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "missing entry field": (_entry(_drop("checksum")), "malformed-reference"),
    "missing optional field": (_entry(_drop("certificate")), "malformed-reference"),
    "missing serial": (_drop("serial"), "malformed-reference"),
    "extra entry field": (_entry(_set("comment", "x")), "malformed-reference"),
    "extra top field": (_set("issuer", AUTHORITY), "malformed-reference"),
    "bad hex": (_entry(_set("checksum", "z" * 64)), "malformed-reference"),
    "short hex": (_entry(_set("checksum", "0" * 62)), "malformed-reference"),
    "uppercase hex": (_entry(_set("checksum", digest("legal 1.0").upper())), "malformed-reference"),
    "version as int": (_entry(_set("version", 1)), "malformed-reference"),
    "certificate as list": (_entry(_set("certificate", ["x"])), "malformed-reference"),
    "empty name": (_entry(_set("name", "")), "malformed-reference"),
    "naive approved_at": (
        _entry(_set("approved_at", "2025-01-15T10:00:00")),
        "malformed-reference",
    ),
    "serial as string": (_set("serial", "4"), "malformed-reference"),
    "serial as bool": (_set("serial", True), "malformed-reference"),
    "serial as float": (_set("serial", 4.0), "malformed-reference"),
    "negative serial": (_set("serial", -4), "malformed-reference"),
    "naive issued_at": (_set("issued_at", "2025-03-01T09:00:00"), "malformed-reference"),
    "Z issued_at": (_set("issued_at", "2025-03-01T09:00:00Z"), "malformed-reference"),
    "entries as object": (_set("entries", {}), "malformed-reference"),
    "entry as list": (lambda d: d["entries"].append([]), "malformed-reference"),
    "other kind": (_set("kind", "tariff-result"), "malformed-reference"),
    "other format version": (_set("v", 2), "malformed-reference"),
    "unsorted entries": (lambda d: d["entries"].reverse(), "malformed-reference"),
    "duplicate entry": (lambda d: d["entries"].insert(1, d["entries"][1]), "duplicate-entry"),
}


@pytest.mark.parametrize(("change", "reason"), BODY_CHANGES.values(), ids=BODY_CHANGES.keys())
def test_malformed_bodies(
    authority: Identity,
    trust: TrustStore,
    change: Callable[[dict[str, Any]], None],
    reason: str,
) -> None:
    body = valid_body()
    assert open_reference(envelope(authority, canonical(body)), trust).serial == 4
    change(body)
    rejected(reason, lambda: open_reference(envelope(authority, canonical(body)), trust))


def _spaced() -> bytes:
    return json.dumps(valid_body(), sort_keys=True).encode()


def _duplicate_key() -> bytes:
    return canonical(valid_body()).replace(b'"serial":4', b'"serial":3,"serial":4')


RAW_BODIES: dict[str, Callable[[], bytes]] = {
    "whitespace": _spaced,
    "duplicate key": _duplicate_key,
    "escaped ascii": lambda: canonical(valid_body()).replace(b'"legal"', b'"\\u006cegal"', 1),
    "not json": lambda: b"cosignature/v1\ntime 1\n",
    "not utf-8": lambda: canonical(valid_body()).replace(b"legal", b"l\xe9gal", 1),
    "nan": lambda: canonical(valid_body()).replace(b'"serial":4', b'"serial":NaN'),
    "array": lambda: b"[]",
    "deep": lambda: b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("make", RAW_BODIES.values(), ids=RAW_BODIES.keys())
def test_malformed_raw_bodies(
    authority: Identity, trust: TrustStore, make: Callable[[], bytes]
) -> None:
    signed = envelope(authority, make())
    rejected("malformed-reference", lambda: open_reference(signed, trust))


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x80", b"{}", b"not msgpack at all", b"\x81\xa1v\x02"],
    ids=["empty", "fixmap", "json", "text", "version 2"],
)
def test_malformed_envelopes(trust: TrustStore, raw: bytes) -> None:
    rejected("malformed-reference", lambda: open_reference(raw, trust))


def test_a_non_canonical_envelope_is_refused(authority: Identity, trust: TrustStore) -> None:
    import msgpack

    signed = Envelope.decode(sign_reference(authority, reference()))
    extra = msgpack.packb(
        {"v": 1, "body": signed.body, "cert": signed.certificate, "sig": signed.signature, "x": 1},
        use_bin_type=True,
    )
    rejected("malformed-reference", lambda: open_reference(extra, trust))


# -- rollback and the store -----------------------------------------------------------


def test_open_refuses_an_old_serial(authority: Identity, trust: TrustStore) -> None:
    signed = sign_reference(authority, reference(5))
    assert open_reference(signed, trust, not_before_serial=4).serial == 5
    for floor in (5, 6):
        rejected(
            "rolled-back-reference",
            lambda floor=floor: open_reference(signed, trust, not_before_serial=floor),
        )


def test_store_install_and_rollback(tmp_path: Path, authority: Identity, trust: TrustStore) -> None:
    store = ReferenceStore(tmp_path / "approved")
    assert store.current(trust) is None and store.serial() is None
    assert store.install(sign_reference(authority, reference(5)), trust).serial == 5
    assert stat.S_IMODE(store.list_path.stat().st_mode) == 0o644
    assert store.serial_path.read_text() == "5\n"
    stored = store.list_path.read_bytes()
    for serial in (5, 4, 1):
        older = sign_reference(authority, reference(serial, DISPLAY))
        rejected("rolled-back-reference", lambda older=older: store.install(older, trust))
        assert store.list_path.read_bytes() == stored
        assert store.serial() == 5
    assert store.current(trust) == reference(5)
    newer = store.install(sign_reference(authority, reference(6, DISPLAY)), trust)
    assert store.current(trust) == newer and store.serial() == 6


def test_store_refuses_a_changed_file(
    tmp_path: Path, authority: Identity, trust: TrustStore
) -> None:
    store = ReferenceStore(tmp_path)
    old = sign_reference(authority, reference(1))
    store.install(old, trust)
    store.install(sign_reference(authority, reference(2, DISPLAY)), trust)
    good = store.list_path.read_bytes()

    changed = good.replace(DISPLAY.checksum.encode(), digest("patched").encode())
    assert changed != good
    store.list_path.write_bytes(changed)
    rejected("bad-signature", lambda: store.current(trust))

    store.list_path.write_bytes(good[:-1])
    rejected("malformed-reference", lambda: store.current(trust))

    store.list_path.write_bytes(old)  # well signed, but older than what was accepted
    rejected("rolled-back-reference", lambda: store.current(trust))

    store.list_path.write_bytes(good)
    store.serial_path.write_text("two\n")
    rejected("malformed-reference", lambda: store.current(trust))


def test_store_accepts_a_list_newer_than_its_serial_file(
    tmp_path: Path, authority: Identity, trust: TrustStore
) -> None:
    """A crash between the two writes leaves the list ahead of the serial file."""
    store = ReferenceStore(tmp_path)
    store.install(sign_reference(authority, reference(1)), trust)
    store.list_path.write_bytes(sign_reference(authority, reference(2, DISPLAY)))
    assert store.current(trust) == reference(2, DISPLAY)
    rejected(
        "rolled-back-reference",
        lambda: store.install(sign_reference(authority, reference(1, DISPLAY)), trust),
    )


def test_open_at_a_moment(authority: Identity, trust: TrustStore) -> None:
    signed = sign_reference(authority, reference())
    soon = datetime.now(timezone.utc) + timedelta(minutes=1)
    assert open_reference(signed, trust, at=soon) == reference()
    with pytest.raises(Rejected):  # the certificate (or its CRL) no longer valid
        open_reference(signed, trust, at=soon + timedelta(days=4000))


# -- properties -----------------------------------------------------------------------

_text = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=10).filter(
    lambda s: s.isprintable() and s == s.strip()
)
_moment = st.one_of(
    st.none(),
    st.dates().map(date.isoformat),
    st.datetimes(
        timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-5, minutes=-30))])
    ).map(datetime.isoformat),
)
_entry_strategy = st.builds(
    ApprovedIdentification,
    component=st.sampled_from(["legal", "display", "tariff"]) | _text,
    name=st.sampled_from(["metrocloud-legal", "m"]) | _text,
    version=st.sampled_from(["1.0", "1.1", "10.0"]) | _text,
    checksum=st.binary(min_size=32, max_size=32).map(bytes.hex),
    approved_at=_moment,
    certificate=st.none() | _text,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=st.lists(_entry_strategy, max_size=8, unique_by=lambda e: e.key),
    serial=st.integers(0, 2**63 - 1),
    data=st.data(),
)
def test_any_valid_list_round_trips(
    authority: Identity,
    trust: TrustStore,
    entries: list[ApprovedIdentification],
    serial: int,
    data: st.DataObject,
) -> None:
    original = ReferenceList(AUTHORITY, serial, ISSUED, tuple(entries))
    shuffled = data.draw(st.permutations(entries))
    assert encode_reference(ReferenceList(AUTHORITY, serial, ISSUED, tuple(shuffled))) == (
        encode_reference(original)
    )
    assert open_reference(sign_reference(authority, original), trust) == original
    for entry in entries:
        assert original.verdict(entry.component, entry.name, entry.version, entry.checksum).approved
