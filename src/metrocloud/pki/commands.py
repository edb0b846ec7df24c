"""``metrocloud pki``: create the CAs, issue, revoke, publish CRLs, verify, serve.

Key files are encrypted with ``$METROCLOUD_KEY_PASSPHRASE``; CA keys in an HSM need
``$METROCLOUD_HSM_PIN``. A refusal prints its reason and exits with status 1; every
issuance, revocation and refusal is in the PKI's logbook (``<dir>/logbook.sqlite``).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from rich.console import Console
from rich.table import Table

from metrocloud.core.errors import ConfigurationError, Rejected
from metrocloud.pki.authority import Pki, serial_hex, split_hosts
from metrocloud.pki.keys import (
    PASSPHRASE_ENV,
    Curve,
    generate_private_key,
    open_key_store,
    save_private_key,
)
from metrocloud.pki.pem import write_atomically
from metrocloud.pki.roles import PROFILES, Role, SubCa
from metrocloud.pki.validate import TrustStore, certificate_role, subject_common_name

app = typer.Typer(add_completion=False, help="The PKI: root CA, sub-CAs, certificates, CRLs.")
console = Console()
errors = Console(stderr=True)

Directory = Annotated[Path, typer.Argument(help="The PKI folder (made by `pki init`).")]
CA_NAMES = ["root", *(s.value for s in SubCa)]


def _fail(message: str) -> typer.Exit:
    errors.print(f"[red]refused:[/] {message}")
    return typer.Exit(1)


def _open(directory: Path) -> Pki:
    try:
        return Pki.open(directory)
    except (ConfigurationError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None


def _passphrase() -> bytes:
    given = os.environ.get(PASSPHRASE_ENV, "")
    if not given:
        raise _fail(f"set {PASSPHRASE_ENV}: key files are always encrypted")
    return given.encode()


def _write(out: Path | None, data: bytes) -> None:
    if out is None:
        typer.echo(data.decode() if data.startswith(b"-----") else data.hex())
    else:
        write_atomically(out, data, 0o644)


@app.command()
def init(
    directory: Directory,
    root_curve: Annotated[Curve, typer.Option(help="Curve of the root key.")] = Curve.P256,
    ca_curve: Annotated[
        list[str] | None,
        typer.Option(help="SUB-CA=CURVE, e.g. gateways=P-256 (repeatable)."),
    ] = None,
    hsm_module: Annotated[
        Path | None, typer.Option(help="PKCS#11 module: CA keys are made in this HSM.")
    ] = None,
    hsm_token: Annotated[str | None, typer.Option(help="Label of the HSM token.")] = None,
) -> None:
    """Create the root CA, the five sub-CAs and their first CRLs."""
    curves: dict[SubCa, Curve] = {}
    for item in ca_curve or []:
        name, _, curve = item.partition("=")
        try:
            curves[SubCa(name)] = Curve(curve)
        except ValueError:
            raise _fail(f"--ca-curve {item!r}: want SUB-CA=CURVE, e.g. gateways=P-256") from None
    if hsm_module is not None:
        if not hsm_token:
            raise _fail("--hsm-module needs --hsm-token")
        settings: dict[str, object] = {
            "kind": "pkcs11",
            "module": str(hsm_module),
            "token": hsm_token,
        }
    else:
        settings = {"kind": "file"}
    try:
        keys = open_key_store(settings, directory / "private")
        pki = Pki.init(directory, keys, root_curve=root_curve, ca_curves=curves, key_store=settings)
    except (ConfigurationError, FileExistsError, Rejected) as exc:
        raise _fail(str(exc)) from None
    console.print(f"PKI created in {directory}: root {serial_hex(pki.root.serial_number)}")
    for sub, cert in pki.sub_cas.items():
        curve = Curve.of(cert.public_key())  # type: ignore[arg-type]
        console.print(
            f"  {sub.value:<24} {curve.value:<16} until {cert.not_valid_after_utc:%Y-%m-%d}"
        )
    pki.close()


@app.command()
def issue(
    directory: Directory,
    role: Annotated[Role, typer.Option(help="The holder's role.")],
    name: Annotated[str | None, typer.Option(help="Common name (not with --csr).")] = None,
    csr: Annotated[Path | None, typer.Option(help="Certify the key of this CSR (PEM/DER).")] = None,
    key_out: Annotated[
        Path | None, typer.Option(help="Without --csr: write the new key here (encrypted).")
    ] = None,
    curve: Annotated[Curve | None, typer.Option(help="Curve of a new key.")] = None,
    host: Annotated[list[str] | None, typer.Option(help="TLS host name or IP.")] = None,
    days: Annotated[int | None, typer.Option(help="Validity in days.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the chain (PEM) here.")] = None,
) -> None:
    """Issue a certificate: for a CSR's key, or for a new key written to --key-out."""
    pki = _open(directory)
    try:
        if csr is not None:
            certificate = pki.issue_from_csr(csr.read_bytes(), role, validity_days=days)
        else:
            if name is None or key_out is None:
                raise _fail("without --csr, give --name and --key-out")
            passphrase = _passphrase()
            key = generate_private_key(curve or PROFILES[role].default_curve)
            dns_names, ip_addresses = split_hosts(host or [])
            certificate = pki.issue(
                role,
                name,
                key.public_key(),
                validity_days=days,
                dns_names=dns_names,
                ip_addresses=ip_addresses,
            )
            save_private_key(key_out, key, passphrase)
    except Rejected as exc:
        raise _fail(str(exc)) from None
    finally:
        pki.close()
    chain = [certificate, *pki.chain(role)[:-1]]
    _write(out, b"".join(c.public_bytes(Encoding.PEM) for c in chain))
    errors.print(
        f"issued {role.value} certificate {subject_common_name(certificate)}, "
        f"serial {serial_hex(certificate.serial_number)}, "
        f"until {certificate.not_valid_after_utc:%Y-%m-%d}"
    )


