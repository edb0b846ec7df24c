"""``metrocloud pki init | issue | revoke | crl | verify | list`` as an operator uses them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from metrocloud.cli import app
from metrocloud.core.events import EventKind
from metrocloud.logbook import HashChainLogbook
from metrocloud.pki import Curve, generate_private_key, load_private_key

PASSPHRASE = "correct horse battery staple"


def run(*args: str, passphrase: str | None = PASSPHRASE) -> tuple[int, str]:
    env = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    env["METROCLOUD_KEY_PASSPHRASE"] = passphrase or ""
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli") / "pki"
    code, out = run("pki", "init", str(directory))
    assert code == 0, out
    return directory


def refusals(pki_dir: Path) -> list[dict[str, object]]:
    with HashChainLogbook(pki_dir / "logbook.sqlite") as book:
        return [e.event.detail for e in book.entries(kind=EventKind.REJECTION)]


def test_init_makes_the_hierarchy_and_encrypts_the_ca_keys(pki_dir: Path) -> None:
    assert (pki_dir / "root.pem").is_file()
    assert sorted(p.stem for p in (pki_dir / "ca").glob("*.pem")) == [
        "authorities",
        "gateway-administrators",
        "gateways",
        "market-participants",
        "services",
    ]
    assert len(list((pki_dir / "crl").glob("*.crl"))) == 6
    for key in (pki_dir / "private").glob("*.key"):
        assert key.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        assert key.stat().st_mode & 0o777 == 0o600


def test_init_refuses_an_existing_pki_and_a_missing_passphrase(
    pki_dir: Path, tmp_path: Path
) -> None:
    code, out = run("pki", "init", str(pki_dir))
    assert code == 1 and "already exists" in out
    code, out = run("pki", "init", str(tmp_path / "other"), passphrase=None)
    assert code == 1 and "METROCLOUD_KEY_PASSPHRASE" in out
    code, out = run("pki", "init", str(tmp_path / "third"), "--ca-curve", "gateways=P-384")
    assert code == 1 and "SUB-CA=CURVE" in out


def test_issue_verify_revoke_and_openssl_agrees(pki_dir: Path, tmp_path: Path) -> None:
    key_file, chain_file = tmp_path / "gw.key", tmp_path / "gw.pem"
    code, out = run(
        "pki", "issue", str(pki_dir), "--role", "gateway", "--name", "gw-0100",
        "--key-out", str(key_file), "--out", str(chain_file),
    )  # fmt: skip
    assert code == 0, out
    key = load_private_key(key_file, PASSPHRASE.encode())
    assert Curve.of(key) is Curve.BRAINPOOL_P256R1
    code, out = run("pki", "verify", str(chain_file), "--trust", str(pki_dir), "--role", "gateway")
    assert code == 0 and "valid: gw-0100, role gateway" in out, out
    code, out = run("pki", "verify", str(chain_file), "--trust", str(pki_dir), "--role", "service")
    assert code == 1 and "wrong-role" in out

    assert openssl_verify(pki_dir, chain_file, tmp_path).returncode == 0
    code, out = run("pki", "revoke", str(pki_dir), "--cert", str(chain_file), "--reason",
                    "keyCompromise")  # fmt: skip
    assert code == 0, out
    code, out = run("pki", "verify", str(chain_file), "--trust", str(pki_dir))
    assert code == 1 and "certificate-revoked" in out
    checked = openssl_verify(pki_dir, chain_file, tmp_path)
    assert checked.returncode != 0 and "certificate revoked" in checked.stdout + checked.stderr
    code, out = run("pki", "list", str(pki_dir))
    assert code == 0 and "gw-0100" in out and "keyCompromise" in out
    code, out = run("pki", "revoke", str(pki_dir), "--cert", str(chain_file))
    assert code == 1 and "already-revoked" in out
    assert refusals(pki_dir)[-1]["reason"] == "already-revoked"


def openssl_verify(pki_dir: Path, chain_file: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    """``openssl verify`` with CRL checks at every level, CRLs as the CLI writes them."""
    leaf, sub_ca = x509.load_pem_x509_certificates(chain_file.read_bytes())
    (tmp / "leaf.pem").write_bytes(leaf.public_bytes(Encoding.PEM))
    (tmp / "sub.pem").write_bytes(sub_ca.public_bytes(Encoding.PEM))
    for ca in ("root", "gateways"):
        code, out = run("pki", "crl", str(pki_dir), "--ca", ca, "--pem", "--out",
                        str(tmp / f"{ca}.crl.pem"))  # fmt: skip
        assert code == 0, out
    return subprocess.run(
        ["openssl", "verify", "-crl_check_all", "-CAfile", str(pki_dir / "root.pem"),
         "-untrusted", str(tmp / "sub.pem"), "-CRLfile", str(tmp / "root.crl.pem"),
         "-CRLfile", str(tmp / "gateways.crl.pem"), str(tmp / "leaf.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_issue_from_csr_refuses_forbidden_extensions_with_a_logbook_entry(
    pki_dir: Path, tmp_path: Path
) -> None:
    key = generate_private_key(Curve.BRAINPOOL_P256R1)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw-0101")]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "req.pem").write_bytes(csr.public_bytes(Encoding.PEM))
    code, out = run("pki", "issue", str(pki_dir), "--role", "gateway", "--csr",
                    str(tmp_path / "req.pem"))  # fmt: skip
    assert code == 1 and "forbidden-extension" in out and "basicConstraints" in out
    last = refusals(pki_dir)[-1]
    assert last["reason"] == "forbidden-extension" and last["what"] == "certificate-request"


def test_issue_from_a_good_csr_prints_the_chain(pki_dir: Path, tmp_path: Path) -> None:
    key = generate_private_key(Curve.P256)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "supplier-7")]))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "req.der").write_bytes(csr.public_bytes(Encoding.DER))
    code, out = run("pki", "issue", str(pki_dir), "--role", "market-participant", "--csr",
                    str(tmp_path / "req.der"))  # fmt: skip
    assert code == 0, out
    chain = x509.load_pem_x509_certificates(out[out.index("-----BEGIN") :].encode())
    assert chain[0].public_key() == key.public_key() and len(chain) == 2


def test_verify_explains_a_damaged_certificate(pki_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "junk.der").write_bytes(b"\x30\x82\x01\x00junk")
    code, out = run("pki", "verify", str(tmp_path / "junk.der"), "--trust", str(pki_dir))
    assert code == 1 and "malformed-certificate" in out
