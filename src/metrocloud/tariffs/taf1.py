"""TAF 1: one price for all energy of the billing period.

Registers: one tariff register (all valid energy), the error register (energy the gateway
could not attribute to a defined interval), the total register, and the bill. It is the
time-dependent program with a single register (:mod:`metrocloud.tariffs.register`): one
plaintext product per period, no rotation.
"""

from __future__ import annotations

from metrocloud.tariffs.base import TariffConfigError
from metrocloud.tariffs.register import RegisterProgram

MAX_INTERVALS_PER_PERIOD = 31 * 96


def positive_int(config: dict[str, object], key: str, program: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise TariffConfigError(f"{program}: {key} must be a positive integer, got {value!r}")
    return value


class Taf1(RegisterProgram):
    """Config: ``price_mct_per_kwh`` (int, milli-cent per kWh), ``max_interval_wh`` (int)."""

    name = "taf1"
    version = "2.0.0"
    code_modules = (
        "metrocloud.tariffs.base",
        "metrocloud.tariffs.register",
        "metrocloud.tariffs.taf1",
        "metrocloud.fhe.evaluator",
        "metrocloud.fhe.coefficients",
    )
    tariff_registers = 1

    @property
    def price(self) -> int:
        return int(self.config["price_mct_per_kwh"])

    def prices(self) -> list[int]:
        return [self.price]

    def register_of(self, index: int) -> int:
        return 0

    def validate_config(self) -> None:
        unknown = set(self.config) - {"price_mct_per_kwh", "max_interval_wh"}
        if unknown:
            raise TariffConfigError(f"taf1: unknown settings {sorted(unknown)}")
        positive_int(self.config, "price_mct_per_kwh", self.name)
        self.config.setdefault("max_interval_wh", 5000)
        max_wh = positive_int(self.config, "max_interval_wh", self.name)
        self.check_prices(max_wh, MAX_INTERVALS_PER_PERIOD)
