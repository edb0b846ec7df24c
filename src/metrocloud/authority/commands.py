"""``metrocloud authority``: the authority's reference list, and a check of a running cloud.

``approve`` signs the identifications of the code in this installation (what the authority
examined) as a new reference list and installs it in ``<data>/authority/reference``.
``verify`` asks every legally relevant service of the running cloud for its identification
and prints a green or red badge per component; the exit status is 1 if any is red.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from metrocloud.authority.reference import (
    ApprovedIdentification,
    ReferenceList,
    ReferenceStore,
    sign_reference,
)
from metrocloud.authority.verification import ComponentStatus, check_components
from metrocloud.bus.connect import connect
from metrocloud.cloud.runtime import DataDir
from metrocloud.cloud.software import all_components, cloud_components, load
from metrocloud.core.errors import MetrocloudError, Rejected
from metrocloud.download.package import open_package
from metrocloud.pki import Role

app = typer.Typer(add_completion=False, help="The authority: approved software, checks.")
console = Console()

DataOption = Annotated[Path, typer.Option(help="The embedded cloud's data folder (as for up).")]
AsOption = Annotated[str, typer.Option("--as", help="The authority identity that signs.")]


def reference_store(data: Path) -> ReferenceStore:
    return ReferenceStore(data / "authority" / "reference")


@app.command()
def approve(
    data: DataOption = Path("data"),
    signer: AsOption = "market-surveillance",
    component: Annotated[
        list[str] | None, typer.Option(help="Approve only these components (repeatable).")
    ] = None,
    certificate: Annotated[
        str | None, typer.Option(help="The type-examination certificate to cite.")
    ] = None,
    package: Annotated[
        list[Path] | None,
        typer.Option(help="Also approve what this examined update package states (repeatable)."),
    ] = None,
) -> None:
    """Sign the identifications of this installation's code (and of examined update
    packages) as the new reference list."""
    known = all_components()
    chosen = component or list(known)
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        console.print(f"[red]error:[/] not legally relevant: {', '.join(unknown)}")
        raise typer.Exit(2)
    try:
        serial, count = approve_installation(
            data, signer, chosen, [p.read_bytes() for p in package or ()], certificate
        )
    except (MetrocloudError, OSError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(f"reference list {serial} signed by {signer}: {count} identifications approved")


def approve_installation(
    data: Path,
    signer: str,
    components: Sequence[str],
    packages: Sequence[bytes] = (),
    certificate: str | None = None,
) -> tuple[int, int]:
    """Sign, as authority ``signer``, a new reference list: the identifications of this
    installation's ``components`` and of what examined update ``packages`` state. Returns
    the list's serial number and how many identifications it approves."""
    folder = DataDir(data)
    identity = folder.issue_identity(signer, Role.AUTHORITY)
    trust = folder.trust_store()
    store = reference_store(data)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    found = [(name, load(name)) for name in components]
    stated = [
        (update.metadata.component, update.metadata.software)
        for update in (open_package(raw, trust) for raw in packages)
    ]
    idents = [(n, loaded.identification.software) for n, loaded in found if loaded]
    entries = [
        ApprovedIdentification(
            name, software.name, software.version, software.checksum,
            approved_at=now.isoformat(), certificate=certificate,
        )
        for name, software in dict.fromkeys([*idents, *stated])
    ]  # fmt: skip
    serial = (store.serial() or 0) + 1
    reference = ReferenceList(identity.common_name, serial, now.isoformat(), tuple(entries))
    store.install(sign_reference(identity, reference), trust)
    return serial, len(entries)


def _table(found: list[ComponentStatus]) -> Table:
    table = Table(title="legally relevant components")
    for col in ("component", "badge", "version", "checksum", "why"):
        table.add_column(col)
    for status in found:
        ident = status.report.identification if status.report else None
        badge = "[green]green" if status.green else "[red]red"
        table.add_row(
            status.component,
            badge,
            ident.version if ident else "—",
            ident.checksum[:16] if ident else "—",
            status.detail,
        )
    return table


@app.command()
def verify(
    data: DataOption = Path("data"),
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer.")] = 5.0,
) -> None:
    """Ask each running component for its identification and judge it against the list."""
    folder = DataDir(data)
    try:
        trust = folder.trust_store()
        reference = reference_store(data).current(trust)
        if reference is None:
            raise MetrocloudError(
                f"no reference list in {data}; run 'metrocloud authority approve'"
            )
        url = str(folder.cluster()["nats_url"])
        credentials = folder.credentials("monitor")
    except (MetrocloudError, OSError, ValueError, KeyError) as exc:
        detail = f"{exc.reason}: {exc.detail}" if isinstance(exc, Rejected) else str(exc)
        console.print(f"[red]not verified:[/] {detail}")
        raise typer.Exit(1) from None

    async def ask() -> list[ComponentStatus]:
        nc = await connect(url, credentials, name="authority-verify", role="monitor")
        try:
            return await check_components(
                nc, cloud_components(), trust, reference, timeout_s=timeout
            )
        finally:
            await nc.close()

    found = asyncio.run(ask())
    console.print(_table(found))
    red = [s.component for s in found if not s.green]
    if red:
        console.print(f"[red]not verified:[/] {', '.join(red)}")
        raise typer.Exit(1)
    console.print(
        f"[green]verified:[/] every legally relevant component runs software approved in "
        f"reference list {reference.serial} of {reference.issuer}"
    )
