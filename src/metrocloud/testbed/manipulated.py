"""The manipulated ``legal`` an insider runs in the testbed's scenarios (started through
:mod:`metrocloud.testbed.insider`, which describes the faults)."""

from __future__ import annotations

from typing import Any

from metrocloud.cloud.legal import Legal
from metrocloud.core.errors import ConfigurationError
from metrocloud.fhe.context import Ciphertext
from metrocloud.fhe.params import FheParameters
from metrocloud.tariffs import TariffProgram
from metrocloud.tariffs.register import RegisterProgram
from metrocloud.testbed.insider import FAULT


def flip_bytes(blob: bytes) -> bytes:
    """Invert 16 bytes in the middle of a serialized ciphertext."""
    middle = len(blob) // 2
    return blob[:middle] + bytes(b ^ 0xFF for b in blob[middle : middle + 16]) + blob[middle + 16 :]


class ManipulatedLegal(Legal):
    """:class:`Legal` with the fault of its ``fault`` option."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fault = self.options.get("fault", "")
        if not FAULT.fullmatch(fault):
            raise ConfigurationError(f"no fault {fault!r}: flip-r:<meter> or shift-schedule:<n>")
        kind, _, value = fault.partition(":")
        self._flip_r_of = value if kind == "flip-r" else None
        self._shift = int(value) if kind == "shift-schedule" else 0

    def load_program(
        self, tariff: str, params: FheParameters, config: dict[str, Any]
    ) -> TariffProgram:
        program = super().load_program(tariff, params, config)
        if self._shift and isinstance(program, RegisterProgram):
            honest, shift = program.register_of, self._shift
            setattr(program, "register_of", lambda index: honest(index + shift))  # noqa: B010
        return program

    def result_bytes(
        self, meter_id: str, r: list[Ciphertext], r_dup: list[Ciphertext]
    ) -> tuple[list[bytes], list[bytes]]:
        r_bytes, r_dup_bytes = super().result_bytes(meter_id, r, r_dup)
        if meter_id == self._flip_r_of:
            r_bytes[0] = flip_bytes(r_bytes[0])
        return r_bytes, r_dup_bytes
