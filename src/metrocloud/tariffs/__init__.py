"""Tariff programs (TR-03109-1 use cases), looked up by name."""

from __future__ import annotations

from typing import Any

from metrocloud.fhe.params import FheParameters
from metrocloud.tariffs.base import RegisterSet, TariffConfigError, TariffProgram
from metrocloud.tariffs.comparison import Taf3, Taf4
from metrocloud.tariffs.taf1 import Taf1
from metrocloud.tariffs.taf2 import Taf2

PROGRAMS: dict[str, type[TariffProgram]] = {p.name: p for p in (Taf1, Taf2, Taf3, Taf4)}


def load_program(name: str, params: FheParameters, config: dict[str, Any]) -> TariffProgram:
    try:
        cls = PROGRAMS[name]
    except KeyError:
        raise TariffConfigError(
            f"unknown tariff program {name!r}; known: {', '.join(sorted(PROGRAMS))}"
        ) from None
    return cls(params, config)


__all__ = ["PROGRAMS", "RegisterSet", "TariffConfigError", "TariffProgram", "load_program"]
