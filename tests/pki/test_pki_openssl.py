"""Interoperability: the system ``openssl`` (3.0) accepts what the PKI issues, and its CRLs."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pki_support import (
    ALL_BRAINPOOL,
    flip_last_byte,
    forge,
    make_pki,
    openssl,
    public_key,
    subject,
)

from metrocloud.pki import PROFILES, Curve, Pki, Role, SoftwareKey, generate_private_key
from metrocloud.pki.signing import sign_csr

BRAINPOOL_OPTIONS = {"root_curve": Curve.BRAINPOOL_P256R1, "ca_curves": ALL_BRAINPOOL}


@dataclass(frozen=True)
class Case:
    """A hierarchy and the role whose chain is checked in it."""

    options: dict[str, Any]
    role: Role
    curve: str  # of every certificate in the chain, as openssl names it ("" if mixed)


CASES = {
    "p256": Case({}, Role.SERVICE, "prime256v1"),
    "brainpool": Case(BRAINPOOL_OPTIONS, Role.GATEWAY, "brainpoolP256r1"),
    "default-gateway": Case({}, Role.GATEWAY, ""),  # P-256 root over a brainpool sub-CA
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


@pytest.fixture(scope="module")
def hierarchy(case: Case, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    authority = make_pki(tmp_path_factory.mktemp("openssl-pki"), **case.options)
    yield authority
    authority.close()


@dataclass
class Files:
    """What ``openssl verify`` is given: anchor, sub-CA, both CRLs (PEM), the end entity."""

    root: Path
    sub: Path
    root_crl: Path
    sub_crl: Path
    ee: Path


def crl_to_pem(pki: Pki, name: str, target: Path) -> Path:
    """Convert the PKI's published DER CRL with ``openssl crl`` (which must parse it)."""
    done = openssl(
        "crl", "-inform", "DER", "-in", pki.directory / "crl" / f"{name}.crl", "-out", target
    )
    assert done.returncode == 0, done.stderr
    return target


def write_files(pki: Pki, role: Role, ee: x509.Certificate, directory: Path) -> Files:
    sub_ca = PROFILES[role].issuer
    pki.trust_store()  # makes the published CRL files current
    files = Files(
        root=directory / "root.pem",
        sub=directory / "sub.pem",
        root_crl=crl_to_pem(pki, "root", directory / "root_crl.pem"),
        sub_crl=crl_to_pem(pki, sub_ca.value, directory / "sub_crl.pem"),
        ee=directory / "ee.pem",
    )
    files.root.write_bytes(pki.root.public_bytes(Encoding.PEM))
    files.sub.write_bytes(pki.sub_cas[sub_ca].public_bytes(Encoding.PEM))
    files.ee.write_bytes(ee.public_bytes(Encoding.PEM))
    return files


def verify(files: Files, *extra: str, sub_crl: bool = True) -> subprocess.CompletedProcess[str]:
    crls = ["-CRLfile", str(files.root_crl)]
    if sub_crl:
        crls += ["-CRLfile", str(files.sub_crl)]
    return openssl(
        "verify",
        "-crl_check_all",
        *extra,
        "-CAfile",
        files.root,
        "-untrusted",
        files.sub,
        *crls,
        files.ee,
    )


def issue(pki: Pki, role: Role, cn: str, **options: Any) -> x509.Certificate:
    return pki.issue(role, cn, public_key(PROFILES[role].default_curve), **options)


def failed_with(done: subprocess.CompletedProcess[str], message: str, depth: int) -> None:
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert message in output, output
    assert re.search(rf"error \d+ at {depth} depth lookup: {message}", output), output


# -- accepted ------------------------------------------------------------------------------------


def test_chain_verifies(hierarchy: Pki, case: Case, tmp_path: Path) -> None:
    files = write_files(hierarchy, case.role, issue(hierarchy, case.role, "ee-ok"), tmp_path)
    done = verify(files, "-x509_strict")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"{files.ee}: OK"
    if case.curve:
        for path in (files.root, files.sub, files.ee):
            text = openssl("x509", "-noout", "-text", "-in", path).stdout
            assert f"ASN1 OID: {case.curve}" in text, path


def test_crls_verify_against_their_ca(hierarchy: Pki, case: Case, tmp_path: Path) -> None:
    files = write_files(hierarchy, case.role, issue(hierarchy, case.role, "ee-crl"), tmp_path)
    both = tmp_path / "cas.pem"
    both.write_bytes(files.root.read_bytes() + files.sub.read_bytes())
    for crl in (files.root_crl, files.sub_crl):
        done = openssl("crl", "-in", crl, "-CAfile", both, "-noout")
        assert done.returncode == 0 and "verify OK" in done.stdout + done.stderr, done.stderr
    wrong = openssl("crl", "-in", files.sub_crl, "-CAfile", files.root, "-noout")
    assert "verify OK" not in wrong.stdout + wrong.stderr


