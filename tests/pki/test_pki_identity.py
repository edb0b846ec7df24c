"""Identities and the identity store: issued on first use, reloaded, reissued when unusable."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pki_support import (
    ca_key,
    curve_of,
    der,
    extension,
    forge,
    log_events,
    subject,
    units,
)

from metrocloud.core.errors import ConfigurationError, Rejected
from metrocloud.core.events import EventKind
from metrocloud.pki import (
    FileKeyStore,
    Identity,
    IdentityStore,
    KeyFileError,
    Pki,
    Role,
    SoftwareKey,
    SubCa,
    generate_private_key,
    load_certificate,
    save_certificate,
    verify_signature,
)

ENCRYPTED = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"
CLEAR = b"-----BEGIN PRIVATE KEY-----"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def store_pki(store: IdentityStore) -> Pki:
    assert store.pki is not None
    return store.pki


def test_first_use_creates_pki_and_identity(tmp_path: Path) -> None:
    store = IdentityStore.open_local(tmp_path)
    assert (tmp_path / "pki" / "pki.json").is_file()
    assert (tmp_path / "pki" / "private" / "root.key").is_file()
    gateway = store.identity("gw-0001", Role.GATEWAY)
    assert gateway.common_name == "gw-0001" and gateway.role is Role.GATEWAY
    assert curve_of(gateway.certificate) == "brainpoolP256r1"  # the gateway's default curve
    assert store.trust.verify(gateway.certificate_der, expected_role=Role.GATEWAY) == (
        gateway.certificate
    )
    key_file = tmp_path / "identities" / "gw-0001.key"
    assert key_file.read_bytes().startswith(CLEAR)
    assert mode(key_file) == 0o600
    issued = log_events(store_pki(store), EventKind.CERTIFICATE_ISSUED)
    assert [e.subject for e in issued] == ["gw-0001"]


def test_chain_file_holds_end_entity_and_sub_ca(tmp_path: Path) -> None:
    store = IdentityStore.open_local(tmp_path)
    service = store.identity("svc-legal", Role.SERVICE)
    chain = x509.load_pem_x509_certificates(store.chain_path("svc-legal").read_bytes())
    sub_ca = store_pki(store).sub_cas[SubCa.SERVICES]
    assert chain == [service.certificate, sub_ca]
    assert service.chain == (sub_ca,)
    assert load_certificate(store.chain_path("svc-legal")) == service.certificate
    assert mode(store.chain_path("svc-legal")) == 0o644
    assert curve_of(service.certificate) == "secp256r1"


def test_service_hosts_go_into_the_certificate(tmp_path: Path) -> None:
    store = IdentityStore.open_local(tmp_path)
    service = store.identity("svc-bus", Role.SERVICE, hosts=("127.0.0.1", "bus.local"))
    names = extension(service.certificate, x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["bus.local"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_later_use_reloads_the_same_identity(tmp_path: Path) -> None:
    first = IdentityStore.open_local(tmp_path).identity("rcv-1", Role.RECEIVER)
    again = IdentityStore.open_local(tmp_path)
    second = again.identity("rcv-1", Role.RECEIVER)
    assert second.key.public_key() == first.key.public_key()
    assert second.certificate_der == first.certificate_der
    assert again.identity("rcv-1", Role.RECEIVER).certificate == first.certificate
    issued = log_events(store_pki(again), EventKind.CERTIFICATE_ISSUED)
    assert [e.subject for e in issued] == ["rcv-1"]  # issued once only


def test_identities_differ(tmp_path: Path) -> None:
    store = IdentityStore.open_local(tmp_path)
    a, b = store.identity("gw-a", Role.GATEWAY), store.identity("gw-b", Role.GATEWAY)
    assert a.key.public_key() != b.key.public_key()
    assert a.certificate.serial_number != b.certificate.serial_number


def test_sign_and_verify(tmp_path: Path) -> None:
    identity = IdentityStore.open_local(tmp_path).identity("gw-0002", Role.GATEWAY)
    signature = identity.sign(b"payload")
    assert signature[0] == 0x30  # DER SEQUENCE
    verify_signature(identity.certificate, b"payload", signature)
    identity.certificate.public_key().verify(signature, b"payload", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(Rejected) as info:
        verify_signature(identity.certificate, b"payloaD", signature)
    assert info.value.reason == "bad-signature"
    other = IdentityStore.open_local(tmp_path).identity("gw-0003", Role.GATEWAY)
    with pytest.raises(Rejected):
        verify_signature(other.certificate, b"payload", signature)


def test_identity_key_must_match_its_certificate(tmp_path: Path) -> None:
    identity = IdentityStore.open_local(tmp_path).identity("gw-m", Role.GATEWAY)
    stranger = SoftwareKey("gw-m", generate_private_key())
    with pytest.raises(ValueError, match="does not match"):
        Identity("gw-m", Role.GATEWAY, stranger, identity.certificate)
    assert "SoftwareKey" not in repr(identity) and "key=" not in repr(identity)


# -- reissuing -----------------------------------------------------------------------------------


def test_expired_certificate_is_reissued_for_the_same_key(tmp_path: Path) -> None:
    store = IdentityStore.open_local(tmp_path)
    first = store.identity("gw-exp", Role.GATEWAY)
    pki = store_pki(store)
    now = datetime.now(timezone.utc)
    expired = forge(
        pki,
        name=subject("gw-exp", "gateway"),
        key=first.certificate.public_key(),  # type: ignore[arg-type]
        not_before=now - timedelta(days=10),
        not_after=now - timedelta(days=1),
    )
    save_certificate(store.chain_path("gw-exp"), expired)
    renewed = IdentityStore.open_local(tmp_path).identity("gw-exp", Role.GATEWAY)
    assert renewed.key.public_key() == first.key.public_key()
    assert renewed.certificate.not_valid_after_utc > now
    assert renewed.certificate.serial_number not in (
        first.certificate.serial_number,
        expired.serial_number,
    )
    assert load_certificate(store.chain_path("gw-exp")) == renewed.certificate


def test_revoked_certificate_is_reissued_for_the_same_key(tmp_path: Path) -> None:
    store = IdentityStore.open_local(tmp_path)
    first = store.identity("gw-rev", Role.GATEWAY)
    store_pki(store).revoke(first.certificate.serial_number)
    reopened = IdentityStore.open_local(tmp_path)
    second = reopened.identity("gw-rev", Role.GATEWAY)
    assert second.key.public_key() == first.key.public_key()
    assert second.certificate.serial_number != first.certificate.serial_number
    assert reopened.trust.verify(second.certificate_der) == second.certificate


def test_revoked_certificate_is_reissued_by_the_store_that_revoked_it(tmp_path: Path) -> None:
    """The store's own PKI revoked it: the store must not hand it out again."""
    store = IdentityStore.open_local(tmp_path)
    first = store.identity("gw-rev2", Role.GATEWAY)
    store_pki(store).revoke(first.certificate.serial_number)
    second = store.identity("gw-rev2", Role.GATEWAY)
    assert second.certificate.serial_number != first.certificate.serial_number
    with pytest.raises(Rejected) as info:
        store_pki(store).trust_store().verify(first.certificate_der)
    assert info.value.reason == "certificate-revoked"


