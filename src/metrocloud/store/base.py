"""The storage interface of the cloud: SQLite by default, PostgreSQL when distributed.

Every write is idempotent on its natural key, so a message redelivered after a crash
writes nothing new: ``insert_*`` methods return ``False`` when the row already existed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MeterRecord:
    meter_id: str
    gateway_id: str
    customer_id: str
    tariff: str
    tariff_config: dict[str, Any]


@dataclass(frozen=True)
class CustomerKeyRecord:
    customer_id: str
    key_tag: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Flag:
    meter_id: str
    period_id: str
    reason: str
    at: str


class Store(ABC):
    # -- provisioning (operator) ------------------------------------------------------
    @abstractmethod
    def register_gateway(self, gateway_id: str) -> None: ...
    @abstractmethod
    def gateway_known(self, gateway_id: str) -> bool: ...
    @abstractmethod
    def register_meter(self, meter: MeterRecord) -> None: ...
    @abstractmethod
    def meter(self, meter_id: str) -> MeterRecord | None: ...
    @abstractmethod
    def meters(self) -> list[MeterRecord]: ...

    # -- ingress --------------------------------------------------------------------------
    @abstractmethod
    def set_customer_key(self, record: CustomerKeyRecord) -> None: ...
    @abstractmethod
    def customer_key(self, customer_id: str) -> CustomerKeyRecord | None: ...
    @abstractmethod
    def accepted_digest(self, meter_id: str, message_key: str) -> bytes | None:
        """Digest of the message accepted for this key (``reading:<index>``, ``close:<period>``)."""

    @abstractmethod
    def accept(self, meter_id: str, message_key: str, digest: bytes) -> bool: ...
    @abstractmethod
    def add_key_part(self, customer_id: str, key_tag: str, part: int, envelope: bytes) -> bool:
        """Ingress keeps the parts of a key registration until it has them all."""

    @abstractmethod
    def key_parts(self, customer_id: str, key_tag: str) -> list[bytes]: ...
    @abstractmethod
    def add_flag(self, flag: Flag) -> None: ...
    @abstractmethod
    def flags(self) -> list[Flag]: ...

    # -- legal ----------------------------------------------------------------------------
    @abstractmethod
    def insert_partial(
        self, meter_id: str, period_id: str, seq: int, partial: bytes, partial_dup: bytes
    ) -> bool: ...
    @abstractmethod
    def has_partial(self, meter_id: str, period_id: str, seq: int) -> bool: ...
    @abstractmethod
    def partials(self, meter_id: str, period_id: str) -> list[tuple[int, bytes, bytes]]: ...
    @abstractmethod
    def partial_count(self, meter_id: str, period_id: str) -> int:
        """How many partials of the period are kept (without reading them)."""

    @abstractmethod
    def drop_partials(self, meter_id: str, period_id: str) -> None: ...
    @abstractmethod
    def result_computed(self, meter_id: str, period_id: str) -> bool: ...
    @abstractmethod
    def mark_result_computed(self, meter_id: str, period_id: str, digest: bytes) -> bool: ...

    # -- storage (long term) --------------------------------------------------------------
    @abstractmethod
    def insert_key_registration(
        self, customer_id: str, key_tag: str, part: int, envelope: bytes
    ) -> bool: ...
    @abstractmethod
    def key_registration(self, customer_id: str) -> list[bytes]:
        """Every stored part of the customer's latest key registration, in order."""

    @abstractmethod
    def insert_reading(
        self, meter_id: str, period_id: str, seq: int, first_index: int, envelope: bytes
    ) -> bool: ...
    @abstractmethod
    def readings(self, meter_id: str, period_id: str) -> list[bytes]: ...
    @abstractmethod
    def insert_result(self, meter_id: str, period_id: str, envelope: bytes) -> bool: ...
    @abstractmethod
    def result(self, meter_id: str, period_id: str) -> bytes | None: ...
    @abstractmethod
    def close(self) -> None: ...
