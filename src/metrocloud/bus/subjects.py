"""Zone subjects, streams and broker permissions: the single source of truth.

The cloud is split into zones (ingress, legal, services, egress). Zone separation is
enforced by the NATS server: every service connects as its own user and the server's
authorization block, rendered from :data:`ROLES`, lets it publish and subscribe only the
subjects of its job. Subjects run one way: field -> ingress -> legal -> egress.

Subject map (``<m>`` meter id, ``<c>`` customer id, ``<p>`` billing period id,
``<s>`` service name)::

    ingress.upload.<gateway>      gateway -> communication   signed transmissions, period closings
    ingress.keys.<c>              receiver -> communication  signed FHE key registrations
    ingress.report.<c>            receiver -> communication  verification failures (flags)
    legal.in.reading.<m>          communication -> legal, storage
    legal.in.close.<m>            communication -> legal     billing period closed
    legal.keys.<c>                communication -> storage   key registry
    legal.results.<m>             legal -> storage           signed encrypted results r, r'
    legal.log.<s>                 every cloud service -> logbook
    egress.results.<m>.<p>        storage -> display         results ready for receivers
    egress.readings.<m>.<p>.<n>   storage -> display         the signed encrypted readings
    egress.display.fetch          receiver -> display        request/reply: a result
    egress.display.readings       receiver -> display        request/reply: a transmission
    egress.display.periods        receiver -> display        request/reply: periods with results
    services.>                    third-party add-ons (never legal.>)
    software.identify.<c>         monitor, download -> each legally relevant component
    software.switch.<s>           download -> service: start again on the installed release
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class StreamSpec:
    """A JetStream stream (file storage) and the subjects it captures."""

    name: str
    subjects: tuple[str, ...]
    retention: Literal["limits", "workqueue"] = "limits"
    max_age_s: float = 7 * 24 * 3600.0
    duplicate_window_s: float = 120.0
    allow_direct: bool = False


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer with explicit acknowledgement."""

    stream: str
    durable: str
    filter_subject: str
    # A message fetched by a service that then dies is redelivered after ack_wait: this is
    # the recovery time after a crash. Long work calls ``msg.in_progress()`` to extend it.
    ack_wait_s: float = 15.0
    max_deliver: int = -1


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(
        "INGRESS",
        ("ingress.upload.>", "ingress.keys.>", "ingress.report.>"),
        retention="workqueue",
    ),
    StreamSpec("LEGAL", ("legal.in.>", "legal.keys.>", "legal.results.>")),
    StreamSpec("LOGBOOK", ("legal.log.>",)),
    StreamSpec(
        "EGRESS",
        ("egress.results.>", "egress.readings.>"),
        max_age_s=365 * 24 * 3600.0,
        allow_direct=True,
    ),
)

CONSUMERS: tuple[ConsumerSpec, ...] = (
    ConsumerSpec("INGRESS", "communication", "ingress.>"),
    ConsumerSpec("LEGAL", "legal", "legal.in.>"),
    ConsumerSpec("LEGAL", "storage-readings", "legal.in.reading.>"),
    ConsumerSpec("LEGAL", "storage-keys", "legal.keys.>"),
    ConsumerSpec("LEGAL", "storage-results", "legal.results.>"),
    ConsumerSpec("LOGBOOK", "logbook", "legal.log.>"),
)


DISPLAY_REQUESTS = ("egress.display.fetch", "egress.display.readings", "egress.display.periods")
"""What a receiver may ask the display: a result, a transmission of readings, the periods."""


def inbox_prefix(role: str) -> str:
    """Each role gets its own reply inbox so no client can read another's replies."""
    return f"_INBOX_{role}"


def _consume(stream: str, durable: str) -> tuple[str, ...]:
    """JetStream API subjects a client needs to pull from one durable consumer."""
    return (
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    )


FAMILIES: tuple[str, ...] = (
    "ingress.upload",
    "ingress.keys",
    "ingress.report",
    "legal.in.reading",
    "legal.in.close",
    "legal.keys",
    "legal.results",
    "egress.results",
    "egress.readings",
    "services.export",
    "software.identify",
    "software.switch",
)
"""Subject prefixes followed by an identifier (a gateway, meter, customer, component)."""


def subject_family(subject: str) -> str:
    """The subject with its identifiers replaced by wildcards, as metrics count it:
    ``legal.in.reading.m-0001`` -> ``legal.in.reading.*``, ``egress.results.m.p`` ->
    ``egress.results.>``. Service names (``legal.log.storage``) stay: there are few."""
    for family in FAMILIES:
        if subject.startswith(family + "."):
            rest = subject[len(family) + 1 :]
            return f"{family}.{'*' if '.' not in rest else '>'}"
    if subject.startswith("legal.log.") or subject.count(".") <= 1:
        return subject
    first, second, _ = subject.split(".", 2)
    return f"{first}.{second}.>"


