"""``metrocloud serve SERVICE --config FILE``: one process of a distributed deployment."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from metrocloud.cloud.config import ServiceConfig, load_config
from metrocloud.core.errors import ConfigurationError

console = Console(stderr=True)


def check_deployable(config: ServiceConfig) -> None:
    """What the file cannot say by itself: the service exists, it has the broker's URLs if it
    uses the broker, and its folder holds its identity and the PKI's trust anchors.
    :class:`ConfigurationError` otherwise."""
    from metrocloud.cloud.serve import process_name, service_class  # imports every service

    try:
        process_name(config.service)
    except Exception as exc:  # argparse's error, with the list of services
        raise ConfigurationError(f"service {exc}") from None
    kind = service_class(config.service)
    if kind.uses_bus and config.bus is None:
        raise ConfigurationError(f"{config.service} connects to the broker: [bus] urls missing")
    kind.check_options(config.service_options())
    for needed, what in (
        (config.data / "pki" / "root.pem", "the PKI's root certificate"),
        (config.data / "identities" / f"{config.service}.pem", f"{config.service}'s certificate"),
        (config.data / "identities" / f"{config.service}.key", f"{config.service}'s key"),
    ):
        if not needed.exists():
            raise ConfigurationError(f"{what} is missing: {needed}")


def serve(
    service: Annotated[str, typer.Argument(help="The service this process runs.")],
    config: Annotated[Path, typer.Option(help="The process's configuration (TOML).")],
    check: Annotated[
        bool, typer.Option("--check", help="Check the configuration and stop.")
    ] = False,
) -> None:
    """Run one service of a distributed deployment as its configuration file says (see
    docs/deployment.md); the process boots on its installed releases. ``nats`` runs a
    broker node (it becomes nats-server)."""
    from metrocloud.deploy.broker import BROKER_SERVICE, broker_node, exec_broker_node

    try:
        found = load_config(config)
        if found.service != service:
            raise ConfigurationError(f"config {config} is for {found.service}, not {service}")
        if service == BROKER_SERVICE:
            broker_node(found)  # loads its identity and trust anchors: a full check
        else:
            check_deployable(found)
    except ConfigurationError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    if check:
        console.print(escape(f"{config}: {found.process} ({found.service}) in {found.data}: fine"))
        return
    if service == BROKER_SERVICE:
        exec_broker_node(found)
    sys.stdout.flush()
    sys.stderr.flush()
    command = [sys.executable, "-m", "metrocloud.cloud.boot", service, "--config", str(config)]
    os.execv(sys.executable, command)
