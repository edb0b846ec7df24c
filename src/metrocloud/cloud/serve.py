"""Run one cloud service in this process (started as ``python -m metrocloud.cloud.boot NAME
--data DIR`` in the embedded cloud, or ``... NAME --config FILE`` in a distributed
deployment; the boot step loads the installed releases first)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import re
import signal
from pathlib import Path

from metrocloud.cloud.config import load_config
from metrocloud.cloud.runtime import DataDir, Service
from metrocloud.download.manager import install_root

SERVICES: dict[str, str] = {
    "pki": "metrocloud.cloud.pki:PkiService",
    "communication": "metrocloud.cloud.communication:Communication",
    "legal": "metrocloud.cloud.legal:Legal",
    "storage": "metrocloud.cloud.storage:Storage",
    "logbook": "metrocloud.cloud.logbook:Logbook",
    "display": "metrocloud.cloud.display:Display",
    "download": "metrocloud.cloud.download:Download",
    "anomaly": "metrocloud.cloud.anomaly:Anomaly",
}
"""Each service's class, as ``module:class``: a process imports only its own service's
module (and what that needs), which keeps the start of a whole cloud short."""
WITNESS = re.compile(r"witness-[1-9][0-9]*")
"""Process names of the authority's witnesses (``witness-1``, ``witness-2``, ...)."""
MONITOR = "monitor"
"""Process name of the authority's verification monitor."""
_WITNESS_CLASS = "metrocloud.authority.witness:WitnessService"
_MONITOR_CLASS = "metrocloud.authority.monitor_service:MonitorService"


def service_class(name: str, where: str | None = None) -> type[Service]:
    """The class of the service ``name`` runs (its module imported now): its own, or the
    one at ``where`` (``module:class``), which must be a subclass of it."""
    if WITNESS.fullmatch(name):
        own = _WITNESS_CLASS
    elif name == MONITOR:
        own = _MONITOR_CLASS
    else:
        own = SERVICES[name]
    kind, base = _load(where or own), _load(own)
    if not issubclass(kind, base):
        raise TypeError(f"{where} is not a {base.__name__}")
    return kind


def _load(where: str) -> type[Service]:
    module, _, attribute = where.partition(":")
    kind: type[Service] = getattr(importlib.import_module(module), attribute)
    return kind


def process_name(name: str) -> str:
    """``name`` if it names a service, a witness or the monitor; ``ArgumentTypeError``
    otherwise."""
    if name in SERVICES or name == MONITOR or WITNESS.fullmatch(name):
        return name
    raise argparse.ArgumentTypeError(f"{name!r}: one of {sorted(SERVICES)}, {MONITOR} or witness-N")


async def run_service(
    name: str,
    data: DataDir,
    options: dict[str, str],
    process: str | None = None,
    kind: type[Service] | None = None,
) -> Service:
    """Run one service until it stops; the service is returned (did it ask to restart?).

    ``process`` names this process (its ready file), when several run the same service;
    ``kind`` is the class to run (the service's own by default). Once it is ready, the
    releases it runs on trial are kept (see :mod:`metrocloud.cloud.boot`): the new code
    has started well."""
    service = (kind or service_class(name))(data, options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(service.stop()))
    data.run.mkdir(parents=True, exist_ok=True)
    ready = data.run / f"{process or name}.ready"

    async def mark_ready() -> None:
        while not service.ready:
            await asyncio.sleep(0.05)
        root = install_root(data.root)
        for component in root.on_trial(name):
            root.commit(component)
        ready.write_text(str(os.getpid()))

    marker = asyncio.ensure_future(mark_ready())
    try:
        await service.run()
    finally:
        marker.cancel()
        ready.unlink(missing_ok=True)
    return service


def main(argv: list[str] | None = None, subclass: str | None = None) -> Service:
    """Parse ``argv`` and run the service; ``subclass`` (``module:class``) runs a subclass of
    the service's class instead: only code that calls this function can choose one, no
    option or configuration file can."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", type=process_name)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--data", type=Path, help="the embedded cloud's data folder")
    where.add_argument("--config", type=Path, help="a process configuration (TOML)")
    parser.add_argument("--option", action="append", default=[], help="KEY=VALUE")
    args = parser.parse_args(argv)
    options = dict(o.split("=", 1) for o in args.option)
    process = args.name
    if args.config is not None:
        config = load_config(args.config)
        if config.service != args.name:
            parser.error(f"{args.config} configures {config.service}, not {args.name}")
        data = DataDir(config.data, config)
        options = {**config.service_options(), **options}
        process = config.process
    else:
        data = DataDir(args.data)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {process} %(levelname)s %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    kind = service_class(args.name, subclass)
    return asyncio.run(run_service(args.name, data, options, process, kind))


if __name__ == "__main__":
    main()
