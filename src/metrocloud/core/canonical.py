"""Canonical JSON for signed documents (the authority's reference list, update metadata).

A signed JSON document has exactly one encoding: UTF-8, keys sorted, no whitespace, no
floats, no duplicate keys. A reader parses strictly (:func:`strict_loads`), rebuilds the
document and compares the bytes with :func:`canonical`, so two encodings of one document
never both verify.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

MAX_TEXT = 256
"""Longest free-text field (name, version, component, ...), in characters."""


def canonical(value: object) -> bytes:
    """The one encoding of ``value``: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} appears twice")
        result[key] = value
    return result


def _no_float(text: str) -> Any:
    raise ValueError(f"number {text} is not an integer")


def strict_loads(body: bytes) -> Any:
    """Parse UTF-8 JSON with integers only and no key twice; ``ValueError`` otherwise."""
    try:
        text = body.decode("utf-8")
        return json.loads(
            text,
            object_pairs_hook=_no_duplicate_keys,
            parse_float=_no_float,
            parse_constant=_no_float,
        )
    except RecursionError:
        raise ValueError("nested too deeply") from None


def exact_keys(
    data: object, keys: frozenset[str], what: str, error: Callable[[str], Exception]
) -> dict[str, Any]:
    """``data`` as a dict with exactly ``keys``; ``error(sentence)`` is raised otherwise."""
    if not isinstance(data, dict):
        raise error(f"{what} is not a JSON object")
    missing, extra = keys - set(data), set(data) - keys
    if missing:
        raise error(f"{what} lacks {sorted(missing)}")
    if extra:
        raise error(f"{what} has unknown keys {sorted(extra)}")
    return data


def check_text(value: object, what: str, *, longest: int = MAX_TEXT) -> None:
    """A printable string of 1 to ``longest`` characters without outer spaces."""
    if type(value) is not str:
        raise ValueError(f"{what} must be a string, not {type(value).__name__}")
    if not value or len(value) > longest:
        raise ValueError(f"{what} must have 1 to {longest} characters")
    if not value.isprintable() or value != value.strip():
        raise ValueError(f"{what} {value!r} has control characters or outer spaces")


def check_moment(value: object, what: str, *, date_allowed: bool) -> None:
    """An ISO date-time with an offset (or an ISO date), in the form ``isoformat`` writes."""
    if type(value) is not str:
        raise ValueError(f"{what} must be a string, not {type(value).__name__}")
    if date_allowed:
        try:
            if date.fromisoformat(value).isoformat() == value:
                return
        except ValueError:
            pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not an ISO date-time") from None
    if moment.isoformat() != value:
        raise ValueError(f"{what} {value!r} is not in the form isoformat() writes")
    if moment.utcoffset() is None:
        raise ValueError(f"{what} {value!r} lacks a time zone")
