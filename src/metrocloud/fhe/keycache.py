"""Customers' evaluation keys in a cloud process, within a memory budget.

OpenFHE keeps evaluation keys (relinearization, rotations) in process-wide maps indexed by
key tag, and the Python binding can only clear those maps as a whole. A legal worker that
installs every customer's keys and never drops any grows without bound: a comparison tariff
(TAF 3, TAF 4) brings about 90 MB per customer. :class:`EvaluationKeyCache` holds the keys
of the customers used most recently, at most ``budget_bytes`` of serialized keys, and
evicts the least recently used: it keeps a reference to every kept customer's keys, clears
OpenFHE's maps and installs the kept ones again (no copy, no parsing). An evicted
customer's keys are parsed again from storage when the customer comes back (96 ms for
90 MB, ``bench/keycache.py``).

:func:`forget_evaluation_keys` clears the maps in a process that only checks keys (the
ingress inspector), after every check.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import openfhe as ofhe

from metrocloud.fhe.context import load_evaluation_keys

__all__ = ["ENTRY_OVERHEAD_BYTES", "EvaluationKeyCache", "forget_evaluation_keys"]

V = TypeVar("V")

ENTRY_OVERHEAD_BYTES = 64 * 1024
"""What a customer counts for beyond its keys (context handle, evaluator, bookkeeping), so
that customers without evaluation keys (TAF 1, TAF 2) are bounded too."""


def forget_evaluation_keys() -> None:
    """Drop every evaluation key installed in this process."""
    ofhe.ClearEvalMultKeys()
    ofhe.CryptoContext.ClearEvalAutomorphismKeys()


@dataclass
class _Entry(Generic[V]):
    key_tag: str
    cost: int
    context: Any
    automorphism_keys: Any | None
    mult_keys: Any | None
    value: V


class EvaluationKeyCache(Generic[V]):
    """The installed evaluation keys of the customers used last, ``budget_bytes`` at most.

    Each customer has one entry: its key tag, its keys and a value of the caller's (legal
    keeps its evaluator there). The customer installed last is always kept, even when its
    keys alone exceed the budget. This cache must be the only one installing keys in the
    process: an eviction reinstalls only what it holds.
    """

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes <= 0:
            raise ValueError(f"the key budget must be positive, got {budget_bytes}")
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[str, _Entry[V]] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def held_bytes(self) -> int:
        """What the kept customers count for (serialized keys plus overhead)."""
        return sum(e.cost for e in self._entries.values())

    def customers(self) -> list[str]:
        """The kept customers, least recently used first."""
        return list(self._entries)

    def get(self, customer: str, key_tag: str | None = None) -> V | None:
        """The customer's value if its keys are installed (with ``key_tag``, when given);
        the customer counts as used now."""
        entry = self._entries.get(customer)
        if entry is None or key_tag not in (None, entry.key_tag):
            return None
        self._entries.move_to_end(customer)
        return entry.value

    def install(
        self, customer: str, key_tag: str, blob: bytes, context: Any, value: V
    ) -> list[str]:
        """Install the customer's serialized evaluation keys (replacing keys it had under
        another tag), evicting the least recently used customers beyond the budget; the
        evicted customers are returned.

        Raises :class:`~metrocloud.core.errors.Rejected` when ``blob`` cannot be parsed
        (``RuntimeError`` when it holds no keys for ``key_tag``); nothing of it stays
        installed then, and the customers kept so far stay installed.
        """
        cost = len(blob) + ENTRY_OVERHEAD_BYTES
        replaced = [customer] if customer in self._entries else []
        held = self.held_bytes - sum(self._entries[c].cost for c in replaced)
        evicted: list[str] = []
        for other in self._entries:  # least recently used first
            if held + cost <= self.budget_bytes:
                break
            if other != customer:
                evicted.append(other)
                held -= self._entries[other].cost
        if replaced or evicted:
            for gone in (*replaced, *evicted):
                del self._entries[gone]
            self.evictions += len(evicted)
            self._reinstall()
        try:
            rotations, mult = load_evaluation_keys(blob)
            entry = _Entry(
                key_tag,
                cost,
                context,
                context.GetEvalAutomorphismKeyMap(key_tag) if rotations else None,
                context.GetEvalMultKeyVector(key_tag) if mult else None,
                value,
            )
        except Exception:
            self._reinstall()  # nothing half-installed stays behind
            raise
        self._entries[customer] = entry
        return evicted

    def _reinstall(self) -> None:
        """Clear OpenFHE's key maps and install the keys of the kept customers again."""
        forget_evaluation_keys()
        for entry in self._entries.values():
            if entry.automorphism_keys is not None:
                entry.context.InsertEvalAutomorphismKey(entry.automorphism_keys, entry.key_tag)
            if entry.mult_keys is not None:
                entry.context.InsertEvalMultKey(entry.mult_keys, entry.key_tag)
