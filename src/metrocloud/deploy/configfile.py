"""Writing the processes' configuration files (TOML): the small subset they need."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path


def render_toml(values: Mapping[str, object]) -> str:
    """The small TOML the process configurations need: strings, numbers, string lists and
    one level of tables (a table of strings inline)."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str | Path):
            return json.dumps(str(v))  # a JSON string of printable text is a TOML string
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, Mapping):
            return (
                "{ " + ", ".join(f"{json.dumps(str(k))} = {value(x)}" for k, x in v.items()) + " }"
            )
        raise TypeError(f"no TOML for {type(v).__name__}")

    plain = [f"{k} = {value(v)}" for k, v in values.items() if not isinstance(v, Mapping)]
    tables = [
        f"\n[{k}]\n" + "".join(f"{key} = {value(x)}\n" for key, x in v.items())
        for k, v in values.items()
        if isinstance(v, Mapping)
    ]
    return "\n".join(plain) + "\n" + "".join(tables)
