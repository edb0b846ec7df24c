"""``metrocloud update``: build a signed update package, push it to a running cloud's
download manager, and show what is installed.

``build`` is the manufacturer's side: it signs with a manufacturer identity (in the
embedded setup, one issued from the data folder's PKI). ``push`` hands the package to the
download service over HTTPS; the exit status is 0 only when it was installed.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from metrocloud.cloud.runtime import DataDir
from metrocloud.cloud.software import exclusive_modules, updatable_host
from metrocloud.core.errors import MetrocloudError
from metrocloud.core.http import open_http
from metrocloud.download.build import build_update
from metrocloud.download.preflight import PreflightFailed
from metrocloud.pki import Role

app = typer.Typer(add_completion=False, help="Software updates: build, push, status.")
console = Console()

DataOption = Annotated[Path, typer.Option(help="The embedded cloud's data folder (as for up).")]


def _download(data: Path) -> httpx.Client:
    folder = DataDir(data)
    try:
        url = str(folder.cluster()["download_url"])
    except (OSError, KeyError, ValueError):
        console.print(f"[red]error:[/] no running cloud with a download manager in {data}")
        raise typer.Exit(1) from None
    return open_http(url, tls_trust=folder.pki / "root.pem", timeout_s=300.0)


@app.command()
def build(
    component: Annotated[str, typer.Option(help="The component the update is for.")],
    version: Annotated[str, typer.Option(help="The new software version.")],
    sequence: Annotated[int, typer.Option(help="Metadata number, above every earlier one.")],
    module: Annotated[
        list[str], typer.Option(help="MODULE=FILE: new source of a module (repeatable).")
    ],
    out: Annotated[Path, typer.Option(help="Where to write the package.")],
    data: DataOption = Path("data"),
    signer: Annotated[str, typer.Option("--as", help="The manufacturer identity.")] = (
        "manufacturer"
    ),
    valid_days: Annotated[int, typer.Option(help="Days until the metadata expires.")] = 30,
) -> None:
    """Sign new module sources as an update package (the manufacturer's side)."""
    if updatable_host(component) is None:
        console.print(f"[red]error:[/] {component} is no component the cloud updates")
        raise typer.Exit(2)
    files: dict[str, bytes] = {}
    for item in module:
        name, sep, file = item.partition("=")
        if not sep:
            console.print(f"[red]error:[/] --module {item!r} is not MODULE=FILE")
            raise typer.Exit(2)
        files[name] = Path(file).read_bytes()
    outside = sorted(set(files) - exclusive_modules(component))
    if outside:
        console.print(f"[red]error:[/] not modules of {component} alone: {', '.join(outside)}")
        raise typer.Exit(2)
    folder = DataDir(data)
    try:
        identity = folder.issue_identity(signer, Role.MANUFACTURER)
        raw = build_update(
            identity, component, version, sequence, files, valid_for=timedelta(days=valid_days)
        )
    except (MetrocloudError, PreflightFailed, OSError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    out.write_bytes(raw)
    console.print(f"{out}: {component} {version} (sequence {sequence}), signed by {signer}")


@app.command()
def push(package: Path, data: DataOption = Path("data")) -> None:
    """Hand a package to the running cloud's download manager and print the outcome."""
    raw = package.read_bytes()
    with _download(data) as client:
        try:
            response = client.post("/v1/packages", content=raw)
        except httpx.HTTPError as exc:
            console.print(f"[red]error:[/] the download manager did not answer: {exc}")
            raise typer.Exit(1) from None
    outcome = response.json()
    new = outcome.get("new") or {}
    what = f"{outcome.get('component')} {new.get('version', '?')}"
    if outcome.get("result") == "installed":
        console.print(f"[green]installed:[/] {what}: {outcome.get('detail')}")
        return
    console.print(
        f"[red]{outcome.get('result')}:[/] {what}: {outcome.get('reason')}: {outcome.get('detail')}"
    )
    raise typer.Exit(1)


@app.command()
def status(
    data: DataOption = Path("data"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the download manager's identification and each updated component's release."""
    with _download(data) as client:
        try:
            found = client.get("/v1/software").raise_for_status().json()
        except httpx.HTTPError as exc:
            console.print(f"[red]error:[/] the download manager did not answer: {exc}")
            raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(found, indent=2))
        return
    table = Table(title="installed releases")
    for col in ("component", "version", "release", "state", "previous", "service"):
        table.add_column(col)
    for component, pointer in sorted(found["releases"].items()):
        table.add_row(
            component,
            pointer["version"],
            pointer["release"],
            pointer["state"],
            pointer["previous"] or "as installed",
            pointer["host"],
        )
    console.print(table)