def test_missing_certificate_is_reissued_for_the_stored_key(tmp_path: Path) -> None:
    first = IdentityStore.open_local(tmp_path).identity("gw-r", Role.GATEWAY)
    (tmp_path / "identities" / "gw-r.pem").unlink()
    second = IdentityStore.open_local(tmp_path).identity("gw-r", Role.GATEWAY)
    assert second.key.public_key() == first.key.public_key()
    assert second.certificate.serial_number != first.certificate.serial_number


def test_certificate_for_another_key_is_replaced(tmp_path: Path) -> None:
    store = IdentityStore.open_local(tmp_path)
    first = store.identity("gw-k", Role.GATEWAY)
    new_key = generate_private_key()
    store.keys.save("gw-k", new_key)  # type: ignore[attr-defined]
    second = IdentityStore.open_local(tmp_path).identity("gw-k", Role.GATEWAY)
    assert second.certificate.public_key() == new_key.public_key()
    assert second.certificate.public_key() != first.certificate.public_key()


def test_stored_certificate_of_another_role_is_refused(tmp_path: Path) -> None:
    store = IdentityStore.open_local(tmp_path)
    gateway = store.identity("gw-0003", Role.GATEWAY)
    for other in (Role.AUTHORITY, Role.MARKET_PARTICIPANT):
        with pytest.raises(Rejected) as info:
            store.identity("gw-0003", other)
        assert info.value.reason == "wrong-role"
    assert store.identity("gw-0003", Role.GATEWAY).certificate == gateway.certificate
    assert units(load_certificate(store.chain_path("gw-0003"))) == ["gateway"]


