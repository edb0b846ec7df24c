"""Asking a running component for its software identification, as the authority does.

A legally relevant component answers ``software.identify.<component>`` on the bus with a
:class:`~metrocloud.core.messages.SoftwareReport` signed by its service identity. The answer
counts only if the certificate is a valid service certificate of the PKI named after the
service that runs the component (legal for a tariff program), the signature holds, it is
fresh, and it speaks of the component asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from nats.aio.client import Client
from nats.errors import Error as NatsError

from metrocloud.bus.subjects import identify_subject
from metrocloud.cloud.software import host_of
from metrocloud.core.errors import Rejected
from metrocloud.core.messages import Envelope, SoftwareReport, check_fresh
from metrocloud.core.software import SoftwareIdentification
from metrocloud.pki.roles import Role
from metrocloud.pki.validate import TrustStore, subject_common_name, verify_signature


@dataclass(frozen=True)
class ComponentReport:
    """A component's identification as it answered, and the modules changed on its disk."""

    identification: SoftwareIdentification
    changed: tuple[str, ...]
    signed_by: str


def open_report(raw: bytes, component: str, trust: TrustStore) -> ComponentReport:
    """Check a signed answer from ``component``; ``Rejected`` with the reason otherwise."""
    envelope = Envelope.decode(raw)
    certificate = trust.verify(envelope.certificate, expected_role=Role.SERVICE)
    signer = subject_common_name(certificate)
    host = host_of(component) or component  # a tariff program answers from legal
    if signer != host:
        raise Rejected("wrong-signer", f"the answer for {component} is signed by {signer}")
    verify_signature(certificate, envelope.body, envelope.signature)
    report = SoftwareReport.decode(envelope.body)
    check_fresh(report.sent_at, datetime.now(timezone.utc))
    if report.component != component:
        raise Rejected("wrong-component", f"asked {component}, answered {report.component}")
    ident = SoftwareIdentification(
        report.component, report.instance_id, report.name, report.version, report.checksum
    )
    return ComponentReport(ident, tuple(report.changed), signer)


async def request_identification(
    nc: Client, component: str, trust: TrustStore, *, timeout_s: float = 5.0
) -> ComponentReport:
    """Ask ``component`` for its identification; ``Rejected("no-answer")`` if none comes."""
    try:
        answer = await nc.request(identify_subject(component), b"", timeout=timeout_s)
    except (NatsError, TimeoutError) as exc:
        raise Rejected("no-answer", f"{component} did not answer: {exc!r}") from None
    return open_report(answer.data, component, trust)
