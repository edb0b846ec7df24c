"""The cloud's legally relevant components and the modules that make up each.

This table is the line between legally relevant and other code: a module listed here is
covered by a component's checksum; anything else (the command line, the testbed, the cluster
supervisor, the broker's plumbing, HTTPS serving, the CA's issuing code) may change without
changing any legally relevant checksum. Each tariff program is a component of its own,
``tariff-<name>``, covering its own modules (``TariffProgram.code_modules``), so a new tariff
program leaves the legal service's identification as it was.
"""

from __future__ import annotations

from metrocloud.core.software import LegalComponent, LoadedComponent, SoftwareIdentification

_RUNTIME = ("metrocloud.cloud.runtime", "metrocloud.core.events", "metrocloud.core.errors")
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
    )
}
"""The cloud's legally relevant services, by component name."""


def tariff_components() -> dict[str, LegalComponent]:
    """One component per tariff program (imported here, not by services that bill nothing)."""
    from metrocloud.tariffs import PROGRAMS

    return {
        f"tariff-{p.name}": LegalComponent(
            f"tariff-{p.name}", f"metrocloud-tariff-{p.name}", p.version, p.code_modules
        )
        for p in PROGRAMS.values()
    }


def all_components() -> dict[str, LegalComponent]:
    """Every legally relevant component: the services and the tariff programs."""
    return {**LEGAL_COMPONENTS, **tariff_components()}


def identify_all() -> list[SoftwareIdentification]:
    """The identification of every legally relevant component as this process loads it."""
    return [c.load().identification for c in all_components().values()]


def load(component: str) -> LoadedComponent | None:
    """Legally relevant service ``component`` loaded in this process (None if it is not)."""
    found = LEGAL_COMPONENTS.get(component)
    return None if found is None else found.load()
