"""Sample data shared by the logbook tests."""

from __future__ import annotations

CERTIFICATE = {
    "serial": "1f",
    "role": "gateway",
    "issuer": "devices",
    "curve": "P-256",
    "not_after": "2027-11-21T12:00:00+00:00",
    "requested_by": "operator",
}
"""The detail a ``certificate-issued`` event must carry (``REQUIRED_DETAIL``)."""