def test_certificate_from_another_pki_is_reissued(tmp_path: Path) -> None:
    IdentityStore.open_local(tmp_path / "a").identity("gw-x", Role.GATEWAY)
    foreign = IdentityStore.open_local(tmp_path / "b").identity("gw-x", Role.GATEWAY)
    target = tmp_path / "a" / "identities"
    save_certificate(target / "gw-x.pem", foreign.certificate)
    (target / "gw-x.key").write_bytes((tmp_path / "b" / "identities" / "gw-x.key").read_bytes())
    store = IdentityStore.open_local(tmp_path / "a")
    again = store.identity("gw-x", Role.GATEWAY)
    assert again.key.public_key() == foreign.key.public_key()
    assert store.trust.verify(again.certificate_der) == again.certificate


@pytest.mark.parametrize("bad", ["", "../escape", "a/b", ".hidden", "x" * 65, "gw 1"])
def test_names_must_be_safe_file_names(tmp_path: Path, bad: str) -> None:
    store = IdentityStore.open_local(tmp_path)
    with pytest.raises(Rejected) as info:
        store.identity(bad, Role.GATEWAY)
    assert info.value.reason == "bad-common-name"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pki"]


# -- without a PKI -------------------------------------------------------------------------------


def loading_store(tmp_path: Path) -> IdentityStore:
    """A store that only loads (a service process): no PKI to issue with."""
    pki = store_pki(IdentityStore.open_local(tmp_path))
    return IdentityStore(
        tmp_path / "identities", FileKeyStore(tmp_path / "identities"), pki.trust_store()
    )


def test_without_pki_a_missing_key_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no key"):
        loading_store(tmp_path).identity("svc-new", Role.SERVICE)
    assert not (tmp_path / "identities" / "svc-new.key").exists()


def test_without_pki_a_missing_certificate_is_a_configuration_error(tmp_path: Path) -> None:
    IdentityStore.open_local(tmp_path).identity("svc-a", Role.SERVICE)
    (tmp_path / "identities" / "svc-a.pem").unlink()
    with pytest.raises(ConfigurationError, match="no usable certificate"):
        loading_store(tmp_path).identity("svc-a", Role.SERVICE)


def test_without_pki_an_expired_certificate_is_a_configuration_error(tmp_path: Path) -> None:
    store = IdentityStore.open_local(tmp_path)
    first = store.identity("svc-b", Role.SERVICE)
    now = datetime.now(timezone.utc)
    expired = forge(
        store_pki(store),
        SubCa.SERVICES,
        name=subject("svc-b", "service"),
        usages=[Role.SERVICE.oid],
        key=first.certificate.public_key(),  # type: ignore[arg-type]
        not_before=now - timedelta(days=10),
        not_after=now - timedelta(days=1),
    )
    save_certificate(store.chain_path("svc-b"), expired)
    with pytest.raises(ConfigurationError, match="no usable certificate"):
        loading_store(tmp_path).identity("svc-b", Role.SERVICE)


def test_without_pki_a_valid_identity_loads(tmp_path: Path) -> None:
    first = IdentityStore.open_local(tmp_path).identity("svc-c", Role.SERVICE)
    loaded = loading_store(tmp_path).identity("svc-c", Role.SERVICE)
    assert loaded.certificate == first.certificate
    assert loaded.key.public_key() == first.key.public_key()


# -- passphrases ---------------------------------------------------------------------------------


def test_keys_are_encrypted_with_a_passphrase(tmp_path: Path) -> None:
    store = IdentityStore.open_local(tmp_path, b"s3cret")
    first = store.identity("gw-enc", Role.GATEWAY)
    ca_files = sorted((tmp_path / "pki" / "private").glob("*.key"))
    assert [p.stem for p in ca_files] == sorted(["root", *(f"ca-{sub.value}" for sub in SubCa)])
    for path in [*ca_files, tmp_path / "identities" / "gw-enc.key"]:
        assert path.read_bytes().startswith(ENCRYPTED), path
        assert mode(path) == 0o600, path
    second = IdentityStore.open_local(tmp_path, b"s3cret").identity("gw-enc", Role.GATEWAY)
    assert second.certificate == first.certificate
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        IdentityStore.open_local(tmp_path, b"wrong").identity("gw-enc", Role.GATEWAY)
    with pytest.raises(KeyFileError, match="passphrase is needed"):
        IdentityStore.open_local(tmp_path, None).identity("gw-enc", Role.GATEWAY)


def test_ca_keys_of_an_encrypted_store_sign_for_the_pki(tmp_path: Path) -> None:
    store = IdentityStore.open_local(tmp_path, b"s3cret")
    pki = store_pki(store)
    assert isinstance(pki.keys, FileKeyStore)
    assert ca_key(pki, SubCa.GATEWAYS).public_key() == pki.sub_cas[SubCa.GATEWAYS].public_key()
    gateway = store.identity("gw-1", Role.GATEWAY)
    assert store.trust.verify(der(gateway.certificate)) == gateway.certificate
