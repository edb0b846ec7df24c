"""The manipulated ``legal`` an insider runs in the testbed's scenarios (started through
:mod:`metrocloud.testbed.insider`, which describes the faults).

A fault in the tariff program (:func:`manipulate_program`) gives the loaded program a class
of its own: a subclass of its honest class, created at run time, that overrides what the
fault changes. Name, version, code modules, configuration and register count are the
honest program's, so the result names the contract's tariff, configuration digest and
software identification; only the function differs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from metrocloud.cloud.legal import Legal
from metrocloud.core.errors import ConfigurationError
from metrocloud.fhe.coefficients import codec_for
from metrocloud.fhe.context import Ciphertext
from metrocloud.fhe.evaluator import Evaluator
from metrocloud.fhe.params import FheParameters
from metrocloud.tariffs import TariffProgram
from metrocloud.tariffs.comparison import ComparisonProgram
from metrocloud.tariffs.register import RegisterProgram
from metrocloud.testbed.insider import FAULT, FAULT_SYNTAX

_log = logging.getLogger(__name__)

PROGRAM_FAULTS: dict[str, tuple[type[TariffProgram], str]] = {
    "shift-schedule": (RegisterProgram, "register programs (TAF 1, 2)"),
    "price": (TariffProgram, "every program"),
    "add-constant": (RegisterProgram, "register programs (TAF 1, 2)"),
    "skip-reading": (RegisterProgram, "register programs (TAF 1, 2)"),
    "threshold": (ComparisonProgram, "comparison programs (TAF 3, 4)"),
}
"""The faults that change the tariff program: the programs each applies to, in words."""


def flip_bytes(blob: bytes) -> bytes:
    """Invert 16 bytes in the middle of a serialized ciphertext."""
    middle = len(blob) // 2
    return blob[:middle] + bytes(b ^ 0xFF for b in blob[middle : middle + 16]) + blob[middle + 16 :]


def applies_to(program: TariffProgram, fault: str) -> bool:
    """Whether ``fault`` is a program fault for a program of this kind."""
    kind = fault.partition(":")[0]
    return kind in PROGRAM_FAULTS and isinstance(program, PROGRAM_FAULTS[kind][0])


def manipulate_program(program: TariffProgram, fault: str) -> TariffProgram:
    """``program`` (changed in place and returned) billing wrongly as ``fault`` says (see
    :mod:`metrocloud.testbed.insider`). Call it before the program evaluates anything: a
    register program caches its weights. :class:`ConfigurationError` for a string that is no
    program fault and for a fault that does not apply to the program's kind."""
    kind, _, value = fault.partition(":")
    if not FAULT.fullmatch(fault) or kind not in PROGRAM_FAULTS:
        raise ConfigurationError(
            f"no program fault {fault!r}: {FAULT_SYNTAX} (all but flip-r change the program)"
        )
    needs, programs = PROGRAM_FAULTS[kind]
    if not isinstance(program, needs):
        raise ConfigurationError(f"fault {fault!r} applies to {programs}, not to {program.name}")
    n = int(value)
    honest = type(program)
    overrides: dict[str, Any]
    if isinstance(program, RegisterProgram):
        overrides = register_overrides(program, kind, n)
    else:
        assert isinstance(program, ComparisonProgram)
        overrides = comparison_overrides(program, kind, n)
    program.__class__ = type(honest.__name__, (honest,), overrides)
    return program