def test_role_oid_and_usages_in_openssl_text(hierarchy: Pki, case: Case, tmp_path: Path) -> None:
    files = write_files(hierarchy, case.role, issue(hierarchy, case.role, "ee-text"), tmp_path)
    text = openssl("x509", "-noout", "-text", "-in", files.ee).stdout
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if "X509v3 Extended Key Usage" in line)
    usages = lines[at + 1]
    assert case.role.oid.dotted_string in usages
    if case.role is Role.SERVICE:
        assert "TLS Web Server Authentication" in usages
        assert "TLS Web Client Authentication" in usages
    key_usage = lines[next(i for i, line in enumerate(lines) if "X509v3 Key Usage" in line) + 1]
    assert key_usage.strip() == "Digital Signature"
    assert "CA:FALSE" in text


# -- refused -------------------------------------------------------------------------------------


def test_revoked_end_entity(hierarchy: Pki, case: Case, tmp_path: Path) -> None:
    ee = issue(hierarchy, case.role, "ee-revoked")
    assert verify(write_files(hierarchy, case.role, ee, tmp_path)).returncode == 0
    hierarchy.revoke(ee.serial_number)
    failed_with(verify(write_files(hierarchy, case.role, ee, tmp_path)), "certificate revoked", 0)


def test_revoked_sub_ca(case: Case, tmp_path: Path) -> None:
    own = make_pki(tmp_path / "own", **case.options)
    ee = issue(own, case.role, "ee-orphan")
    own.revoke(own.sub_cas[PROFILES[case.role].issuer].serial_number)
    failed_with(verify(write_files(own, case.role, ee, tmp_path)), "certificate revoked", 1)
    own.close()


def test_missing_sub_ca_crl(hierarchy: Pki, case: Case, tmp_path: Path) -> None:
    files = write_files(hierarchy, case.role, issue(hierarchy, case.role, "ee-no-crl"), tmp_path)
    failed_with(verify(files, sub_crl=False), "unable to get certificate CRL", 0)


def test_expired_at_a_later_time(hierarchy: Pki, case: Case, tmp_path: Path) -> None:
    ee = issue(hierarchy, case.role, "ee-short", validity_days=1)
    files = write_files(hierarchy, case.role, ee, tmp_path)
    later = int((datetime.now(timezone.utc) + timedelta(days=2)).timestamp())
    failed_with(verify(files, "-attime", str(later)), "certificate has expired", 0)
    sooner = int((datetime.now(timezone.utc) + timedelta(hours=12)).timestamp())
    assert verify(files, "-attime", str(sooner)).returncode == 0


def test_expired_hand_made(hierarchy: Pki, case: Case, tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    role = case.role
    expired = forge(
        hierarchy,
        PROFILES[role].issuer,
        name=subject("ee-expired", role.value),
        usages=[role.oid],
        key=public_key(PROFILES[role].default_curve),
        not_before=now - timedelta(days=10),
        not_after=now - timedelta(days=1),
    )
    failed_with(
        verify(write_files(hierarchy, role, expired, tmp_path)), "certificate has expired", 0
    )


def test_certificate_of_another_pki(hierarchy: Pki, case: Case, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other", **case.options)
    foreign = issue(other, case.role, "ee-foreign")
    done = verify(write_files(hierarchy, case.role, foreign, tmp_path))
    # same names, but the authority key identifier points to no certificate openssl has
    failed_with(done, "unable to get local issuer certificate", 0)
    other.close()


# -- CSRs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("curve", list(Curve))
def test_openssl_accepts_csr_from_sign_csr(tmp_path: Path, curve: Curve) -> None:
    key = SoftwareKey("dev", generate_private_key(curve))
    request = sign_csr(
        x509.CertificateSigningRequestBuilder().subject_name(subject("dev-1", "gateway")), key
    )
    path = tmp_path / "req.pem"
    path.write_bytes(request.public_bytes(Encoding.PEM))
    done = openssl("req", "-in", path, "-noout", "-verify")
    assert done.returncode == 0, done.stderr
    assert "self-signature verify OK" in done.stdout + done.stderr
    broken = tmp_path / "broken.der"
    broken.write_bytes(flip_last_byte(request.public_bytes(Encoding.DER)))
    done = openssl("req", "-inform", "DER", "-in", broken, "-noout", "-verify")
    # OpenSSL 3.0 exits 0 here; the message is what tells
    assert "verify failure" in done.stdout + done.stderr
    assert "verify OK" not in done.stdout + done.stderr
