"""Reading a settings file (TOML) and saying plainly what is wrong with it.

Shared by a process's configuration (:mod:`metrocloud.cloud.config`) and anomaly
detection's rules (:mod:`metrocloud.detection.rules`). Nothing legally relevant is imported:
the boot step reads a configuration before the install root is active.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from metrocloud.core.errors import ConfigurationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The TOML document in ``path``; :class:`ConfigurationError` (``"<what> <path>: ..."``)
    when it cannot be read or is no TOML."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"{what} {path}: cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{what} {path}: not TOML: {exc}") from None


def problems(exc: ValidationError, prefix: str = "") -> str:
    """Each problem pydantic found, as ``setting: what is wrong``, joined by ``; ``."""
    return "; ".join(
        f"{prefix}{'.'.join(str(p) for p in e['loc']) or '(top)'}: {_message(e)}"
        for e in exc.errors()
    )


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown setting"
    if error["type"] == "missing":
        return "missing"
    return str(error["msg"]).removeprefix("Value error, ")