def scaled(prices: Sequence[int], percent: int) -> list[int]:
    """Prices scaled by ``(100 + percent) / 100``, rounded down."""
    return [p * (100 + percent) // 100 for p in prices]


def register_overrides(program: RegisterProgram, kind: str, n: int) -> dict[str, Any]:
    """What the subclass of a register program (TAF 1, 2) overrides for fault ``kind:n``."""
    honest = type(program)
    if kind == "shift-schedule":

        def register_of(self: RegisterProgram, index: int) -> int:
            return honest.register_of(self, index + n)

        return {"register_of": register_of}
    if kind == "price":
        prices = scaled(program.prices(), n)
        return {"prices": lambda self: list(prices)}
    if kind == "skip-reading":
        if n >= program.coefficients.capacity:
            raise ConfigurationError(
                f"skip-reading:{n}: a period of {program.name} holds "
                f"{program.coefficients.capacity} quarter hours"
            )

        def sums(self: RegisterProgram, period_start: int) -> list[list[int]]:
            weights = honest.sums(self, period_start)
            for w in weights:
                w[n] = 0
            return weights

        return {"sums": sums}
    assert kind == "add-constant"
    added = constant_offsets(program, n)

    def read_out(
        self: RegisterProgram,
        ev: Evaluator,
        partials: Sequence[Sequence[Ciphertext]],
        block: int,
        period_start: int,
    ) -> list[Ciphertext]:
        result = honest.read_out(self, ev, partials, block, period_start)
        codec = codec_for(self.params)
        for at, coefficients in added.items():
            plain = ev.cc.MakePackedPlaintext(codec.to_slots(coefficients))
            result[at] = ev.cc.EvalAdd(result[at], plain)
        return result

    return {"read_out": read_out}


def constant_offsets(program: RegisterProgram, wh: int) -> dict[int, list[int]]:
    """Per result ciphertext, the coefficients that add ``wh`` to tariff register 0 and to
    the total register and its price times ``wh`` to the bill (the layout of
    :mod:`metrocloud.tariffs.register`: ``[S, S*q_1, ...]``; weighted sum ``k``, the
    registers and then the bill, sits in product ``k // 2`` at ``outputs_at[k % 2]``)."""
    layout = program.coefficients
    bill = program.tariff_registers
    added = {
        (0, layout.total_at): wh,
        (1, layout.outputs_at[0]): wh,
        (1 + bill // 2, layout.outputs_at[bill % 2]): program.prices()[0] * wh,
    }
    out: dict[int, list[int]] = {}
    for (ciphertext, at), value in added.items():
        out.setdefault(ciphertext, [0] * layout.ring)[at] += value
    return out


def comparison_overrides(program: ComparisonProgram, kind: str, n: int) -> dict[str, Any]:
    """What the subclass of a comparison program (TAF 3, 4) overrides for fault ``kind:n``:
    properties, which the encrypted evaluation, the bill and the reference all read."""
    if kind == "price":
        prices = scaled(program.prices, n)
        return {"prices": property(lambda self: list(prices))}
    assert kind == "threshold"
    thresholds = [t + n for t in program.thresholds]
    return {"thresholds": property(lambda self: list(thresholds))}


class ManipulatedLegal(Legal):
    """:class:`Legal` with the fault of its ``fault`` option."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fault = self.options.get("fault", "")
        if not FAULT.fullmatch(fault):
            raise ConfigurationError(f"no fault {fault!r}: {FAULT_SYNTAX}")
        self.fault = fault
        kind, _, value = fault.partition(":")
        self._flip_r_of = value if kind == "flip-r" else None

    def load_program(
        self, tariff: str, params: FheParameters, config: dict[str, Any]
    ) -> TariffProgram:
        """The program as certified, changed by a program fault that applies to its kind;
        the others are billed honestly (one ``legal`` serves every meter)."""
        program = super().load_program(tariff, params, config)
        if applies_to(program, self.fault):
            return manipulate_program(program, self.fault)
        if self.fault.partition(":")[0] in PROGRAM_FAULTS:
            _log.warning("fault %s does not apply to %s: billed honestly", self.fault, tariff)
        return program

    def result_bytes(
        self, meter_id: str, r: list[Ciphertext], r_dup: list[Ciphertext]
    ) -> tuple[list[bytes], list[bytes]]:
        r_bytes, r_dup_bytes = super().result_bytes(meter_id, r, r_dup)
        if meter_id == self._flip_r_of:
            r_bytes[0] = flip_bytes(r_bytes[0])
        return r_bytes, r_dup_bytes
