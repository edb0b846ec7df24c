"""Who may read which view of the logbook: signed read requests, one view per role.

Entries say who did what to which meter, so reading them takes a certificate from the PKI.
A reader signs each request: the header ``Metrocloud-Request`` carries a base64
:class:`~metrocloud.core.messages.Envelope` whose body is a
:class:`~metrocloud.core.messages.LogRead` naming the request target (method, path and the
query sorted by key, see :func:`request_target`) and the time it was sent. The logbook
checks the certificate against the PKI (chain, role, CRLs), the signature, the target and the
freshness (:data:`~metrocloud.core.messages.MAX_CLOCK_SKEW`), then grants a view:

- **authority** (market surveillance): any audience, every entry;
- **gateway administrator**: the gateway administrator's view;
- **receiver** (a customer): the consumer's view, narrowed to entries about the customer
  and the customer's meters;
- anyone else: nothing (``not-authorized``).

A read changes nothing, so a replayed request within the freshness window only shows its
signer again what the signer was allowed to see; reads keep no replay memory.
Proofs, roots and heads are hashes and stay public.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlencode

from metrocloud.core.errors import Rejected
from metrocloud.core.messages import Envelope, LogRead, Signer, check_fresh, seal
from metrocloud.pki.roles import Role
from metrocloud.pki.validate import (
    TrustStore,
    certificate_role,
    subject_common_name,
    verify_signature,
)

HEADER = "Metrocloud-Request"
MAX_HEADER_CHARS = 8 * 1024

CustomerSubjects = Callable[[str], Collection[str]]
"""The subjects (the customer's name, its meter ids) in the view of customer ``name``."""


def request_target(method: str, path: str, query: Mapping[str, object]) -> str:
    """``GET /entries?audience=consumer&start=0``: what a read request signs, canonical."""
    items = sorted((k, str(v)) for k, v in query.items() if v is not None)
    return f"{method.upper()} {path}" + (f"?{urlencode(items)}" if items else "")


def sign_read(signer: Signer, target: str, now: datetime | None = None) -> str:
    """The ``Metrocloud-Request`` header value for ``target``, signed by ``signer``."""
    sent = (datetime.now(timezone.utc) if now is None else now).isoformat()
    return base64.b64encode(seal(signer, LogRead(target=target, sent_at=sent))).decode()


@dataclass(frozen=True)
class View:
    """What a reader may see: an audience, and the subjects it is narrowed to (None: all)."""

    reader: str
    role: Role
    audience: str
    subjects: frozenset[str] | None


class ReaderPolicy:
    """Authenticates read requests against ``trust`` and grants each reader its view."""

    def __init__(self, trust: TrustStore, customer_subjects: CustomerSubjects) -> None:
        self.trust = trust
        self.customer_subjects = customer_subjects

    def view(
        self,
        header: str | None,
        target: str,
        requested_audience: str | None,
        now: datetime | None = None,
    ) -> View:
        """The view granted to the signer of ``header`` for ``target``.

        Raises ``Rejected``: ``not-authenticated`` (no or unreadable header), the PKI's
        reason for a refused certificate, ``bad-signature``, ``wrong-target``,
        ``stale-message``, ``not-authorized`` (a role without a view, or an audience the
        role may not read).
        """
        if not header:
            raise Rejected("not-authenticated", f"reading entries needs a signed {HEADER} header")
        if len(header) > MAX_HEADER_CHARS:
            raise Rejected("not-authenticated", f"{HEADER} is longer than {MAX_HEADER_CHARS}")
        try:
            raw = base64.b64decode(header, validate=True)
        except (binascii.Error, ValueError):
            raise Rejected("not-authenticated", f"{HEADER} is not base64") from None
        envelope = Envelope.decode(raw)
        reader = self.trust.verify(envelope.certificate)
        verify_signature(reader, envelope.body, envelope.signature)
        body = LogRead.decode(envelope.body)
        if body.target != target:
            raise Rejected("wrong-target", f"signed for {body.target!r}, asked {target!r}")
        check_fresh(body.sent_at, datetime.now(timezone.utc) if now is None else now)
        name, role = subject_common_name(reader), certificate_role(reader)
        if role is Role.AUTHORITY:
            return View(name, role, requested_audience or "authority", None)
        own = {Role.GATEWAY_ADMINISTRATOR: "gateway-administrator", Role.RECEIVER: "consumer"}
        if role not in own:
            raise Rejected("not-authorized", f"{name} ({role.value}) may not read the logbook")
        if requested_audience not in (None, own[role]):
            raise Rejected(
                "not-authorized", f"{name} ({role.value}) may read the {own[role]} view only"
            )
        subjects = None
        if role is Role.RECEIVER:
            subjects = frozenset(self.customer_subjects(name))
        return View(name, role, own[role], subjects)
