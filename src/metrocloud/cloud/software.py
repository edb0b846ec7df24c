"""The cloud's legally relevant components and the modules that make up each.

This table is the line between legally relevant and other code: a module listed here is
covered by a component's checksum; anything else (the command line, the testbed, the cluster
supervisor, the broker's plumbing, HTTPS serving, the CA's issuing code) may change without
changing any legally relevant checksum. Each tariff program is a component of its own,
``tariff-<name>``, covering its own modules (``TariffProgram.code_modules``), so a new tariff
program leaves the legal service's identification as it was.
"""

from __future__ import annotations

import dataclasses
import functools

from metrocloud.core.software import LegalComponent, LoadedComponent, SoftwareIdentification
from metrocloud.download.installroot import active_version

_RUNTIME = (
    "metrocloud.cloud.runtime",
    "metrocloud.core.events",
    "metrocloud.core.errors",
    "metrocloud.metrics.exporter",  # in every message's path: counts it, times it
)
_MESSAGES = ("metrocloud.core.messages", "metrocloud.pki.validate")

LEGAL_COMPONENTS: dict[str, LegalComponent] = {
    c.component: c
    for c in (
        LegalComponent(
            "communication",
            "metrocloud-communication",
            "1.0.0",
            (
                "metrocloud.cloud.communication",
                *_RUNTIME,
                *_MESSAGES,
                "metrocloud.fhe.inspect",
                "metrocloud.fhe.params",
            ),
        ),
        LegalComponent(
            "legal",
            "metrocloud-legal",
            "1.0.0",
            (
                "metrocloud.cloud.legal",
                *_RUNTIME,
                *_MESSAGES,
                "metrocloud.fhe.context",
                "metrocloud.fhe.params",
                "metrocloud.tariffs.base",
            ),
        ),
        LegalComponent(
            "storage",
            "metrocloud-storage",
            "1.0.0",
            (
                "metrocloud.cloud.storage",
                *_RUNTIME,
                *_MESSAGES,
                "metrocloud.store.base",
                "metrocloud.store.sqlite",
            ),
        ),
        LegalComponent(
            "logbook",
            "metrocloud-logbook",
            "1.0.0",
            (
                "metrocloud.cloud.logbook",
                *_RUNTIME,
                "metrocloud.logbook.transparency",
                "metrocloud.logbook.tree",
                "metrocloud.logbook.merkle",
                "metrocloud.logbook.chain",
                "metrocloud.logbook.checkpoint",
            ),
        ),
        LegalComponent(
            "display",
            "metrocloud-display",
            "1.0.0",
            ("metrocloud.cloud.display", *_RUNTIME, *_MESSAGES),
        ),
        LegalComponent(  # the authority relies on its states: they are identified as well
            "anomaly",
            "metrocloud-anomaly",
            "1.0.0",
            (
                "metrocloud.cloud.anomaly",
                *_RUNTIME,
                "metrocloud.core.settings",
                "metrocloud.detection.features",
                "metrocloud.detection.rules",
                "metrocloud.detection.baseline",
                "metrocloud.detection.detector",
                "metrocloud.detection.hysteresis",
                "metrocloud.detection.progress",
            ),
        ),
        LegalComponent(
            "download",
            "metrocloud-download",
            "1.0.0",
            (
                "metrocloud.cloud.download",
                *_RUNTIME,
                "metrocloud.download.manager",
                "metrocloud.download.package",
                "metrocloud.download.installroot",
                "metrocloud.download.preflight",
                "metrocloud.core.canonical",
                "metrocloud.authority.reference",
            ),
        ),
    )
}
"""The cloud's legally relevant services, by component name."""


AUTHORITY_COMPONENTS: dict[str, LegalComponent] = {
    "monitor": LegalComponent(
        "monitor",
        "metrocloud-monitor",
        "1.0.0",
        (
            "metrocloud.authority.monitor",
            "metrocloud.authority.monitor_web",
            "metrocloud.authority.verification",
            "metrocloud.authority.reference",
            "metrocloud.authority.identification",
        ),
    ),
}
"""The authority's legally relevant processes: the verification monitor, which judges and
shows its own identification (it asks, it is not asked)."""

UPDATABLE_HOSTS = frozenset({"communication", "legal", "storage", "logbook", "display"})
"""The services whose components the download manager may update. Not the download
manager itself (a re-installation replaces it) and not the authority's processes."""


def host_of(component: str) -> str | None:
    """The cloud service whose process runs ``component`` (tariff programs run in legal)."""
    if component.startswith("tariff-"):
        return "legal" if component in tariff_components() else None
    return component if component in LEGAL_COMPONENTS else None


def updatable_host(component: str) -> str | None:
    """The service to switch when ``component`` is updated; None if the download manager
    may not update it."""
    host = host_of(component)
    return host if host in UPDATABLE_HOSTS else None


def hosted_by(service: str) -> list[str]:
    """The legally relevant components that service ``service`` runs."""
    hosted = [service] if service in LEGAL_COMPONENTS else []
    if service == "legal":
        hosted += sorted(tariff_components())
    return hosted


def exclusive_modules(component: str) -> frozenset[str]:
    """The modules only ``component`` declares: what an update of it alone may replace."""
    others = [c for name, c in all_components().items() if name != component]
    shared = {m for c in others for m in c.modules}
    return frozenset(all_components()[component].modules) - shared


def tariff_components() -> dict[str, LegalComponent]:
    """One component per tariff program (imported here, not by services that bill nothing)."""
    return dict(_tariff_components())


@functools.cache
def _tariff_components() -> tuple[tuple[str, LegalComponent], ...]:
    """Built once per process: the identification check looks tariff programs up often."""
    from metrocloud.tariffs import PROGRAMS

    return tuple(
        (
            f"tariff-{p.name}",
            LegalComponent(
                f"tariff-{p.name}", f"metrocloud-tariff-{p.name}", p.version, p.code_modules
            ),
        )
        for p in PROGRAMS.values()
    )


def all_components() -> dict[str, LegalComponent]:
    """Every legally relevant component: the services, the tariff programs and the
    authority's monitor."""
    return {**LEGAL_COMPONENTS, **tariff_components(), **AUTHORITY_COMPONENTS}


def cloud_components() -> list[str]:
    """Every legally relevant component a cloud service runs (and answers for on the bus):
    what the authority verifies."""
    return [name for name in all_components() if host_of(name) is not None]


def identify_all() -> list[SoftwareIdentification]:
    """The identification of every legally relevant component as this process loads it."""
    return [component(name).load().identification for name in all_components()]


def component(name: str) -> LegalComponent:
    """Legally relevant component ``name`` as this process runs it: a service's version is
    that of its activated release, if one is (a tariff program states its own in its code).
    ``KeyError`` if there is no such component."""
    # A service's own component is found without importing the tariff programs (and the
    # FHE library with them): only legal bills.
    known = {**LEGAL_COMPONENTS, **AUTHORITY_COMPONENTS}
    found = known[name] if name in known else tariff_components()[name]
    version = active_version(name)
    if version is not None and name in LEGAL_COMPONENTS:
        found = dataclasses.replace(found, version=version)
    return found


def load(name: str) -> LoadedComponent | None:
    """Legally relevant component ``name`` loaded in this process (None if there is none)."""
    try:
        return component(name).load()
    except KeyError:
        return None
