"""``metrocloud logbook``: verify the whole log, or one entry, and show entries.

``verify`` and ``show`` read the logbook's storage itself, opened read-only: the file
``<data>/logbook.sqlite`` of the embedded cloud, or the PostgreSQL database of the
distributed one (``postgresql://user@host:port/logbook``). ``audit`` works over the
logbook's API against heads cosigned by the witnesses, which is how an authority audits
a running cloud. Either way the tool recomputes every hash itself and trusts nothing the
operator says. A verdict is printed in one line; the exit status is 0 when verified and 1
otherwise.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from cryptography import x509
from rich.console import Console

from metrocloud.core.errors import ConfigurationError, MetrocloudError, Rejected
from metrocloud.logbook.checkpoint import LOG_ORIGIN
from metrocloud.logbook.client import LogAuditor, LogbookClient
from metrocloud.logbook.merkle import verify_inclusion
from metrocloud.logbook.transparency import AUDIENCES, MerkleLogbook, open_logbook
from metrocloud.pki.identity import Identity
from metrocloud.pki.roles import Role
from metrocloud.pki.validate import TrustStore
from metrocloud.store.db import is_postgres_url, redacted, sqlite_path

app = typer.Typer(add_completion=False, help="The logbook: an RFC 9162 transparency log.")
console = Console()

LogFile = Annotated[
    str,
    typer.Argument(
        help="The logbook: its file (<data>/logbook.sqlite, or sqlite:///<path>) or its "
        "PostgreSQL database (postgresql://user@host:port/logbook).",
        metavar="LOGBOOK",
    ),
]


def _open(location: str) -> MerkleLogbook:
    """The logbook at ``location``, read-only; a plain verdict and exit 1 if there is none."""
    shown = redacted(location)
    try:
        if not is_postgres_url(location) and not sqlite_path(location).is_file():
            console.print(f"[red]not verified:[/] no logbook at {shown}")
            raise typer.Exit(1)
        return open_logbook(location, read_only=True)
    except (MetrocloudError, psycopg.Error) as exc:  # no logbook there, a bad URL, unreachable
        console.print(f"[red]not verified:[/] cannot read the logbook at {shown}: {exc}")
        raise typer.Exit(1) from None


def _head(head: str | None, size: int | None) -> tuple[bytes, int] | None:
    if head is None and size is None:
        return None
    if head is None or size is None:
        console.print("[red]not verified:[/] --head and --size go together")
        raise typer.Exit(1)
    try:
        return bytes.fromhex(head), size
    except ValueError:
        console.print(f"[red]not verified:[/] --head {head!r} is not hex")
        raise typer.Exit(1) from None


@app.command()
def verify(
    logbook: LogFile,
    entry: Annotated[int | None, typer.Option(help="Check only this entry's inclusion.")] = None,
    head: Annotated[str | None, typer.Option(help="Root hash (hex) seen earlier.")] = None,
    size: Annotated[int | None, typer.Option(help="Size of the log when --head was seen.")] = None,
) -> None:
    """Recompute the whole log (or prove one entry) and print a verdict.

    With ``--head`` and ``--size``: also check the log only grew since that head was seen
    (and, with ``--entry``, prove the entry against that head).
    """
    seen = _head(head, size)
    book = _open(logbook)
    try:
        if entry is not None:
            root, tree_size = seen or (book.head(), book.size)
            if not 0 <= entry < tree_size:
                console.print(f"[red]not verified:[/] no entry {entry} in a log of {tree_size}")
                raise typer.Exit(1)
            record = book.get(entry)
            leaf = book.leaf_hash(entry)
            proof = book.inclusion_proof(entry, tree_size)
            ok = verify_inclusion(leaf, entry, tree_size, proof, root)
            event = record.event
            line = f"entry {entry}: {event.kind.value} {event.subject} by {event.actor}"
            if not ok:
                console.print(f"[red]not verified:[/] {line}: not in the tree {root.hex()}")
                raise typer.Exit(1)
            console.print(
                f"[green]verified:[/] {line}, in the log of {tree_size} entries with root "
                f"{root.hex()} ({len(proof)} proof hashes)"
            )
            return
        verdict = book.verify() if seen is None else book.verify_against(*seen)
        if not verdict.ok:
            console.print(f"[red]not verified:[/] entry {verdict.first_bad_seq}: {verdict.reason}")
            raise typer.Exit(1)
        grew = f", grown from {seen[1]} consistently" if seen else ""
        console.print(
            f"[green]verified:[/] {verdict.size} entries, root {verdict.head.hex()}{grew}"
        )
    finally:
        book.close()


@app.command()
def show(
    logbook: LogFile,
    audience: Annotated[
        str, typer.Option(help=f"Whose view: {', '.join(sorted(AUDIENCES))}.")
    ] = "authority",
    start: Annotated[int, typer.Option(help="First entry.")] = 0,
    limit: Annotated[int, typer.Option(help="How many entries at most.")] = 50,
) -> None:
    """Print entries (JSON lines) in one audience's view."""
    if audience not in AUDIENCES:
        console.print(f"[red]unknown audience {audience!r}[/]; one of {sorted(AUDIENCES)}")
        raise typer.Exit(1)
    book = _open(logbook)
    try:
        for record in book.entries(audience=audience, start=start, limit=limit):
            typer.echo(json.dumps({"seq": record.seq, **json.loads(record.event.to_json())}))
    finally:
        book.close()


def _certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        console.print(f"[red]not verified:[/] cannot read the certificate {path}: {exc}")
        raise typer.Exit(1) from None


