"""Whether each legally relevant component runs approved software: the verification
monitor's judgement, made from what the components answer and the authority's list.

A component is **green** when it answered with a good signature, its identification is on
the authority's reference list, and its legally relevant code on disk is still what it
loaded. It is **red** otherwise, with the reason: no answer, an answer that does not check
out, an identification not approved, or code changed on disk while it runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nats.aio.client import Client

from metrocloud.authority.identification import ComponentReport, request_identification
from metrocloud.authority.reference import ReferenceList
from metrocloud.core.errors import Rejected
from metrocloud.pki.validate import TrustStore


@dataclass(frozen=True)
class ComponentStatus:
    """One component's badge and why."""

    component: str
    green: bool
    reason: str
    detail: str
    report: ComponentReport | None = None

    @property
    def badge(self) -> str:
        return "green" if self.green else "red"


def judge(component: str, report: ComponentReport, reference: ReferenceList) -> ComponentStatus:
    """The badge of ``component`` for the identification it reported."""
    ident = report.identification
    if report.changed:
        return ComponentStatus(
            component,
            False,
            "changed-on-disk",
            f"legally relevant code changed since it was loaded: {', '.join(report.changed)}",
            report,
        )
    verdict = reference.verdict(component, ident.name, ident.version, ident.checksum)
    return ComponentStatus(component, verdict.approved, verdict.reason, verdict.detail, report)


async def check_components(
    nc: Client,
    components: Iterable[str],
    trust: TrustStore,
    reference: ReferenceList,
    *,
    timeout_s: float = 5.0,
) -> list[ComponentStatus]:
    """Ask each component for its identification and judge it against ``reference``."""
    found = []
    for component in components:
        try:
            report = await request_identification(nc, component, trust, timeout_s=timeout_s)
        except Rejected as exc:
            found.append(ComponentStatus(component, False, exc.reason, exc.detail))
            continue
        found.append(judge(component, report, reference))
    return found
