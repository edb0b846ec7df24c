"""``metrocloud display``: the customer's secure display, on the customer's own machine."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from metrocloud.core.errors import MetrocloudError
from metrocloud.receiver.keyfolder import DisplayError, KeyFolder
from metrocloud.receiver.session import CustomerDisplay, serve
from metrocloud.receiver.statement import Statement

PASSPHRASE_ENV = "METROCLOUD_DISPLAY_PASSPHRASE"
DEFAULT_PORT = 8480
console = Console()


def read_passphrase(passphrase_file: Path | None) -> bytes:
    """From ``--passphrase-file``, else ``$METROCLOUD_DISPLAY_PASSPHRASE``, else asked."""
    if passphrase_file is not None:
        try:
            return passphrase_file.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise DisplayError(f"cannot read the passphrase file: {exc.strerror}") from None
    given = os.environ.get(PASSPHRASE_ENV)
    if given:
        return given.encode()
    return str(typer.prompt("Passphrase of the key folder", hide_input=True)).encode()


def statement_table(statements: list[Statement]) -> Table:
    table = Table(title="Bills")
    for col in ("meter", "billing period", "tariff", "bill €", "recomputed", "mark"):
        table.add_column(col, justify="right" if col == "bill €" else "left")
    for s in statements:
        bill = s.to_dict()["bill_euro"] or "—"
        tariff = s.tariff_id
        mark = "[green]verified" if s.verified else f"[red]{s.status}: {s.reason}"
        table.add_row(
            s.meter_id,
            s.period.label(),
            f"{tariff.get('name', '')} {tariff.get('version', '')}",
            bill,
            s.recomputation.status,
            mark,
        )
    return table


def display(
    key_dir: Annotated[
        Path, typer.Option("--key-dir", help="The customer's key folder (from enrolment).")
    ],
    port: Annotated[int, typer.Option(help="Port of the page on 127.0.0.1.")] = DEFAULT_PORT,
    passphrase_file: Annotated[
        Path | None,
        typer.Option(
            help=f"Read the passphrase from this file (else ${PASSPHRASE_ENV}, else asked)."
        ),
    ] = None,
    once: Annotated[
        bool, typer.Option(help="Pull and check once, print the bills, exit (1 if one fails).")
    ] = False,
) -> None:
    """The customer's secure display: decrypt, check and recompute your bills, and show
    them on a page at http://127.0.0.1:PORT (the only place your readings are readable)."""
    try:
        folder = KeyFolder(key_dir)
        passphrase = read_passphrase(passphrase_file)
        with console.status("opening the key folder …"):
            customer = CustomerDisplay.open(
                folder,
                passphrase,
                on_keygen=lambda: console.print(
                    "first start: making your FHE keys (the secret one stays in this folder, "
                    "sealed with your passphrase) …"
                ),
            )
        if once:
            statements = asyncio.run(pull_once(customer))
            console.print(statement_table(statements))
            if any(not s.verified for s in statements):
                raise typer.Exit(1)
            return

        def ready(statements: list[Statement]) -> None:
            console.print(statement_table(statements))
            console.print(f"[green]secure display at http://127.0.0.1:{port}/[/] (Ctrl-C stops)")

        asyncio.run(serve(customer, port, on_ready=ready))
    except MetrocloudError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("stopped")


async def pull_once(customer: CustomerDisplay) -> list[Statement]:
    nc = await customer.connect()
    try:
        registered = await customer.register_once(nc)
        if registered:
            console.print("your public and evaluation keys went to the cloud")
        with console.status("pulling, decrypting and recomputing …"):
            return await customer.refresh(nc)
    finally:
        await nc.drain()