@app.command()
def revoke(
    directory: Directory,
    serial: Annotated[str | None, typer.Option(help="Serial number (hex).")] = None,
    cert: Annotated[Path | None, typer.Option(help="Or the certificate (PEM).")] = None,
    reason: Annotated[str, typer.Option(help="RFC 5280 reason, e.g. keyCompromise.")] = (
        "unspecified"
    ),
) -> None:
    """Revoke a certificate and publish the new CRL of its CA."""
    if (serial is None) == (cert is None):
        raise _fail("give exactly one of --serial and --cert")
    try:
        number = (
            int(serial, 16)
            if serial is not None
            else x509.load_pem_x509_certificate(cert.read_bytes()).serial_number  # type: ignore[union-attr]
        )
        flag = x509.ReasonFlags(reason)
    except ValueError as exc:
        raise _fail(f"bad serial, certificate or reason: {exc}") from None
    pki = _open(directory)
    try:
        revoked = pki.revoke(number, flag)
    except Rejected as exc:
        raise _fail(str(exc)) from None
    finally:
        pki.close()
    console.print(f"revoked {subject_common_name(revoked)} ({serial_hex(number)}): {flag.value}")


@app.command()
def crl(
    directory: Directory,
    ca: Annotated[str, typer.Option(help=f"Which CA: {', '.join(CA_NAMES)}.")] = "root",
    out: Annotated[Path | None, typer.Option(help="Write it here (else print PEM).")] = None,
    pem: Annotated[bool, typer.Option(help="PEM instead of DER in --out.")] = False,
) -> None:
    """The current CRL of a CA (re-signed when due), as published in <dir>/crl/."""
    if ca not in CA_NAMES:
        raise _fail(f"unknown CA {ca!r}; one of {', '.join(CA_NAMES)}")
    pki = _open(directory)
    try:
        current = pki.crl(None if ca == "root" else SubCa(ca))
    finally:
        pki.close()
    as_pem = pem or out is None
    _write(out, current.public_bytes(Encoding.PEM if as_pem else Encoding.DER))
    errors.print(
        f"CRL {ca}: {len(current)} revoked, next update {current.next_update_utc:%Y-%m-%d %H:%M}"
    )


@app.command()
def verify(
    certificate: Annotated[Path, typer.Argument(help="Certificate (PEM or DER) to check.")],
    trust: Annotated[Path, typer.Option(help="PKI folder or copy: root.pem, ca/, crl/.")],
    role: Annotated[Role | None, typer.Option(help="The role it must have.")] = None,
    at: Annotated[str | None, typer.Option(help="Check at this ISO time (default now).")] = None,
) -> None:
    """Check a certificate against root, sub-CAs and CRLs; prints the verdict."""
    try:
        store = TrustStore.from_directory(trust)
        raw = certificate.read_bytes()
        der = (
            x509.load_pem_x509_certificate(raw).public_bytes(Encoding.DER)
            if raw.lstrip().startswith(b"-----")
            else raw
        )
        when = datetime.fromisoformat(at) if at else None
        checked = store.verify(der, expected_role=role, at=when)
    except Rejected as exc:
        raise _fail(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot read the certificate or trust folder: {exc}") from None
    console.print(
        f"[green]valid:[/] {subject_common_name(checked)}, role "
        f"{certificate_role(checked).value}, serial {serial_hex(checked.serial_number)}, "
        f"until {checked.not_valid_after_utc:%Y-%m-%d}"
    )


@app.command(name="list")
def list_(directory: Directory) -> None:
    """Every certificate issued, with its revocation."""
    pki = _open(directory)
    table = Table("serial", "role", "name", "until", "revoked")
    for row in pki.issued():
        table.add_row(
            str(row["serial"])[:16],
            str(row["role"] or "sub-CA"),
            str(row["common_name"]),
            str(row["not_after"])[:10],
            f"{row['revoked_at'][:19]} {row['reason']}" if row["revoked_at"] else "",
        )
    pki.close()
    console.print(table)


@app.command()
def serve(
    directory: Directory,
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1.")] = 8443,
    tls_cert: Annotated[Path | None, typer.Option(help="Server chain (PEM) for HTTPS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Its key (encrypted PKCS#8).")] = None,
) -> None:
    """Serve the PKI over HTTP(S): CSRs from authenticated requesters, CRLs."""
    import uvicorn

    from metrocloud.pki.service import create_app

    pki = _open(directory)
    tls: dict[str, str] = {}
    if tls_cert is not None and tls_key is not None:
        tls = {
            "ssl_certfile": str(tls_cert),
            "ssl_keyfile": str(tls_key),
            "ssl_keyfile_password": _passphrase().decode(),
        }
    elif tls_cert is not None or tls_key is not None:
        raise _fail("--tls-cert and --tls-key go together")
    try:
        uvicorn.run(create_app(pki), host="127.0.0.1", port=port, log_level="info", **tls)  # type: ignore[arg-type]
    finally:
        pki.close()
