"""The ``metrocloud`` command."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from metrocloud import __version__
from metrocloud.authority import commands as authority_commands
from metrocloud.cloud import commands as cloud_commands
from metrocloud.cloud.cluster import Cluster
from metrocloud.cloud.software import identify_all
from metrocloud.core.errors import MetrocloudError
from metrocloud.download import commands as update_commands
from metrocloud.field.channel import ChannelConfig
from metrocloud.field.sensors import Medium
from metrocloud.logbook import commands as logbook_commands
from metrocloud.logbook.commands import embedded_setup, run_audit
from metrocloud.pki import commands as pki_commands
from metrocloud.receiver import commands as display_commands
from metrocloud.receiver.commands import (
    DEFAULT_PORT,
    PASSPHRASE_ENV,
    read_passphrase,
    statement_table,
)
from metrocloud.receiver.session import CustomerDisplay, serve
from metrocloud.receiver.statement import Statement
from metrocloud.tariffs import PROGRAMS
from metrocloud.testbed import commands as testbed_commands
from metrocloud.testbed.enrolment import OwnDisplays
from metrocloud.testbed.pipeline import MeterOutcome, Pipeline, PipelineConfig

app = typer.Typer(add_completion=False, help="A secure cloud for legally controlled meters.")
app.add_typer(pki_commands.app, name="pki")
app.add_typer(logbook_commands.app, name="logbook")
app.add_typer(authority_commands.app, name="authority")
app.add_typer(update_commands.app, name="update")
app.add_typer(testbed_commands.app, name="testbed")
app.command("serve")(cloud_commands.serve)
app.command("display")(display_commands.display)
console = Console()


@app.command()
def up(
    data: Annotated[Path, typer.Option(help="Data folder (store, logbook, keys, broker).")] = Path(
        "data"
    ),
) -> None:
    """Start the broker and every service; keep running until Ctrl-C."""
    cluster = Cluster(data)
    cluster.start()
    console.print(f"metrocloud is up: broker {cluster.bus_url}, data in {data.resolve()}")
    for name, proc in cluster.processes.items():
        answers = f"  {cluster.url(name)}" if name in cluster.ports else ""
        console.print(f"  {name:<14} pid {proc.pid}{answers}")
    console.print(f"audit the logbook: metrocloud logbook audit --data {data}")
    if cluster.monitor:
        console.print(
            f"verification monitor: {cluster.url('monitor')}/ (its certificate chains to "
            f"{data / 'pki' / 'root.pem'})"
        )
    stop = {"now": False}

    def request_stop(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        while not stop["now"]:
            dead = cluster.dead()
            if dead:
                console.print(f"[red]service(s) stopped: {', '.join(dead)}; restarting")
                for name in dead:
                    cluster.restart(name)
            time.sleep(0.5)
    finally:
        console.print("stopping …")
        cluster.stop()
        console.print("stopped cleanly")


@app.command()
def version(
    legal: Annotated[
        bool,
        typer.Option(
            "--legal",
            help="The software identification of every legally "
            "relevant component, as this installation loads it.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """The version of metrocloud; with --legal, each legally relevant component's
    identification (name, version, SHA-256 over its legally relevant code)."""
    if not legal:
        typer.echo(f"metrocloud {__version__}")
        return
    found = identify_all()
    if as_json:
        for ident in found:
            typer.echo(json.dumps({k: v for k, v in ident.to_dict().items() if k != "instance_id"}))
        return
    table = Table(title=f"metrocloud {__version__}: legally relevant software")
    for col in ("component", "software", "version", "checksum (SHA-256)"):
        table.add_column(col, no_wrap=True)
    for ident in found:
        table.add_row(ident.component, ident.name, ident.version, ident.checksum)
    console.print(table)


def failure(o: MeterOutcome) -> str:
    return o.verdict.reason if not o.verdict.verified else "bill differs from the reference"


def consumption(o: MeterOutcome, medium: Medium) -> str:
    """The period's total register in thousands of the medium's unit (kWh, m³)."""
    unit = "kWh" if medium.unit == "Wh" else "m³"
    return f"{o.reference.total_register_wh / 1000:,.3f} {unit}"


def outcome_table(
    outcomes: list[MeterOutcome], tariff: str, media: dict[str, Medium] | None = None
) -> Table:
    table = Table(title=f"Billing period, tariff {tariff}")
    for col in (
        "meter",
        "customer",
        "consumption",
        "bill (FHE) €",
        "bill (reference) €",
        "verified",
    ):
        table.add_column(col, justify="right" if "€" in col or col == "consumption" else "left")
    for o in outcomes:
        regs = o.verdict.registers
        table.add_row(
            o.meter_id,
            o.customer_id,
            consumption(o, (media or {}).get(o.meter_id, Medium.ELECTRICITY)),
            f"{regs.bill_euro:,.4f}" if regs else "—",
            f"{o.reference.bill_euro:,.4f}",
            "[green]yes" if o.ok else f"[red]no: {failure(o)}",
        )
    return table


def parse_media(given: str) -> tuple[Medium, ...]:
    names = [m.strip() for m in given.split(",") if m.strip()]
    known = [m.value for m in Medium]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown medium {', '.join(unknown)}; known: {', '.join(known)}")
    return tuple(Medium(n) for n in names)


DEMO_CUSTOMER = "c-0001"


@app.command()
def demo(
    meters: Annotated[int, typer.Option(help="Simulated meters (one customer each).")] = 5,
    days: Annotated[int, typer.Option(help="Days in the billing period (1-31).")] = 30,
    tariff: Annotated[str, typer.Option(help=f"Tariff program: {', '.join(PROGRAMS)}.")] = "taf1",
    seed: Annotated[int, typer.Option(help="Seed of the simulated meters.")] = 2026,
    data: Annotated[
        Path | None, typer.Option(help="Keep the data folder here (default: temporary).")
    ] = None,
    radio: Annotated[
        bool,
        typer.Option(
            help="Meters send wireless M-Bus telegrams (AES-128) through a simulated, lossy "
            "radio channel to the smart meter gateway."
        ),
    ] = False,
    media: Annotated[
        str,
        typer.Option(
            help="With --radio: what the meters measure, in turn (comma-separated: "
            "electricity, gas, water, heat)."
        ),
    ] = "electricity",
    display: Annotated[
        bool,
        typer.Option(
            help=f"Customer {DEMO_CUSTOMER} brings a secure display: it makes and registers "
            "its own keys, and after the month its page is served until Ctrl-C (passphrase "
            f"from ${PASSPHRASE_ENV}, else asked)."
        ),
    ] = False,
    display_port: Annotated[int, typer.Option(help="Port of the display's page.")] = DEFAULT_PORT,
) -> None:
    """Start the cloud, bill one period of simulated meters end to end, verify, stop."""
    try:
        channel = ChannelConfig.realistic() if radio else None
        config = PipelineConfig(
            meters=meters, days=days, tariff=tariff, seed=seed, radio=radio, channel=channel,
            media=parse_media(media),
        )  # fmt: skip
        config.program()
        if data is not None and data.exists() and any(data.iterdir()):
            raise ValueError(
                f"--data {data} is not empty: a demo bills its period once (the cloud refuses "
                "the same readings again as replays); give a new or empty folder"
            )
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    passphrase = read_passphrase(None) if display else b""
    root = data or Path(tempfile.mkdtemp(prefix="metrocloud-demo-"))
    started = time.monotonic()
    cluster = Cluster(root)
    with console.status("starting broker and services …"):
        cluster.start()
    try:
        own = (
            OwnDisplays(cluster, root / "customers", passphrase, [DEMO_CUSTOMER])
            if (display)
            else None
        )
        outcomes, pipeline = asyncio.run(run_demo(cluster, config, own))
        logbook_ok = False
        try:
            verdict = run_audit(embedded_setup(root))
        except MetrocloudError as exc:  # Rejected included
            logbook_verdict = f"[red]logbook not verified:[/] {exc}"
        else:
            logbook_ok = True
            logbook_verdict = f"[green]logbook verified over its API:[/] {verdict}"
        console.print(outcome_table(outcomes, tariff, pipeline.media_of))
        elapsed = time.monotonic() - started
        per_meter_day = pipeline.bytes_sent / (meters * days)
        console.print(
            f"{meters} meters × {days} days in {elapsed:.1f} s; "
            f"{pipeline.messages_sent} messages, {pipeline.bytes_sent / 1e6:,.1f} MB sent "
            f"({per_meter_day / 1e3:,.0f} kB per meter-day, c and c' included)"
        )
        console.print(logbook_verdict)
        if own is not None:
            show_display(own.displays[DEMO_CUSTOMER], display_port, own.root)
    except MetrocloudError as exc:  # the display's plain messages
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    finally:
        cluster.stop()
        if data is None:
            shutil.rmtree(root, ignore_errors=True)
    bad = [o for o in outcomes if not o.ok]
    if bad or not logbook_ok:
        if bad:
            console.print(f"[red]{len(bad)} bill(s) wrong or unverified")
        raise typer.Exit(1)
    console.print(
        "[green]every bill verified:[/] dec(r) = dec(r'), every reading index in exactly once, "
        "equal to the plaintext reference"
    )


def show_display(customer: CustomerDisplay, port: int, folders: Path) -> None:
    """Serve a demo customer's secure display until Ctrl-C, the cloud still running."""

    def ready(statements: list[Statement]) -> None:
        console.print(statement_table(statements))
        console.print(
            f"[green]{customer.customer_id}'s secure display at http://127.0.0.1:{port}/[/] "
            f"(key folder {folders / customer.customer_id}; Ctrl-C stops it and the cloud)"
        )

    try:
        asyncio.run(serve(customer, port, on_ready=ready))
    except KeyboardInterrupt:
        console.print("display stopped")


