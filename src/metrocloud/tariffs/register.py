"""Register programs (TAF 1 and TAF 2): the register of every quarter hour is public.

Which register a quarter hour's energy goes to follows from its time alone (TAF 1: always
the one register; TAF 2: the switching table of its weekday and time of day). Each
register is then a weighted sum of the period's energies with public 0/1 weights, and the
bill one with the prices as weights. Weighted sums are what a single plaintext
multiplication computes in the coefficient encoding (:mod:`metrocloud.fhe.coefficients`).

Coefficients of a transmission (n = N/2; position j is the quarter hour ``period_start + j``)::

    [0, n - 4)   valid energy of each quarter hour of the billing period, in Wh
    n - 4        energy of this transmission the tariff cannot attribute (error register)
    n - 3        all energy of this transmission (total register)
    n - 2        sum of this transmission's reading indices          (integrity protocol)
    n - 1        sum of the fingerprints of (meter, index)            (integrity protocol)
    [n, N)       zero

Transmissions of one period occupy disjoint positions, so their sum ``S`` holds the whole
period: the error and total registers and both integrity sums sit in its last four
coefficients. The products carry the weighted sums: for weight vectors ``a`` and ``b``,
``q = sum_j a_j x^(n-1-j) + b_j x^(N-1-j)`` gives ``S * q`` the coefficient ``n - 1`` equal
to ``sum a_j S_j`` and ``N - 1`` equal to ``sum b_j S_j`` (both windows of q are aligned
with S's support, nothing wraps into them). So one product yields two registers.

Result: ``[S, S * q_1, ..., S * q_p]`` with p = ceil((R + 1) / 2) for R tariff registers
plus the bill. Cloud work per period: the additions and p plaintext products, no rotation
and no evaluation key; depth 1.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from metrocloud.core.clock import READINGS_PER_DAY
from metrocloud.fhe.coefficients import codec_for
from metrocloud.fhe.context import Ciphertext
from metrocloud.fhe.evaluator import Evaluator
from metrocloud.fhe.packing import Interval, index_fingerprint
from metrocloud.fhe.params import FheParameters
from metrocloud.tariffs.base import (
    RegisterSet,
    TariffConfigError,
    TariffProgram,
    TransmissionContent,
)

#: a register program's choice of register repeats every week (weekday and time of day)
SCHEDULE_PERIOD = 7 * READINGS_PER_DAY
#: encoded weights kept per program: periods mostly start at midnight, on one of 7 weekdays
WEIGHT_CACHE = 16


class CoefficientLayout:
    """Where a register program keeps a billing period in one plaintext polynomial."""

    def __init__(self, params: FheParameters) -> None:
        self.ring = params.ring_dimension
        self.half = self.ring // 2
        self.capacity = self.half - 4
        self.error_at = self.half - 4
        self.total_at = self.half - 3
        self.index_at = self.half - 2
        self.fingerprint_at = self.half - 1

    @property
    def outputs_at(self) -> tuple[int, int]:
        """The two coefficients of a product that carry its weighted sums."""
        return self.half - 1, self.ring - 1

    def pack(self, meter_id: str, intervals: Sequence[Interval], period_start: int) -> list[int]:
        """The coefficients of one transmission (before reduction modulo t)."""
        coefficients = [0] * self.half
        error = total = index_sum = fingerprint_sum = 0
        for iv in intervals:
            position = iv.index - period_start
            if not 0 <= position < self.capacity:
                raise ValueError(
                    f"reading {iv.index} lies outside the {self.capacity} quarter hours a "
                    f"period starting at {period_start} can hold"
                )
            if iv.energy_wh < 0:
                raise ValueError(f"negative energy at index {iv.index}")
            if iv.error:
                error += iv.energy_wh
            else:
                coefficients[position] = iv.energy_wh
            total += iv.energy_wh
            index_sum += iv.index
            fingerprint_sum += index_fingerprint(meter_id, iv.index)
        coefficients[self.error_at] = error
        coefficients[self.total_at] = total
        coefficients[self.index_at] = index_sum
        coefficients[self.fingerprint_at] = fingerprint_sum
        return coefficients

    def weights(self, sums: Sequence[Sequence[int]]) -> list[list[int]]:
        """The product polynomials ``q`` that compute the weighted sums, two per product."""
        out = []
        for pair in range(0, len(sums), 2):
            q = [0] * self.ring
            for window_end, weights in zip(self.outputs_at, sums[pair : pair + 2], strict=False):
                for j, w in enumerate(weights[: self.capacity]):
                    q[window_end - j] = w
            out.append(q)
        return out


class RegisterProgram(TariffProgram):
    """A program whose register choice for each quarter hour is public: TAF 1 and TAF 2."""

    def __init__(self, params: FheParameters, config: dict[str, Any]) -> None:
        self._weights: OrderedDict[int, list[Any]] = OrderedDict()
        self.coefficients = CoefficientLayout(params)
        super().__init__(params, config)

    @abstractmethod
    def prices(self) -> list[int]:
        """Price of each tariff register in milli-cent per kWh."""

    @abstractmethod
    def register_of(self, index: int) -> int:
        """The tariff register of the quarter hour ending at reading ``index``."""

    def register_prices(self) -> list[int]:
        return self.prices()

    def bill(self, tariff_registers_wh: Sequence[int]) -> int:
        prices = self.prices()
        if len(tariff_registers_wh) != len(prices):
            raise ValueError(f"{self.name} has {len(prices)} tariff registers")
        return sum(e * p for e, p in zip(tariff_registers_wh, prices, strict=True))

    def check_prices(self, max_interval_wh: int, intervals_per_period: int) -> None:
        self.check_range(max_interval_wh, intervals_per_period, max(self.prices()))

    def transmission_intervals(self, period_intervals: int) -> int:
        """A whole period per transmission: one ciphertext (and its duplicate) a month."""
        if period_intervals > self.coefficients.capacity:
            raise TariffConfigError(
                f"{self.name}: a period of {period_intervals} quarter hours does not fit the "
                f"{self.coefficients.capacity} of ring dimension {self.params.ring_dimension}"
            )
        return period_intervals

    def rotation_steps(self, block: int) -> set[int]:
        return set()

    # -- gateway -----------------------------------------------------------------------------
    def encode(
        self, meter_id: str, intervals: Sequence[Interval], block: int, period_start: int
    ) -> list[list[int]]:
        coefficients = self.coefficients.pack(meter_id, intervals, period_start)
        t = self.params.plaintext_modulus
        return [codec_for(self.params).to_slots([c % t for c in coefficients])]

    # -- cloud -------------------------------------------------------------------------------
    def sums(self, period_start: int) -> list[list[int]]:
        """Weights per position of the period: one 0/1 vector per register, then prices."""
        owners = [self.register_of(period_start + j) for j in range(self.coefficients.capacity)]
        prices = self.prices()
        per_register = [[int(o == k) for o in owners] for k in range(self.tariff_registers)]
        return [*per_register, [prices[o] for o in owners]]

    def weight_plaintexts(self, cc: Any, period_start: int) -> list[Any]:
        """Encoded product polynomials. They depend only on the period's place in the week
        and on the parameter set (a plaintext serves every context of that set), so c and
        c', every customer and every week with that start share them; the most recently
        used :data:`WEIGHT_CACHE` starts are kept."""
        key = period_start % SCHEDULE_PERIOD
        if key in self._weights:
            self._weights.move_to_end(key)
        else:
            codec = codec_for(self.params)
            polynomials = self.coefficients.weights(self.sums(period_start))
            self._weights[key] = [cc.MakePackedPlaintext(codec.to_slots(q)) for q in polynomials]
            if len(self._weights) > WEIGHT_CACHE:
                self._weights.popitem(last=False)
        return self._weights[key]

    def evaluate(
        self, ev: Evaluator, cts: Sequence[Ciphertext], block: int, first_index: int
    ) -> list[Ciphertext]:
        """Nothing to do per transmission: the products run once on the period's sum."""
        return list(cts)

    def read_out(
        self,
        ev: Evaluator,
        partials: Sequence[Sequence[Ciphertext]],
        block: int,
        period_start: int,
    ) -> list[Ciphertext]:
        period = ev.add_all([ct for partial in partials for ct in partial])
        products = [ev.cc.EvalMult(period, q) for q in self.weight_plaintexts(ev.cc, period_start)]
        return [period, *products]

    # -- receiver ----------------------------------------------------------------------------
    def unpack(
        self,
        meter_id: str,
        decrypted: Sequence[Sequence[int]],
        first_index: int,
        count: int,
        period_start: int,
    ) -> TransmissionContent:
        if len(decrypted) != 1:
            raise ValueError(f"{len(decrypted)} ciphertexts; a {self.name} transmission has 1")
        coefficients = codec_for(self.params).from_slots(decrypted[0])
        layout = self.coefficients
        first = first_index - period_start
        if first < 0 or first + count > layout.capacity:
            raise ValueError(f"readings {first_index}+{count} lie outside the period's layout")
        stray = [
            j
            for j, c in enumerate(coefficients)
            if c and j < layout.capacity and not first <= j < first + count
        ] + [j for j in range(layout.half, self.params.ring_dimension) if coefficients[j]]
        if stray:
            raise ValueError(f"energy outside the transmission's quarter hours (at {stray[0]})")
        return TransmissionContent(
            intervals=tuple(
                Interval(first_index + j, coefficients[first + j]) for j in range(count)
            ),
            error_wh=coefficients[layout.error_at],
            total_wh=coefficients[layout.total_at],
            index_sum=coefficients[layout.index_at],
            fingerprint_sum=coefficients[layout.fingerprint_at],
        )

    def decode(self, decrypted: Sequence[Sequence[int]], block: int) -> RegisterSet:
        expected = 1 + (self.tariff_registers + 2) // 2
        if len(decrypted) != expected:
            raise ValueError(f"{len(decrypted)} result ciphertexts, {self.name} makes {expected}")
        codec = codec_for(self.params)
        period, *products = (codec.from_slots(slots) for slots in decrypted)
        layout = self.coefficients
        sums = [coefficients[at] for coefficients in products for at in layout.outputs_at]
        k = self.tariff_registers
        return RegisterSet(
            tariff_registers_wh=tuple(sums[:k]),
            error_register_wh=period[layout.error_at],
            total_register_wh=period[layout.total_at],
            bill_microcent=sums[k],
            index_sum=period[layout.index_at],
            fingerprint_sum=period[layout.fingerprint_at],
        )

    def reference(self, meter_id: str, intervals: Sequence[Interval]) -> RegisterSet:
        valid = [0] * self.tariff_registers
        for iv in intervals:
            if not iv.error:
                valid[self.register_of(iv.index)] += iv.energy_wh
        return self.register_set(meter_id, intervals, valid)
