"""One service process's configuration, from a TOML file: ``metrocloud serve NAME --config FILE``.

The embedded cloud describes itself in ``<data>/cluster.json``, written by its supervisor.
A distributed deployment has no supervisor: each process reads what it needs from its
own file instead: where the broker nodes are, which database holds the store and which
the logbook, where the PKI, the logbook API, the download manager, the witnesses and the
monitor answer, and its own port and options. Keys, certificates and the PKI's trust
anchors stay in the process's data folder (``identities/``, ``pki/``), as in the embedded
layout, and so does its install root (``software/``)::

    service = "legal"                      # which service this process runs
    instance = "legal-2"                   # its own name (logs, ready file); default: service
    data = "/srv/metrocloud/legal-2"       # identities/, pki/, software/, run/, logs/
    host = "10.0.0.12"                     # the address it listens on; default 127.0.0.1

    [bus]
    urls = ["tls://10.0.0.1:4222", "tls://10.0.0.2:4222", "tls://10.0.0.3:4222"]

    [storage]
    database = "postgresql://metrocloud@10.0.0.5:5432/metrocloud"
    logbook = "postgresql://metrocloud@10.0.0.5:5432/logbook"   # the logbook service's

    [cloud]
    pki_url = "https://10.0.0.4:8443"
    crl_refresh_s = 30

    [options]                              # the service's own settings
    threads = "1"

A broker node is a process of its own as well (``service = "nats"``): ``port`` is its
client port, ``host`` its address, and a ``[broker]`` table names its cluster, its route
port and the other nodes' route addresses (:class:`BrokerSection`); its folder holds the
``nats`` identity and the trust anchors.

Everything is checked when the file is read; a mistake is a :class:`ConfigurationError`
naming the file, the setting and what is wrong. This module imports nothing legally
relevant: the boot step reads it before the install root is activated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from metrocloud.core.errors import ConfigurationError
from metrocloud.core.settings import problems, read_toml

NAME = r"^[a-z][a-z0-9-]{0,62}$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BusSection(_Section):
    urls: list[str] = Field(min_length=1)
    """Every broker node's client URL (``tls://HOST:PORT``); clients fail over among them."""

    @field_validator("urls")
    @classmethod
    def _schemes(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("tls://", "nats://")) or "," in url:
                raise ValueError(f"{url!r} is no broker URL (tls://HOST:PORT or nats://HOST:PORT)")
        return urls


class StorageSection(_Section):
    database: str | None = None
    """The store: ``postgresql://...`` or ``sqlite:///PATH``; default the data folder's SQLite."""
    logbook: str | None = None
    """The logbook service's Merkle tree: the same forms; default the data folder's SQLite."""

    @field_validator("database", "logbook")
    @classmethod
    def _location(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "sqlite:///")):
            raise ValueError(f"{value!r} is neither postgresql://... nor sqlite:///PATH")
        return value


class CloudSection(_Section):
    """Where the other parts of the cloud answer (what ``cluster.json`` says when embedded)."""

    pki_url: str | None = None
    logbook_url: str | None = None
    download_url: str | None = None
    monitor_url: str | None = None
    witnesses: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, str] = Field(default_factory=dict)
    """Every cloud process's metrics URL (``http://HOST:PORT/metrics``): anomaly detection's
    targets."""
    crl_refresh_s: float = Field(default=30.0, gt=0, le=86_400)

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, targets: dict[str, str]) -> dict[str, str]:
        for name, url in targets.items():
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{name}: {url!r} is no http(s):// URL")
        return targets

    @field_validator("pki_url", "logbook_url", "download_url", "monitor_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError(f"{value!r} is no https:// URL")
        return value


class BrokerSection(_Section):
    """One node of the broker cluster (``service = "nats"``)."""

    cluster: str = Field(default="metrocloud", pattern=NAME)
    """The cluster's name, the same on every node."""
    route_port: int | None = Field(default=None, ge=1, le=65_535)
    """Where the other nodes connect (on the node's ``host``); none: a single server."""
    routes: list[str] = Field(default_factory=list)
    """The other nodes' route addresses, ``HOST:PORT`` each."""
    max_payload: int | None = Field(default=None, gt=0, le=64 * 1024 * 1024)
    """The largest message in bytes; default the cloud's (32 MiB)."""

    @field_validator("routes")
    @classmethod
    def _routes(cls, routes: list[str]) -> list[str]:
        for route in routes:
            host, sep, port = route.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65_536:
                raise ValueError(f"{route!r} is no route address (HOST:PORT)")
        return routes

    def peers(self) -> tuple[tuple[str, int], ...]:
        """:attr:`routes` as ``(host, port)`` pairs (an IPv6 address without brackets)."""
        found = []
        for route in self.routes:
            host, _, port = route.rpartition(":")
            found.append((host.removeprefix("[").removesuffix("]"), int(port)))
        return tuple(found)


class ServiceConfig(_Section):
    service: str = Field(pattern=NAME)
    instance: str | None = Field(default=None, pattern=NAME)
    data: Path
    host: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.:-]{1,253}$")
    """The address the process listens on (HTTPS, metrics, a broker node's ports)."""
    port: int | None = Field(default=None, ge=1, le=65_535)
    bus: BusSection | None = None
    broker: BrokerSection | None = None
    storage: StorageSection = Field(default_factory=StorageSection)
    cloud: CloudSection = Field(default_factory=CloudSection)
    options: dict[str, str] = Field(default_factory=dict)

    @property
    def process(self) -> str:
        """This process's own name: its log and ready file (``legal-2``)."""
        return self.instance or self.service

    def cluster(self) -> dict[str, Any]:
        """The same description the embedded supervisor writes to ``cluster.json``."""
        found: dict[str, Any] = {
            "crl_refresh_s": self.cloud.crl_refresh_s,
            "witnesses": dict(self.cloud.witnesses),
        }
        if self.cloud.metrics:
            found["metrics"] = dict(self.cloud.metrics)
        if self.bus is not None:
            found["nats_url"] = ",".join(self.bus.urls)
        for key in ("pki_url", "logbook_url", "download_url", "monitor_url"):
            value = getattr(self.cloud, key)
            if value is not None:
                found[key] = value
        return found

    def service_options(self) -> dict[str, str]:
        """The options the service reads, its port and its name included."""
        options = dict(self.options)
        if self.port is not None:
            options["port"] = str(self.port)
        if self.host is not None:
            options["host"] = self.host
        options.setdefault("name", self.process)
        return options


def load_config(path: Path) -> ServiceConfig:
    """Read and check ``path``; :class:`ConfigurationError` says what is wrong and where."""
    raw = read_toml(path, "config")
    try:
        config = ServiceConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigurationError(f"config {path}: {problems(exc)}") from None
    if not config.data.is_absolute():
        config = config.model_copy(update={"data": (Path(path).parent / config.data).resolve()})
    return config
