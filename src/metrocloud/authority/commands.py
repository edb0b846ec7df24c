"""``metrocloud authority``: the authority's reference list, and a check of a running cloud.

``approve`` signs the identifications of the code in this installation (what the authority
examined) as a new reference list and installs it in ``<data>/authority/reference``.
``verify`` asks every legally relevant service of the running cloud for its identification
and prints a green or red badge per component; the exit status is 1 if any is red.
``check`` runs a round of confidential functionality checks (:mod:`.checks`): an embedded
cloud bills a period of ordinary customers with the authority's test meters among them, and
the authority compares its test meters' results with its secret test vectors, logs a
verdict per tariff program version and prints it; the exit status is 1 if any check fails.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from metrocloud.authority.checks import CheckRound
from metrocloud.authority.reference import (
    ApprovedIdentification,
    ReferenceList,
    ReferenceStore,
    sign_reference,
)
from metrocloud.authority.verification import ComponentStatus, check_components
from metrocloud.bus.connect import connect
from metrocloud.cloud.cluster import Cluster
from metrocloud.cloud.runtime import DataDir
from metrocloud.cloud.software import all_components, cloud_components, load
from metrocloud.core.clock import BillingPeriod
from metrocloud.core.errors import MetrocloudError, Rejected
from metrocloud.download.package import open_package
from metrocloud.pki import Role
from metrocloud.testbed.insider import ENTRY, FAULT
from metrocloud.testbed.pipeline import Pipeline, PipelineConfig

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


def _round_tables(check_round: CheckRound) -> tuple[Table, Table]:
    verdicts = Table(title=f"functionality check, round {check_round.round_id}")
    for col in ("tariff program", "version", "checks", "failed", "verdict"):
        verdicts.add_column(col)
    for v in check_round.verdicts:
        mark = "[green]pass" if v.passed else "[red]FAIL"
        verdicts.add_row(v.program, v.program_version, str(v.checks), str(v.failures), mark)
    meters = Table(title="the authority's test meters (never logged)")
    for col in ("meter", "period", "bill", "expected", "check"):
        meters.add_column(col)
    for o in check_round.outcomes:
        found = f"{o.found.bill_euro:.2f} €" if o.found else "—"
        mark = "[green]equal" if o.passed else f"[red]{o.reason}"
        period = BillingPeriod.from_id(o.period_id).label()
        meters.add_row(o.meter_id, period, found, f"{o.expected.bill_euro:.2f} €", mark)
    return verdicts, meters


@app.command()
def check(
    tariff: Annotated[str, typer.Option(help="The tariff program checked.")] = "taf1",
    meters: Annotated[int, typer.Option(help="Ordinary customers' meters.")] = 5,
    test_meters: Annotated[
        int, typer.Option(help="The authority's test meters among them (secret positions).")
    ] = 3,
    days: Annotated[int, typer.Option(help="Days in the billing period checked.")] = 1,
    data: Annotated[
        Path | None, typer.Option(help="Keep the cloud's data folder here (default: temporary).")
    ] = None,
    insider: Annotated[
        str | None,
        typer.Option(
            help="Testbed only: run legal as an insider manipulated it, with this fault "
            "(see metrocloud.testbed.insider), to watch the check catch it."
        ),
    ] = None,
) -> None:
    """Run a round of confidential functionality checks with secret test vectors."""
    try:
        config = PipelineConfig(meters=meters, days=days, tariff=tariff, test_meters=test_meters)
        config.program()
        if test_meters < 1:
            raise ValueError("--test-meters must be at least 1: a round checks test meters")
        if insider is not None and not FAULT.fullmatch(insider):
            raise ValueError(f"no insider fault {insider!r} (see metrocloud.testbed.insider)")
        if data is not None and data.exists() and any(data.iterdir()):
            raise ValueError(f"--data {data} is not empty; give a new or empty folder")
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    root = data or Path(tempfile.mkdtemp(prefix="metrocloud-check-"))
    cluster = Cluster(root, options={"legal": {"fault": insider}} if insider else None)
    if insider:
        cluster.entries["legal"] = ENTRY
    try:
        with console.status("starting broker and services …"):
            cluster.start()
        check_round, customers = asyncio.run(run_check(cluster, config))
    finally:
        cluster.stop()
        if data is None:
            shutil.rmtree(root, ignore_errors=True)
    verdicts, own = _round_tables(check_round)
    console.print(own)
    console.print(verdicts)
    console.print(
        f"{customers} of {meters} ordinary customers' bills verified by their displays; "
        f"round {check_round.round_id} logged as {len(check_round.verdicts)} "
        "functionality-check event(s), without meter or customer ids"
    )
    if not check_round.passed:
        console.print("[red]functionality check failed:[/] the tariff program bills wrongly")
        raise typer.Exit(1)
    console.print("[green]functionality check passed:[/] every result equals its test vector")


async def run_check(cluster: Cluster, config: PipelineConfig) -> tuple[CheckRound, int]:
    """Bill ``config``'s period with the authority's test meters among the customers, check
    and log the round. Returns it and how many ordinary bills their displays verified."""
    pipeline = Pipeline(cluster, config)
    with console.status("generating keys (customers and the authority's test customers) …"):
        pipeline.provision()
        await pipeline.register_keys()
    messages = [m for meter in pipeline.meter_ids for m in pipeline.uploads(meter)]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console) as progress:
        sending = progress.add_task("gateway → ingress", total=len(messages))
        await pipeline.send(messages, lambda n: progress.advance(sending, n))
        fetching = progress.add_task("results fetched", total=len(pipeline.meter_ids))
        outcomes = await pipeline.collect(progress=lambda n: progress.advance(fetching, n))
        checking = progress.add_task("test vectors compared", total=config.test_meters)
        check_round = pipeline.check(progress=lambda n: progress.advance(checking, n))
    assert check_round is not None  # every period is checked (check_probability 1)
    await pipeline.log_check(check_round)
    return check_round, sum(o.verdict.verified for o in outcomes)
