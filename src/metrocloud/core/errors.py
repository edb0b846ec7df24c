"""Errors that carry a reason a person can act on."""

from __future__ import annotations


class MetrocloudError(Exception):
    """Base class of every error metrocloud raises on purpose."""


class Rejected(MetrocloudError):
    """Input refused with a stable machine-readable ``reason`` and a human ``detail``.

    ``reason`` is a short kebab-case code (``bad-signature``, ``replayed-index``, ...) that
    tests and the logbook match on; ``detail`` says what exactly was wrong.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ConfigurationError(MetrocloudError):
    """A configuration value is missing or out of range."""