def _witnesses(given: list[str]) -> dict[str, x509.Certificate]:
    found: dict[str, x509.Certificate] = {}
    for item in given:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            console.print(f"[red]not verified:[/] --witness {item!r} is not NAME=CERT.pem")
            raise typer.Exit(1)
        found[name] = _certificate(Path(path))
    return found


@dataclass
class AuditSetup:
    """What an auditor is configured with."""

    url: str
    trust_dir: Path
    log_certificate: x509.Certificate
    witnesses: dict[str, x509.Certificate]
    reader: Identity
    state: Path | None


def embedded_setup(data: Path, reader: str = "auditor", state: Path | None = None) -> AuditSetup:
    """What an auditor of the embedded cloud in ``data`` is configured with."""
    from metrocloud.cloud.runtime import DataDir  # the cloud's layout, for the embedded case

    folder = DataDir(data)
    try:
        cluster = folder.cluster()
        identity = folder.issue_identity(reader, Role.AUTHORITY)
    except (OSError, ValueError, KeyError, MetrocloudError) as exc:
        console.print(f"[red]not verified:[/] no running cloud in {data}: {exc}")
        raise typer.Exit(1) from None
    names = sorted(cluster.get("witnesses", {}))
    return AuditSetup(
        str(cluster["logbook_url"]),
        folder.pki,
        _certificate(folder.identities / "logbook.pem"),
        {n: _certificate(folder.identities / f"{n}.pem") for n in names},
        identity,
        state or data / "authority" / reader / "accepted-head.json",
    )


def run_audit(setup: AuditSetup, quorum: int | None = None, entry: int | None = None) -> str:
    """Audit the log as ``setup`` says (every entry, or one); the verdict, or ``Rejected``.

    ``quorum`` defaults to every witness configured; ``ConfigurationError`` if it is more.
    """
    needed = len(setup.witnesses) if quorum is None else quorum
    if not 0 <= needed <= len(setup.witnesses):
        raise ConfigurationError(
            f"a quorum of {needed} needs as many witnesses; {len(setup.witnesses)} configured"
        )
    auditor = LogAuditor(
        setup.log_certificate,
        TrustStore.from_directory(setup.trust_dir),
        log_name=LOG_ORIGIN,
        witnesses=setup.witnesses,
        quorum=needed,
        state=setup.state,
    )
    client = LogbookClient.connect(
        setup.url, tls_trust=setup.trust_dir / "root.pem", signer=setup.reader
    )
    try:
        before = auditor.accepted()
        head = auditor.head(client)
        cosigned = f"cosigned by {needed} of {len(setup.witnesses)} witnesses"
        history = (
            "no earlier head to compare"
            if before is None
            else f"extends the head of size {before.size} accepted before"
        )
        if entry is not None:
            event = auditor.entry(client, entry, head)
            return (
                f"entry {entry}: {event.kind.value} {event.subject} by {event.actor}, "
                f"in the head of size {head.size} ({cosigned})"
            )
        verdict = auditor.audit(client, head)
        return f"{verdict.entries} entries, root {head.root.hex()} ({cosigned}); {history}"
    finally:
        client.close()


@app.command()
def audit(
    data: Annotated[
        Path | None, typer.Option(help="An embedded cloud's data folder: fills in the rest.")
    ] = None,
    url: Annotated[str | None, typer.Option(help="The logbook API (https://...).")] = None,
    trust: Annotated[
        Path | None, typer.Option(help="PKI folder: root.pem, ca/*.pem, crl/*.crl.")
    ] = None,
    log_cert: Annotated[Path | None, typer.Option(help="The logbook's certificate.")] = None,
    witness: Annotated[
        list[str] | None, typer.Option(help="A witness as NAME=CERT.pem (repeatable).")
    ] = None,
    quorum: Annotated[
        int | None, typer.Option(help="Cosignatures needed (default: every witness).")
    ] = None,
    identities: Annotated[
        Path | None, typer.Option(help="Folder with the reader's key and certificate.")
    ] = None,
    reader: Annotated[str, typer.Option("--as", help="The reader's identity name.")] = "auditor",
    state: Annotated[
        Path | None, typer.Option(help="Where the last accepted head is kept.")
    ] = None,
    entry: Annotated[int | None, typer.Option(help="Prove only this entry.")] = None,
) -> None:
    """Check the running log over its API: the head's cosignatures, that it extends the
    last head accepted, and every entry (or one) against it."""
    from metrocloud.pki.identity import IdentityStore
    from metrocloud.pki.keys import PASSPHRASE_ENV, FileKeyStore

    if data is not None:
        setup = embedded_setup(data, reader, state)
    else:
        if None in (url, trust, log_cert, identities):
            console.print(
                "[red]not verified:[/] give --data, or --url, --trust, --log-cert and --identities"
            )
            raise typer.Exit(1)
        assert url and trust and log_cert and identities
        passphrase = os.environ.get(PASSPHRASE_ENV)
        store = IdentityStore(
            identities,
            FileKeyStore(identities, passphrase.encode() if passphrase else None),
            TrustStore.from_directory(trust),
        )
        try:
            identity = store.identity(reader, Role.AUTHORITY)
        except MetrocloudError as exc:
            console.print(f"[red]not verified:[/] reader {reader}: {exc}")
            raise typer.Exit(1) from None
        setup = AuditSetup(
            url, trust, _certificate(log_cert), _witnesses(witness or []), identity, state
        )
    try:
        console.print(f"[green]verified:[/] {run_audit(setup, quorum, entry)}")
    except Rejected as exc:
        console.print(f"[red]not verified:[/] {exc.reason}: {exc.detail}")
        raise typer.Exit(1) from None
    except MetrocloudError as exc:
        console.print(f"[red]not verified:[/] {exc}")
        raise typer.Exit(1) from None
