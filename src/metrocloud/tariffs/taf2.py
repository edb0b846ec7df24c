"""TAF 2: time-dependent tariff with static switching times.

Each quarter hour's energy goes to the tariff register that the switching table names for
its weekday and time of day. The time of every quarter hour is public (its position in the
billing period), so each register is a sum with public 0/1 weights
(:class:`~metrocloud.tariffs.register.RegisterProgram`): one plaintext product per two
registers and period, depth 1, like TAF 1.

Config::

    {"registers": [{"name": "HT", "price_mct_per_kwh": 36000},
                   {"name": "NT", "price_mct_per_kwh": 24000}],
     "windows": [{"days": "mon-fri", "from": "06:00", "to": "22:00", "register": 0},
                 {"days": "sat", "from": "08:00", "to": "13:00", "register": 0}],
     "default_register": 1, "utc_offset_minutes": 60, "max_interval_wh": 5000}
"""

from __future__ import annotations

from metrocloud.tariffs.base import TariffConfigError
from metrocloud.tariffs.register import RegisterProgram
from metrocloud.tariffs.schedule import SwitchingTable, parse_registers
from metrocloud.tariffs.taf1 import MAX_INTERVALS_PER_PERIOD, positive_int

KEYS = {"registers", "windows", "default_register", "utc_offset_minutes", "max_interval_wh"}


class Taf2(RegisterProgram):
    name = "taf2"
    version = "2.0.0"
    code_modules = (
        "metrocloud.tariffs.base",
        "metrocloud.tariffs.register",
        "metrocloud.tariffs.schedule",
        "metrocloud.tariffs.taf2",
        "metrocloud.fhe.evaluator",
        "metrocloud.fhe.coefficients",
    )
    tariff_registers = 0  # set per configuration

    def validate_config(self) -> None:
        unknown = set(self.config) - KEYS
        if unknown:
            raise TariffConfigError(f"taf2: unknown settings {sorted(unknown)}")
        self._prices = parse_registers(self.config.get("registers"))
        self.tariff_registers = len(self._prices)
        default = self.config.get("default_register", 0)
        if not isinstance(default, int) or not 0 <= default < self.tariff_registers:
            raise TariffConfigError(f"taf2: default_register {default!r} is not a register")
        self.config.setdefault("default_register", default)
        self.config.setdefault("utc_offset_minutes", 0)
        self.config.setdefault("max_interval_wh", 5000)
        offset = self.config["utc_offset_minutes"]
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise TariffConfigError("taf2: utc_offset_minutes must be an integer")
        self._table = SwitchingTable.parse(
            self.config.get("windows"), default, self.tariff_registers, offset
        )
        max_wh = positive_int(self.config, "max_interval_wh", self.name)
        self.check_prices(max_wh, MAX_INTERVALS_PER_PERIOD)

    def prices(self) -> list[int]:
        return list(self._prices)

    def register_names(self) -> list[str]:
        return [str(r["name"]) for r in self.config["registers"]]

    def register_of(self, index: int) -> int:
        return self._table.register_of(index)
