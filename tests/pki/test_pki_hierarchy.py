"""The hierarchy: a root, five sub-CAs, each role's end-entity profile, CRLs, reopening."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pki_support import (
    common_name,
    crl_number,
    curve_of,
    der,
    extension,
    make_pki,
    public_key,
    refused_by_pki,
    units,
)

from metrocloud.core.errors import ConfigurationError, Rejected
from metrocloud.core.events import EventKind, LogEvent
from metrocloud.pki import PROFILES, Curve, FileKeyStore, Pki, Role, SubCa, TrustStore
from metrocloud.pki.roles import MAX_VALIDITY_DAYS, METROCLOUD_ARC

P256 = "secp256r1"
BRAINPOOL = "brainpoolP256r1"
CLIENT = ExtendedKeyUsageOID.CLIENT_AUTH
SERVER = ExtendedKeyUsageOID.SERVER_AUTH
CODE = ExtendedKeyUsageOID.CODE_SIGNING
MAX_VALIDITY = timedelta(days=MAX_VALIDITY_DAYS)

# What the profiles must say, written out independently of roles.py.
ISSUER = {
    Role.GATEWAY: SubCa.GATEWAYS,
    Role.GATEWAY_ADMINISTRATOR: SubCa.GATEWAY_ADMINISTRATORS,
    Role.MARKET_PARTICIPANT: SubCa.MARKET_PARTICIPANTS,
    Role.RECEIVER: SubCa.MARKET_PARTICIPANTS,
    Role.MANUFACTURER: SubCa.MARKET_PARTICIPANTS,
    Role.SERVICE: SubCa.SERVICES,
    Role.AUTHORITY: SubCa.AUTHORITIES,
}
STANDARD_USAGES = {
    Role.GATEWAY: set(),
    Role.GATEWAY_ADMINISTRATOR: {CLIENT},
    Role.MARKET_PARTICIPANT: {CLIENT},
    Role.RECEIVER: {CLIENT},
    Role.MANUFACTURER: {CODE},
    Role.SERVICE: {SERVER, CLIENT},
    Role.AUTHORITY: {SERVER, CLIENT},  # witnesses and the monitor answer HTTPS
}
DEFAULT_CURVE = {
    Role.GATEWAY: Curve.BRAINPOOL_P256R1,
    Role.GATEWAY_ADMINISTRATOR: Curve.BRAINPOOL_P256R1,
    Role.MARKET_PARTICIPANT: Curve.BRAINPOOL_P256R1,
    Role.RECEIVER: Curve.P256,
    Role.MANUFACTURER: Curve.BRAINPOOL_P256R1,
    Role.SERVICE: Curve.P256,
    Role.AUTHORITY: Curve.P256,
}
DEFAULT_CA_CURVE = {
    SubCa.GATEWAYS: BRAINPOOL,
    SubCa.GATEWAY_ADMINISTRATORS: BRAINPOOL,
    SubCa.MARKET_PARTICIPANTS: BRAINPOOL,
    SubCa.SERVICES: P256,
    SubCa.AUTHORITIES: P256,
}


def seven_years_after(moment: datetime) -> datetime:
    try:
        return moment.replace(year=moment.year + 7)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year + 7, day=28)


def assert_at_most_seven_years(cert: x509.Certificate) -> None:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    assert end - start <= MAX_VALIDITY, f"{common_name(cert)}: {end - start}"
    assert end <= seven_years_after(start), common_name(cert)


def ca_usage_only(cert: x509.Certificate) -> None:
    usage = extension(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign and usage.value.crl_sign
    for bit in ("digital_signature", "content_commitment", "key_encipherment"):
        assert not getattr(usage.value, bit), bit
    for bit in ("data_encipherment", "key_agreement"):
        assert not getattr(usage.value, bit), bit


# -- root and sub-CAs ----------------------------------------------------------------------------


def test_root_is_a_self_signed_ca_with_path_length_one(pki: Pki) -> None:
    root = pki.root
    assert root.subject == root.issuer
    assert common_name(root) == "metrocloud root CA"
    root.verify_directly_issued_by(root)
    constraints = extension(root, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 1
    ca_usage_only(root)
    ski = extension(root, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(root.public_key())
    assert (pki.directory / "root.pem").read_bytes() == root.public_bytes(Encoding.PEM)


def test_there_are_exactly_five_sub_cas(pki: Pki) -> None:
    assert set(pki.sub_cas) == set(SubCa)
    assert len(SubCa) == 5
    assert len({c.serial_number for c in pki.sub_cas.values()}) == 5
    assert sorted(p.name for p in (pki.directory / "ca").iterdir()) == sorted(
        f"{sub.value}.pem" for sub in SubCa
    )


@pytest.mark.parametrize("sub", list(SubCa))
def test_sub_ca_certificate(pki: Pki, sub: SubCa) -> None:
    cert = pki.sub_cas[sub]
    assert cert.issuer == pki.root.subject
    cert.verify_directly_issued_by(pki.root)
    assert common_name(cert) == f"metrocloud {sub.value} CA"
    assert units(cert) == [sub.value]
    constraints = extension(cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    ca_usage_only(cert)
    aki = extension(cert, x509.AuthorityKeyIdentifier).value
    root_ski = extension(pki.root, x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest
    ski = extension(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    assert cert.not_valid_after_utc <= pki.root.not_valid_after_utc
    assert (pki.directory / "ca" / f"{sub.value}.pem").read_bytes() == cert.public_bytes(
        Encoding.PEM
    )


def test_root_validity_is_at_most_seven_years(pki: Pki) -> None:
    assert_at_most_seven_years(pki.root)


def test_sub_ca_and_end_entity_validity_is_at_most_seven_years(pki: Pki) -> None:
    for sub_ca in pki.sub_cas.values():
        assert_at_most_seven_years(sub_ca)
    for role in Role:
        key = public_key(DEFAULT_CURVE[role])
        cert = pki.issue(role, f"long-{role.value}", key, validity_days=MAX_VALIDITY_DAYS)
        assert_at_most_seven_years(cert)
        assert cert.not_valid_after_utc <= pki.sub_cas[ISSUER[role]].not_valid_after_utc


@pytest.mark.parametrize("option", ["root_validity_days", "sub_ca_validity_days"])
def test_init_refuses_validity_beyond_seven_years(tmp_path: Path, option: str) -> None:
    with pytest.raises(Rejected) as info:
        make_pki(tmp_path, **{option: MAX_VALIDITY_DAYS + 1})
    assert info.value.reason == "validity-too-long"


@pytest.mark.parametrize("option", ["root_validity_days", "sub_ca_validity_days"])
def test_refused_init_can_be_retried(tmp_path: Path, option: str) -> None:
    """A refused ``Pki.init`` must not leave keys or files that block a corrected retry."""
    with pytest.raises(Rejected):
        make_pki(tmp_path, **{option: MAX_VALIDITY_DAYS + 1})
    retried = make_pki(tmp_path)
    retried.close()


def test_short_root_caps_sub_cas(tmp_path: Path) -> None:
    short = make_pki(tmp_path, root_validity_days=30)
    for cert in short.sub_cas.values():
        assert cert.not_valid_after_utc == short.root.not_valid_after_utc
    gateway = short.issue(Role.GATEWAY, "gw-1", public_key(Curve.BRAINPOOL_P256R1))
    assert gateway.not_valid_after_utc <= short.root.not_valid_after_utc
    short.close()


# -- curves --------------------------------------------------------------------------------------


def test_default_curves(pki: Pki) -> None:
    assert curve_of(pki.root) == P256
    assert {sub: curve_of(cert) for sub, cert in pki.sub_cas.items()} == DEFAULT_CA_CURVE
    settings = json.loads((pki.directory / "pki.json").read_text())
    assert settings["root_curve"] == "P-256"
    assert settings["ca_curves"]["gateways"] == "brainpoolP256r1"
    assert settings["ca_curves"]["services"] == "P-256"


def test_curve_overrides(tmp_path: Path) -> None:
    custom = make_pki(
        tmp_path,
        root_curve=Curve.BRAINPOOL_P256R1,
        ca_curves={SubCa.GATEWAYS: Curve.P256, SubCa.SERVICES: Curve.BRAINPOOL_P256R1},
    )
    assert curve_of(custom.root) == BRAINPOOL
    expected = {**DEFAULT_CA_CURVE, SubCa.GATEWAYS: P256, SubCa.SERVICES: BRAINPOOL}
    assert {sub: curve_of(cert) for sub, cert in custom.sub_cas.items()} == expected
    reopened = Pki(custom.directory, FileKeyStore(tmp_path / "keys"))
    assert reopened.settings["ca_curves"]["services"] == "brainpoolP256r1"
    custom.close()


def test_all_brainpool_hierarchy(brainpool_pki: Pki) -> None:
    assert curve_of(brainpool_pki.root) == BRAINPOOL
    assert {curve_of(c) for c in brainpool_pki.sub_cas.values()} == {BRAINPOOL}
    trust = brainpool_pki.trust_store()
    for role in Role:
        cert = brainpool_pki.issue(role, f"bp-{role.value}", public_key(DEFAULT_CURVE[role]))
        cert.verify_directly_issued_by(brainpool_pki.sub_cas[ISSUER[role]])
        assert trust.verify(der(cert), expected_role=role) == cert
    for sub in (None, *SubCa):
        crl = brainpool_pki.crl(sub)
        issuer = brainpool_pki.root if sub is None else brainpool_pki.sub_cas[sub]
        assert crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]


# -- end entities --------------------------------------------------------------------------------


def test_profiles_match_the_expected_table() -> None:
    assert set(PROFILES) == set(Role)
    for role, profile in PROFILES.items():
        assert profile.issuer is ISSUER[role]
        assert profile.default_curve is DEFAULT_CURVE[role]
        assert set(profile.usages) == STANDARD_USAGES[role] | {role.oid}
    assert PROFILES[Role.SERVICE].curves == frozenset({Curve.P256})


def test_role_oids_are_distinct_and_under_the_metrocloud_arc() -> None:
    oids = [role.oid.dotted_string for role in Role]
    assert len(set(oids)) == len(Role)
    assert all(oid.startswith(f"{METROCLOUD_ARC}.1.") for oid in oids)
    assert Role.GATEWAY.oid.dotted_string == f"{METROCLOUD_ARC}.1.1"


@pytest.mark.parametrize("role", list(Role))
def test_end_entity_profile(pki: Pki, role: Role) -> None:
    key = public_key(DEFAULT_CURVE[role])
    before = datetime.now(timezone.utc)
    cert = pki.issue(role, f"holder-{role.value}", key)
    issuer = pki.sub_cas[ISSUER[role]]
    assert cert.issuer == issuer.subject
    cert.verify_directly_issued_by(issuer)
    assert cert.public_key() == key
    assert common_name(cert) == f"holder-{role.value}"
    assert units(cert) == [role.value]
    organization = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [str(a.value) for a in organization] == ["metrocloud"]
    constraints = extension(cert, x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = extension(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value == x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    usages = extension(cert, x509.ExtendedKeyUsage).value
    assert set(usages) == STANDARD_USAGES[role] | {role.oid}
    assert len(list(usages)) == len(STANDARD_USAGES[role]) + 1
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    aki = extension(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == extension(issuer, x509.SubjectKeyIdentifier).value.digest
    assert extension(cert, x509.SubjectKeyIdentifier).value == (
        x509.SubjectKeyIdentifier.from_public_key(key)
    )
    days = 3 * 365 if role in (Role.GATEWAY, Role.MANUFACTURER, Role.AUTHORITY) else 2 * 365
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=days)
    assert cert.not_valid_before_utc <= before
    assert timedelta(0) < before - cert.not_valid_before_utc <= timedelta(minutes=6)


def test_subject_alternative_names_only_for_servers(pki: Pki) -> None:
    service = pki.issue(
        Role.SERVICE,
        "svc-legal",
        public_key(Curve.P256),
        dns_names=["svc-legal.metrocloud.internal"],
        ip_addresses=["10.0.0.7", "::1"],
    )
    names = extension(service, x509.SubjectAlternativeName)
    assert not names.critical
    assert names.value.get_values_for_type(x509.DNSName) == ["svc-legal.metrocloud.internal"]
    assert [str(a) for a in names.value.get_values_for_type(x509.IPAddress)] == [
        "10.0.0.7",
        "::1",
    ]
    for role in Role:
        if role in (Role.SERVICE, Role.AUTHORITY):  # the roles that answer HTTPS
            continue
        key = public_key(DEFAULT_CURVE[role])
        event = refused_by_pki(
            pki,
            "forbidden-extension",
            lambda role=role, key=key: pki.issue(role, "named", key, dns_names=["x.example"]),
        )
        assert event.subject == "named"
        refused_by_pki(
            pki,
            "forbidden-extension",
            lambda role=role, key=key: pki.issue(role, "named", key, ip_addresses=["10.0.0.1"]),
        )


def test_serial_numbers_are_random_and_distinct(pki: Pki) -> None:
    key = public_key(Curve.P256)
    serials = {pki.issue(Role.SERVICE, "svc", key).serial_number for _ in range(8)}
    assert len(serials) == 8
    assert all(s.bit_length() > 64 for s in serials)


def test_chain_certificate_and_issued(pki: Pki) -> None:
    assert pki.chain(Role.RECEIVER) == [pki.sub_cas[SubCa.MARKET_PARTICIPANTS], pki.root]
    assert pki.chain(Role.GATEWAY) == [pki.sub_cas[SubCa.GATEWAYS], pki.root]
    cert = pki.issue(Role.RECEIVER, "rcv-listed", public_key(Curve.P256))
    assert pki.certificate(cert.serial_number) == cert
    with pytest.raises(KeyError):
        pki.certificate(cert.serial_number + 1)
    row = next(r for r in pki.issued() if r["serial"] == format(cert.serial_number, "x"))
    assert row["issuer"] == "market-participants" and row["role"] == "receiver"
    assert row["common_name"] == "rcv-listed" and row["revoked_at"] is None
    pki.revoke(cert.serial_number, x509.ReasonFlags.key_compromise)
    row = next(r for r in pki.issued() if r["serial"] == format(cert.serial_number, "x"))
    assert row["revoked_at"] is not None and row["reason"] == "keyCompromise"


# -- CRLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sub", [None, *SubCa])
def test_first_crls(tmp_path: Path, sub: SubCa | None) -> None:
    fresh = make_pki(tmp_path)
    crl = fresh.crl(sub)
    issuer = fresh.root if sub is None else fresh.sub_cas[sub]
    assert crl.issuer == issuer.subject
    assert crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    assert crl_number(crl) == 1
    assert len(list(crl)) == 0
    aki = extension(crl, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == extension(issuer, x509.SubjectKeyIdentifier).value.digest
    assert crl.next_update_utc is not None
    days = 90 if sub is None else 7
    assert crl.next_update_utc - crl.last_update_utc == timedelta(days=days)
    name = "root" if sub is None else sub.value
    assert (fresh.directory / "crl" / f"{name}.crl").read_bytes() == crl.public_bytes(Encoding.DER)
    assert fresh.crl(sub) == crl  # unchanged: not signed again
    fresh.close()


def test_crl_is_renewed_past_half_its_validity(
    fresh_pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    import metrocloud.pki.authority as authority

    first_sub, first_root = fresh_pki.crl(SubCa.GATEWAYS), fresh_pki.crl(None)
    shift = timedelta(days=4)  # past half of the 7 days of a sub-CA CRL, not of the root's 90

    class Later(datetime):
        @classmethod
        def now(cls, tz: object = None) -> Later:  # type: ignore[override]
            moment = datetime.now(timezone.utc) + shift
            return cls.fromtimestamp(moment.timestamp(), timezone.utc)

    monkeypatch.setattr(authority, "datetime", Later)
    renewed = fresh_pki.crl(SubCa.GATEWAYS)
    assert crl_number(renewed) == crl_number(first_sub) + 1
    assert renewed.last_update_utc >= first_sub.last_update_utc + shift - timedelta(seconds=5)
    assert fresh_pki.crl(None) == first_root


# -- creating and reopening ----------------------------------------------------------------------


def test_init_refuses_an_existing_pki(pki: Pki) -> None:
    before = (pki.directory / "root.pem").read_bytes()
    with pytest.raises(FileExistsError):
        Pki.init(pki.directory, pki.keys)
    with pytest.raises(FileExistsError):
        Pki.init(pki.directory, FileKeyStore(pki.directory.parent / "other-keys"))
    assert (pki.directory / "root.pem").read_bytes() == before


def test_init_refuses_a_directory_with_only_a_root(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "root.pem").write_bytes(b"somebody's root")
    with pytest.raises(FileExistsError):
        make_pki(tmp_path)
    assert (tmp_path / "pki" / "root.pem").read_bytes() == b"somebody's root"


def test_opening_a_directory_without_pki_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="holds no PKI"):
        Pki(tmp_path, FileKeyStore(tmp_path / "keys"))


def test_reopened_pki_issues_under_the_same_sub_cas(tmp_path: Path) -> None:
    first = make_pki(tmp_path)
    gateway = first.issue(Role.GATEWAY, "gw-1", public_key(Curve.BRAINPOOL_P256R1))
    first.close()
    reopened = Pki(tmp_path / "pki", FileKeyStore(tmp_path / "keys"))
    assert reopened.root == first.root
    assert reopened.sub_cas == first.sub_cas
    assert reopened.certificate(gateway.serial_number) == gateway
    for role in Role:
        cert = reopened.issue(role, f"again-{role.value}", public_key(DEFAULT_CURVE[role]))
        cert.verify_directly_issued_by(first.sub_cas[ISSUER[role]])
        first.trust_store().verify(der(cert), expected_role=role)
    reopened.revoke(gateway.serial_number)
    assert crl_number(reopened.crl(SubCa.GATEWAYS)) == 2  # numbering goes on
    from_files = TrustStore.from_directory(tmp_path / "pki")
    assert from_files.root == first.root and from_files.sub_cas == first.sub_cas
    with pytest.raises(Rejected) as info:
        from_files.verify(der(gateway))
    assert info.value.reason == "certificate-revoked"
    reopened.close()


def test_audit_callable_receives_events_instead_of_the_own_logbook(tmp_path: Path) -> None:
    events: list[LogEvent] = []
    audited = Pki.init(tmp_path / "pki", FileKeyStore(tmp_path / "keys"), audit=events.append)
    assert [e.kind for e in events] == [EventKind.SERVICE]
    cert = audited.issue(Role.AUTHORITY, "ptb", public_key(Curve.P256))
    with pytest.raises(Rejected):
        audited.issue(Role.AUTHORITY, "bad name", public_key(Curve.P256))
    assert [e.kind for e in events[1:]] == [EventKind.CERTIFICATE_ISSUED, EventKind.REJECTION]
    assert events[1].detail["serial"] == format(cert.serial_number, "x")
    assert not (tmp_path / "pki" / "logbook.sqlite").exists()
    audited.close()
