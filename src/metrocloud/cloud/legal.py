"""Legal processing: the certified tariff program on encrypted readings, never a plaintext.

Per transmission it evaluates ``c`` and ``c'`` alike and stores the two partial results
under (meter, period, seq): a redelivered transmission finds its partial and is skipped,
so nothing is billed twice. On the period closing it waits until every transmission is in,
reads out ``r`` and ``r'``, signs them with the tariff program's software identification,
and hands them to storage.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import msgpack
from nats.aio.msg import Msg

from metrocloud.cloud.runtime import Service
from metrocloud.core.clock import now_iso
from metrocloud.core.errors import ConfigurationError, Rejected
from metrocloud.core.events import EventKind
from metrocloud.core.messages import (
    Envelope,
    KeyRegistration,
    PeriodClose,
    TariffResult,
    Transmission,
    seal,
)
from metrocloud.core.software import SoftwareId
from metrocloud.fhe.context import (
    Ciphertext,
    deserialize_ciphertext,
    deserialize_context,
    serialize,
)
from metrocloud.fhe.evaluator import Evaluator
from metrocloud.fhe.keycache import EvaluationKeyCache
from metrocloud.fhe.params import FheParameters
from metrocloud.tariffs import PROGRAMS, TariffProgram, load_program

_log = logging.getLogger(__name__)

RETRY_DELAY_S = 1.0
KEY_CACHE_MB = 2048
"""Budget of installed evaluation keys per worker unless option ``key_cache_mb`` says: about
22 customers of a comparison tariff (90 MB each); register tariffs need no keys."""


class CustomerKeys:
    """Evaluation context of one customer: parameters, key tag, an evaluator."""

    def __init__(self, params: FheParameters, key_tag: str, context: Any) -> None:
        self.params = params
        self.key_tag = key_tag
        self.evaluator = Evaluator(context, params.slots)

    def load(self, blob: bytes) -> Ciphertext:
        return deserialize_ciphertext(blob, self.params, self.key_tag)

    def load_all(self, blobs: list[bytes]) -> list[Ciphertext]:
        return [self.load(b) for b in blobs]

    def unpack(self, packed: bytes) -> list[Ciphertext]:
        """A stored partial (several ciphertexts) back into ciphertexts."""
        return self.load_all(msgpack.unpackb(packed))


def key_cache_mb(options: dict[str, str]) -> int:
    """The ``key_cache_mb`` option: a positive whole number of MiB."""
    raw = options.get("key_cache_mb", str(KEY_CACHE_MB))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigurationError(
            f"legal: option key_cache_mb must be a positive whole number of MiB, got {raw!r}"
        )
    return value


def pack_ciphertexts(cts: list[Ciphertext]) -> bytes:
    return msgpack.packb([serialize(c) for c in cts], use_bin_type=True)


class Legal(Service):
    name = "legal"
    role = "legal"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keys: EvaluationKeyCache[CustomerKeys] = EvaluationKeyCache(
            key_cache_mb(self.options) * 1024 * 1024
        )
        self._programs: dict[tuple[str, str, str], TariffProgram] = {}

    @classmethod
    def check_options(cls, options: dict[str, str]) -> None:
        key_cache_mb(options)

    @property
    def worker(self) -> str:
        """This process among the competing legal workers (``legal-2``; ``legal`` alone)."""
        return self.options.get("name", self.name)

    async def serve(self) -> None:
        await self.consume("legal", self.handle, batch=1)

    def customer_keys(self, customer: str, key_tag: str | None = None) -> CustomerKeys | None:
        """The customer's evaluation context, once storage holds every key part; loaded anew
        when a transmission names another key (the customer registered new keys), or when
        the customer's keys were evicted to keep within ``key_cache_mb``."""
        cached = self._keys.get(customer, key_tag)
        if cached is not None:
            return cached
        stored = self.store.key_registration(customer)
        if not stored:
            return None
        parts = [KeyRegistration.decode(Envelope.decode(raw).body) for raw in stored]
        if len(parts) < parts[0].parts or key_tag not in (None, parts[0].key_tag):
            return None  # the rest, or the newer registration, is on its way
        first = parts[0]
        params = FheParameters.from_dict(first.parameters)
        context = deserialize_context(first.context)
        keys = CustomerKeys(params, first.key_tag, context)
        evicted = self._keys.install(
            customer, first.key_tag, b"".join(p.evaluation_keys for p in parts), context, keys
        )
        if evicted:
            _log.info(
                "evaluation keys of %d customer(s) dropped for %s's: key_cache_mb is %d",
                len(evicted),
                customer,
                self._keys.budget_bytes // (1024 * 1024),
            )
        self.metrics.evaluation_keys(self._keys.held_bytes, len(evicted))
        return keys

    def program(self, meter_id: str, params: FheParameters) -> TariffProgram:
        meter = self.store.meter(meter_id)
        if meter is None:
            raise Rejected("unknown-meter", meter_id)
        required = PROGRAMS[meter.tariff].parameters if meter.tariff in PROGRAMS else params
        if params != required:
            raise Rejected(
                "wrong-crypto-context",
                f"tariff {meter.tariff} is exact on {required.parameters_id}; the customer's "
                f"keys are for {params.parameters_id}",
            )
        key = (
            meter.tariff,
            json.dumps(meter.tariff_config, sort_keys=True),
            required.parameters_id,
        )
        if key not in self._programs:  # one instance per configuration: it caches its masks
            self._programs[key] = self.load_program(meter.tariff, params, meter.tariff_config)
        return self._programs[key]

    def load_program(
        self, tariff: str, params: FheParameters, config: dict[str, Any]
    ) -> TariffProgram:
        """The tariff program ``tariff`` with ``config`` (loaded once per configuration)."""
        return load_program(tariff, params, config)

    def result_bytes(
        self, meter_id: str, r: list[Ciphertext], r_dup: list[Ciphertext]
    ) -> tuple[list[bytes], list[bytes]]:
        """Both copies of a meter's result ciphertexts, serialized for the result."""
        return [serialize(c) for c in r], [serialize(c) for c in r_dup]

    async def handle(self, msg: Msg) -> None:
        env = Envelope.decode(msg.data)
        if msg.subject.startswith("legal.in.reading."):
            await self.process(msg, Transmission.decode(env.body))
        else:
            await self.read_out(msg, PeriodClose.decode(env.body))

    async def process(self, msg: Msg, tx: Transmission) -> None:
        if self.store.has_partial(tx.meter, tx.period_id, tx.seq):
            await self.log(
                EventKind.DUPLICATE,
                tx.meter,
                {"period": tx.period_id, "seq": tx.seq, "note": "already processed, skipped"},
            )
            await msg.ack()
            return
        keys = self.customer_keys(tx.customer, tx.key_tag)
        if keys is None:  # the key registration is still on its way to storage
            await msg.nak(delay=RETRY_DELAY_S)
            return
        program = self.program(tx.meter, keys.params)
        ev = keys.evaluator
        with self.metrics.step(f"tariff-{program.name}:evaluate"):
            partial = program.evaluate(ev, keys.load_all(tx.c), tx.block, tx.first_index)
            await msg.in_progress()
            partial_dup = program.evaluate(ev, keys.load_all(tx.c_dup), tx.block, tx.first_index)
        # Logged before it is stored: a crash in between redoes the work and logs the same
        # event id again (appending is idempotent), where the other order could lose it.
        await self.log(
            EventKind.PROCESSING,
            tx.meter,
            {
                "step": "evaluate",
                "period": tx.period_id,
                "seq": tx.seq,
                "tariff": program.name,
                "worker": self.worker,
            },
            event_id=f"evaluate-{tx.meter}-{tx.period_id}-{tx.seq}",
        )
        self.store.insert_partial(
            tx.meter, tx.period_id, tx.seq, pack_ciphertexts(partial), pack_ciphertexts(partial_dup)
        )
        await msg.ack()

    async def read_out(self, msg: Msg, close: PeriodClose) -> None:
        if self.store.result_computed(close.meter, close.period_id):
            await msg.ack()
            return
        keys = self.customer_keys(close.customer)
        done = self.store.partial_count(close.meter, close.period_id)
        if keys is None or done < close.transmissions:
            await msg.nak(delay=RETRY_DELAY_S)  # transmissions still in flight
            return
        partials = self.store.partials(close.meter, close.period_id)
        program = self.program(close.meter, keys.params)
        ev = keys.evaluator
        start = close.period_start
        with self.metrics.step(f"tariff-{program.name}:read-out"):
            r = program.read_out(ev, [keys.unpack(p) for _, p, _ in partials], close.block, start)
            await msg.in_progress()
            r_dup = program.read_out(
                ev, [keys.unpack(p) for _, _, p in partials], close.block, start
            )
            r, r_dup = ev.for_decryption(r), ev.for_decryption(r_dup)
        r_bytes, r_dup_bytes = self.result_bytes(close.meter, r, r_dup)
        # The identification shown for the program as this process loaded it, not as the
        # file on disk reads now.
        loaded = self.components[f"tariff-{program.name}"].identification
        tariff = SoftwareId(program.name, loaded.version, loaded.checksum).to_dict()
        result = TariffResult(
            meter=close.meter,
            customer=close.customer,
            period_start=close.period_start,
            period_end=close.period_end,
            transmissions=close.transmissions,
            tariff=tariff,
            tariff_config_digest=program.config_digest,
            registers=program.tariff_registers,
            block=close.block,
            parameters_id=keys.params.parameters_id,
            r=r_bytes,
            r_dup=r_dup_bytes,
            computed_at=now_iso(),
        )
        sealed = seal(self.identity, result)
        await self.publish(
            f"legal.results.{close.meter}", sealed, f"result-{close.meter}-{close.period_id}"
        )
        await self.log(  # before marking it done, for the reason given in process()
            EventKind.PROCESSING,
            close.meter,
            {
                "step": "read-out",
                "period": close.period_id,
                "transmissions": close.transmissions,
                "tariff": tariff,
                "worker": self.worker,
            },
            event_id=f"readout-{close.meter}-{close.period_id}",
        )
        self.store.mark_result_computed(
            close.meter, close.period_id, hashlib.sha256(sealed).digest()
        )
        self.store.drop_partials(close.meter, close.period_id)
        await msg.ack()
