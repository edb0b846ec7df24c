"""Role checks: subject OU, role usage and issuing sub-CA agree and match the expected role."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from pki_support import ca_key, der, forge, public_key, rejected_by, subject

from metrocloud.core.errors import Rejected
from metrocloud.pki import PROFILES, Curve, Pki, Role, SubCa, TrustStore, certificate_role


@pytest.fixture(scope="module")
def by_role(pki: Pki) -> dict[Role, bytes]:
    """One certificate (DER) of every role, on the role's default curve."""
    return {
        role: der(pki.issue(role, f"holder-{role.value}", public_key(PROFILES[role].default_curve)))
        for role in Role
    }


@pytest.mark.parametrize("role", list(Role))
def test_certificate_is_accepted_for_its_own_role_only(
    trust: TrustStore, by_role: dict[Role, bytes], role: Role
) -> None:
    cert = trust.verify(by_role[role], expected_role=role)
    assert certificate_role(cert) is role
    assert trust.verify(by_role[role]) == cert  # no expected role: any
    for other in Role:
        if other is role:
            continue
        error = rejected_by(trust, by_role[role], expected_role=other)
        assert error.reason == "wrong-role", other
        assert f"holder-{role.value}" in error.detail
        assert other.value in error.detail


def test_market_participant_cannot_act_as_gateway(
    trust: TrustStore, by_role: dict[Role, bytes]
) -> None:
    error = rejected_by(trust, by_role[Role.MARKET_PARTICIPANT], expected_role=Role.GATEWAY)
    assert error.reason == "wrong-role"


def test_forged_gateway_from_the_market_participants_ca_is_refused(
    pki: Pki, trust: TrustStore
) -> None:
    """Right OU, right usage and a valid signature, but the wrong sub-CA for a gateway."""
    key = pki.keys.load("ca-market-participants")
    forged = forge(
        pki,
        SubCa.MARKET_PARTICIPANTS,
        name=subject("gw-forged", "gateway"),
        usages=[Role.GATEWAY.oid],
        signer=key.private_key,  # type: ignore[attr-defined]
    )
    forged.verify_directly_issued_by(pki.sub_cas[SubCa.MARKET_PARTICIPANTS])  # really signed
    for expected in (Role.GATEWAY, None):
        error = rejected_by(trust, der(forged), expected_role=expected)
        assert error.reason == "wrong-role"
        assert "market-participants" in error.detail and "gateway" in error.detail


def test_same_forgery_from_the_gateways_ca_is_accepted(pki: Pki, trust: TrustStore) -> None:
    """The control for the forgery above: only the issuer differs."""
    genuine = forge(pki, SubCa.GATEWAYS, name=subject("gw-hand", "gateway"))
    assert certificate_role(trust.verify(der(genuine), expected_role=Role.GATEWAY)) is Role.GATEWAY


@pytest.mark.parametrize(
    "usages",
    [
        None,
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        [Role.MARKET_PARTICIPANT.oid],
        [Role.GATEWAY_ADMINISTRATOR.oid, ExtendedKeyUsageOID.CLIENT_AUTH],
    ],
    ids=["no-eku", "client-auth-only", "other-role", "sibling-role"],
)
def test_missing_role_usage_is_wrong_role(
    pki: Pki, trust: TrustStore, usages: list[x509.ObjectIdentifier] | None
) -> None:
    forged = forge(pki, name=subject("gw-no-usage", "gateway"), usages=usages)
    error = rejected_by(trust, der(forged), expected_role=Role.GATEWAY)
    assert error.reason == "wrong-role"
    assert "gw-no-usage" in error.detail


def test_empty_usage_list_is_malformed(pki: Pki, trust: TrustStore) -> None:
    """RFC 5280 wants at least one purpose; an empty list does not even parse."""
    forged = forge(pki, usages=[])
    assert rejected_by(trust, der(forged)).reason == "malformed-certificate"


@pytest.mark.parametrize(
    "units",
    [(), ("janitor",), ("gateway", "service"), ("gateway", "gateway"), ("root",), ("gateways",)],
    ids=["none", "unknown", "two", "twice", "root", "sub-ca-name"],
)
def test_subject_must_name_exactly_one_known_role(
    pki: Pki, trust: TrustStore, units: tuple[str, ...]
) -> None:
    forged = forge(pki, name=subject("gw-odd", *units))
    error = rejected_by(trust, der(forged))
    assert error.reason == "wrong-role"
    with pytest.raises(Rejected) as info:
        certificate_role(forged)
    assert info.value.reason == "wrong-role"


def test_role_usage_without_matching_subject_is_wrong_role(pki: Pki, trust: TrustStore) -> None:
    """The OU and the issuer say gateway administrator, the usage says gateway."""
    forged = forge(
        pki,
        SubCa.GATEWAY_ADMINISTRATORS,
        name=subject("ga-odd", "gateway-administrator"),
        usages=[Role.GATEWAY.oid],
    )
    assert rejected_by(trust, der(forged)).reason == "wrong-role"


def test_service_key_on_brainpool_is_wrong_curve(pki: Pki, trust: TrustStore) -> None:
    forged = forge(
        pki,
        SubCa.SERVICES,
        name=subject("svc-bp", "service"),
        usages=[Role.SERVICE.oid],
        key=public_key(Curve.BRAINPOOL_P256R1),
    )
    assert rejected_by(trust, der(forged), expected_role=Role.SERVICE).reason == "wrong-curve"


def test_key_on_a_foreign_curve_is_wrong_curve(pki: Pki, trust: TrustStore) -> None:
    forged = forge(pki, key=ec.generate_private_key(ec.SECP384R1()).public_key())
    assert rejected_by(trust, der(forged), expected_role=Role.GATEWAY).reason == "wrong-curve"


def test_ca_keys_are_named_after_their_sub_ca(pki: Pki) -> None:
    for sub in SubCa:
        assert ca_key(pki, sub).public_key() == pki.sub_cas[sub].public_key()
    assert ca_key(pki, None).public_key() == pki.root.public_key()
