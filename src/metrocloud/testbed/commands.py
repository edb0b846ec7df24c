"""``metrocloud testbed``: the test controller's HTTP API on 127.0.0.1, and the scenario
library run against it with a report."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from metrocloud.testbed.controller import TestbedClient, create_controller_app
from metrocloud.testbed.scenarios import SCENARIOS, ScenarioReport, render_html, run_scenarios
from metrocloud.testbed.testbed import Testbed

app = typer.Typer(add_completion=False, help="The testbed: a test controller for scenarios.")
console = Console()


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8470,
    data: Annotated[
        Path | None,
        typer.Option(help="Folder for the ecosystems it starts (default: temporary)."),
    ] = None,
) -> None:
    """Run the test controller; scenarios drive it over HTTP (OpenAPI at /openapi.json)."""
    root = data or Path(tempfile.mkdtemp(prefix="metrocloud-testbed-"))
    testbed = Testbed(root)
    console.print(
        f"test controller on http://127.0.0.1:{port} (API document: /openapi.json, "
        f"/docs); ecosystems in {root}"
    )
    try:
        controller = create_controller_app(testbed)
        uvicorn.run(controller, host="127.0.0.1", port=port, log_level="warning")
    finally:
        testbed.stop()


@app.command()
def run(
    report: Annotated[
        Path | None, typer.Option(help="Write the scenario report here (HTML).")
    ] = None,
    json_report: Annotated[
        Path | None, typer.Option("--json", help="Write the reports here (JSON) as well.")
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(help="Run this scenario only (repeatable; see --list)."),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="A running test controller (default: one in this process)."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Folder for the ecosystems (default: temporary, removed after)."),
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the scenarios and stop.")] = False,
) -> None:
    """Run the scenario library (attacks and faults on a fresh ecosystem each) and report,
    per scenario, what was expected and what was observed. Exit status 1 if one failed."""
    if list_:
        for s in SCENARIOS.values():
            console.print(f"[bold]{s.name}[/]: {s.title}")
        return
    unknown = sorted(set(only or ()) - set(SCENARIOS))
    if unknown:
        console.print(f"[red]unknown scenario {', '.join(unknown)}[/]; see --list")
        raise typer.Exit(2)
    names = list(only or SCENARIOS)
    root = data or Path(tempfile.mkdtemp(prefix="metrocloud-scenarios-"))
    if url is None:
        client, _ = TestbedClient.in_process(root)
    else:
        client = TestbedClient.connect(url)
    try:
        columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("scenarios", total=len(names))

            def done(r: ScenarioReport) -> None:
                mark = "[green]passed[/]" if r.ok else "[red]FAILED[/]"
                progress.console.print(f"{mark} {r.name} ({r.seconds:.1f} s)")
                progress.advance(task)

            reports = run_scenarios(client, names, done)
    finally:
        client.close()
        if data is None:
            shutil.rmtree(root, ignore_errors=True)
    table = Table("scenario", "expected", "observed", "verdict")
    for r in reports:
        observed = "; ".join(f"{c.claim}: {c.observed}" for c in r.checks)
        if r.error:
            observed += f" error: {r.error}"
        table.add_row(r.name, r.expected, observed, "passed" if r.ok else "FAILED")
    console.print(table)
    if report is not None:
        report.write_text(render_html(reports), encoding="utf-8")
        console.print(f"report: {report}")
    if json_report is not None:
        json_report.write_text(json.dumps([r.to_dict() for r in reports], indent=2) + "\n")
    failed = [r.name for r in reports if not r.ok]
    console.print(f"{len(reports) - len(failed)} of {len(reports)} scenarios passed")
    if failed:
        raise typer.Exit(1)
