"""``metrocloud testbed``: the test controller's HTTP API on 127.0.0.1."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from metrocloud.testbed.controller import create_controller_app
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