async def run_demo(
    cluster: Cluster, config: PipelineConfig, own: OwnDisplays | None = None
) -> tuple[list[MeterOutcome], Pipeline]:
    pipeline = Pipeline(cluster, config, display_keys=own)
    with console.status("generating customer keys (each receiver its own) …"):
        pipeline.provision()
        if own is not None:  # a customer's own display registers its keys itself
            await own.register()
        await pipeline.register_keys()
    if config.radio:
        with console.status("meters → radio channel → smart meter gateway …"):
            stats = pipeline.measure()
        assert stats is not None and pipeline.network is not None
        lost = pipeline.network.channel.stats.lost
        refused = {k: v for k, v in sorted(stats.outcomes.items()) if k != "accepted"}
        console.print(
            f"radio: {stats.sent:,} telegrams sent, {lost:,} lost on the air, "
            f"{stats.accepted:,} accepted by the gateway, refused: {refused or 'none'}; "
            "readings that never arrived go to the error register"
        )
    messages = [m for meter in pipeline.meter_ids for m in pipeline.uploads(meter)]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        sending = progress.add_task("gateway → ingress", total=len(messages))
        await pipeline.send(messages, lambda n: progress.advance(sending, n))
        billing = progress.add_task("results verified", total=len(pipeline.meter_ids))
        outcomes = await pipeline.collect(progress=lambda n: progress.advance(billing, n))
    return outcomes, pipeline


if __name__ == "__main__":
    app()