IDENTIFY = "software.identify"
"""Request subject prefix: ``software.identify.<component>`` answers with the component's
signed software identification (see :mod:`metrocloud.cloud.runtime`)."""


SWITCH = "software.switch"
"""Request subject prefix: ``software.switch.<service>`` tells a service to finish the
messages it holds and start again on the code its install-root pointers name (only the
download manager may publish it)."""

TARIFF_PREFIX = "tariff-"


def identify_subject(component: str) -> str:
    """``software.identify.<component>``; a tariff program ``tariff-<name>`` answers on
    ``software.identify.tariff.<name>`` so that legal subscribes to them all at once."""
    if component.startswith(TARIFF_PREFIX):
        return f"{IDENTIFY}.tariff.{component.removeprefix(TARIFF_PREFIX)}"
    return f"{IDENTIFY}.{component}"


def switch_subject(service: str) -> str:
    return f"{SWITCH}.{service}"


def _identifies(component: str, *, updatable: bool = True) -> dict[str, Any]:
    """What a legally relevant service needs to answer identification (and, if the download
    manager updates it, switch) requests."""
    subjects: tuple[str, ...] = (identify_subject(component),)
    if updatable:
        subjects += (switch_subject(component),)
    return {"subscribe": subjects, "allow_responses": True}


@dataclass(frozen=True)
class Role:
    """A broker user: what it may publish and subscribe."""

    name: str
    zone: Literal[
        "field", "ingress", "legal", "services", "egress", "receiver", "authority", "admin"
    ]
    publish: tuple[str, ...]
    subscribe: tuple[str, ...] = ()
    allow_responses: bool = False
    extra_subscribe: tuple[str, ...] = field(default=())

    def subscribe_all(self) -> tuple[str, ...]:
        return (*self.subscribe, f"{inbox_prefix(self.name)}.>", *self.extra_subscribe)


ROLES: dict[str, Role] = {
    r.name: r
    for r in (
        Role("admin", "admin", publish=(">",), subscribe=(">",)),
        Role("gateway", "field", publish=("ingress.upload.>",)),
        Role(
            "receiver",
            "receiver",
            publish=("ingress.keys.>", "ingress.report.>", *DISPLAY_REQUESTS),
        ),
        Role(
            "communication",
            "ingress",
            publish=(
                "legal.in.>",
                "legal.keys.>",
                "legal.log.communication",
                *_consume("INGRESS", "communication"),
            ),
            **_identifies("communication"),
        ),
        Role(
            "legal",
            "legal",
            publish=("legal.results.>", "legal.log.legal", *_consume("LEGAL", "legal")),
            extra_subscribe=(f"{IDENTIFY}.tariff.*",),  # its tariff programs answer, too
            **_identifies("legal"),
        ),
        Role(
            "storage",
            "legal",
            publish=(
                "egress.results.>",
                "egress.readings.>",
                "services.export.>",
                "legal.log.storage",
                *_consume("LEGAL", "storage-readings"),
                *_consume("LEGAL", "storage-keys"),
                *_consume("LEGAL", "storage-results"),
            ),
            **_identifies("storage"),
        ),
        Role("logbook", "legal", publish=_consume("LOGBOOK", "logbook"), **_identifies("logbook")),
        Role("pki", "legal", publish=("legal.log.pki",)),
        Role(
            "display",
            "egress",
            publish=(
                "$JS.API.DIRECT.GET.EGRESS.>",
                "$JS.API.DIRECT.GET.EGRESS",
                "$JS.API.STREAM.INFO.EGRESS",  # which periods of a meter have results
                "legal.log.display",
            ),
            subscribe=(
                *DISPLAY_REQUESTS,
                identify_subject("display"),
                switch_subject("display"),
            ),
            allow_responses=True,
        ),
        # The download manager installs updates and tells services to switch to them.
        Role(
            "download",
            "legal",
            publish=(
                "legal.log.download",
                switch_subject("*"),
                identify_subject("*"),
                f"{IDENTIFY}.tariff.*",
            ),
            **_identifies("download", updatable=False),
        ),
        # The authority's verification monitor asks components for their identification.
        # It logs each badge that changes (verification-failure / -success).
        Role(
            "monitor",
            "authority",
            publish=(identify_subject("*"), f"{IDENTIFY}.tariff.*", "legal.log.monitor"),
        ),
        # Anomaly detection reads every consumer's progress (read-only) and logs states.
        Role(
            "anomaly",
            "legal",
            publish=("legal.log.anomaly", "$JS.API.CONSUMER.INFO.*.*"),
            **_identifies("anomaly", updatable=False),
        ),
        Role("thirdparty", "services", publish=("services.>",), subscribe=("services.>",)),
    )
}

SERVICE_ROLES: tuple[str, ...] = (
    "pki",
    "communication",
    "legal",
    "storage",
    "logbook",
    "display",
    "download",
    "anomaly",
)

ANOMALY = "anomaly"
"""The anomaly detection service: it watches the others, so it starts after them."""
