"""The testbed's pipeline: meters, a gateway and receivers driven against a running cloud.

Used by ``metrocloud demo`` and by the scenario tests: provision the operator's records,
let every customer generate and register keys, send a billing period of readings through
ingress, close it, pull every result through the display and verify it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import NoStreamResponseError

from metrocloud.authority.checks import (
    CheckPlan,
    CheckRound,
    TestCustomers,
    TestMeter,
    household_or_business,
    log_round,
    place_test_meters,
)
from metrocloud.bus.connect import connect
from metrocloud.cloud.cluster import Cluster
from metrocloud.core.clock import BillingPeriod
from metrocloud.fhe.context import CustomerKeyPair, Encryptor
from metrocloud.field.channel import ChannelConfig
from metrocloud.field.gateway import Gateway, ReadingSource, block_for
from metrocloud.field.meter import Meter, MeterConfig
from metrocloud.field.network import FieldNetwork, NetworkStats
from metrocloud.field.sensors import Medium, Security, Sensor, SensorConfig
from metrocloud.field.smgw import MeterRecord as GatewayMeter
from metrocloud.field.smgw import SmartMeterGateway
from metrocloud.pki import Role, TrustStore
from metrocloud.receiver.customer import Receiver
from metrocloud.receiver.verify import Verdict
from metrocloud.store import MeterRecord
from metrocloud.tariffs import PROGRAMS, RegisterSet, TariffProgram, load_program
from metrocloud.tariffs.base import TariffConfigError

DEFAULT_TARIFF_CONFIG: dict[str, dict[str, Any]] = {
    "taf1": {"price_mct_per_kwh": 32_000},
    "taf2": {  # a peak / off-peak tariff with cheap weekends, in CET
        "registers": [
            {"name": "peak", "price_mct_per_kwh": 36_000},
            {"name": "off-peak", "price_mct_per_kwh": 26_000},
            {"name": "weekend", "price_mct_per_kwh": 22_000},
        ],
        "windows": [
            {"days": "mon-fri", "from": "06:00", "to": "22:00", "register": 0},
            {"days": "sat,sun", "from": "00:00", "to": "24:00", "register": 2},
        ],
        "default_register": 1,
        "utc_offset_minutes": 60,
    },
    "taf3": {  # load-dependent: up to 1 kW, up to 4 kW, above (energy per quarter hour)
        "thresholds_wh": [250, 1000],
        "prices_mct_per_kwh": [28_000, 34_000, 45_000],
    },
    "taf4": {  # consumption-dependent: the first 150 kWh cheap, up to 300 kWh, then dear
        "budgets_wh": [150_000, 300_000],
        "prices_mct_per_kwh": [26_000, 32_000, 40_000],
    },
}


@dataclass(frozen=True)
class PipelineConfig:
    meters: int = 5
    days: int = 30
    tariff: str = "taf1"
    tariff_config: dict[str, Any] = field(default_factory=dict)
    seed: int = 2026
    first_day: datetime = datetime(2026, 1, 1, tzinfo=timezone.utc)
    error_probability: float = 0.002
    #: quarter hours per transmission; None: the tariff program's choice (a whole period)
    readings_per_transmission: int | None = None
    #: whether the readings travel as wireless M-Bus telegrams (AES-128 mode 5) through a
    #: simulated radio channel to a smart meter gateway, instead of being read directly
    radio: bool = False
    #: the radio channel's impairments (with ``radio``); None: an ideal channel
    channel: ChannelConfig | None = None
    #: with ``radio``: what the meters measure, taken in turn (meter 1 the first medium...)
    media: tuple[Medium, ...] = (Medium.ELECTRICITY,)
    #: the authority's test meters among the gateway's meters (at secret positions), on
    #: the same tariff, whose results it checks against secret test vectors
    test_meters: int = 0
    #: the chance that the authority checks a given period (drawn from its secret)
    check_probability: float = 1.0

    def __post_init__(self) -> None:
        if self.meters < 1:
            raise ValueError("--meters must be at least 1")
        if self.test_meters < 0:
            raise ValueError("--test-meters must not be negative")
        if self.test_meters and self.channel not in (None, ChannelConfig()):
            raise ValueError(
                "test meters need an ideal radio channel: a telegram lost on the air moves "
                "energy to the error register, which no test vector can foresee"
            )
        if not 1 <= self.days <= 31:
            raise ValueError("--days must be between 1 and 31 (one billing month at most)")
        if not self.media:
            raise ValueError("--media needs at least one medium")
        if self.media != (Medium.ELECTRICITY,) and not self.radio:
            raise ValueError("meters of other media than electricity need --radio")
        for medium in self.media:
            self.program(medium)  # a medium the tariff cannot take is refused here

    def medium(self, n: int) -> Medium:
        """What meter ``n`` (from 1) measures."""
        return self.media[(n - 1) % len(self.media)]

    @property
    def period(self) -> BillingPeriod:
        return BillingPeriod.days(self.first_day, self.days)

    def program(self, medium: Medium = Medium.ELECTRICITY) -> TariffProgram:
        """The contract's tariff on the parameter set it is tested on, for a meter of
        ``medium``: the largest quarter hour the tariff takes is the medium's (prices read
        per thousand of the register's unit: per kWh, or per m³ for gas and water)."""
        config = dict(self.tariff_config or DEFAULT_TARIFF_CONFIG.get(self.tariff, {}))
        if self.tariff not in PROGRAMS:
            raise ValueError(
                f"unknown tariff program {self.tariff!r}; known: {', '.join(PROGRAMS)}"
            )
        if medium is not Medium.ELECTRICITY:
            config.setdefault("max_interval_wh", medium.max_interval)
        try:
            return load_program(self.tariff, PROGRAMS[self.tariff].parameters, config)
        except TariffConfigError as exc:
            raise ValueError(f"{medium.value} meters on {self.tariff}: {exc}") from None


KeysFromDisplay = Callable[[str, str, TariffProgram], CustomerKeyPair | None]

SEND_TIMEOUT_S = 120.0


async def publish_until_stored(
    js: JetStreamContext, subject: str, raw: bytes, timeout_s: float = SEND_TIMEOUT_S
) -> None:
    """Publish until the stream acknowledges, as a gateway does: while a broker node is
    down or the stream elects a new leader there is no answer for a while. The message's
    digest is its id, so the stream stores it once however often it is sent."""
    msg_id = hashlib.sha256(raw).hexdigest()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await js.publish(subject, raw, headers={"Nats-Msg-Id": msg_id})
            return
        except (NoStreamResponseError, NatsTimeoutError, asyncio.TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)


@dataclass(frozen=True)
class MeterOutcome:
    meter_id: str
    customer_id: str
    reference: RegisterSet
    verdict: Verdict

    @property
    def bill_matches(self) -> bool:
        return self.verdict.registers == self.reference

    @property
    def ok(self) -> bool:
        return self.verdict.verified and self.bill_matches


@dataclass
class Pipeline:
    cluster: Cluster
    config: PipelineConfig
    gateway_id: str = "gw-0001"
    bytes_sent: int = 0
    messages_sent: int = 0
    receivers: dict[str, Receiver] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)  # meter -> customer
    gateway: Gateway | None = None
    program: TariffProgram | None = None
    """The contract's tariff for electricity meters (the testbed's default medium)."""
    contracts: dict[str, TariffProgram] = field(default_factory=dict)
    """Each meter's tariff as contracted (per medium, see :meth:`PipelineConfig.program`)."""
    media_of: dict[str, Medium] = field(default_factory=dict)
    network: FieldNetwork | None = None
    """With ``config.radio``: the meters, the radio channel and the smart meter gateway."""
    authority: TestCustomers | None = None
    """With ``config.test_meters``: the authority's test customers, their keys and results."""
    trust: TrustStore | None = None
    """The trust store receivers check results with (set by :meth:`provision`)."""
    display_keys: KeysFromDisplay | None = None
    """Customers whose own secure display makes their keys (and registers them): called
    with (customer, meter, contract) during :meth:`provision`; None for a customer whose
    keys the testbed makes."""
    keys_of_displays: set[str] = field(default_factory=set)
    """Customers whose keys came from their display (:meth:`register_keys` skips them)."""

    @property
    def meter_ids(self) -> list[str]:
        """Every meter behind the gateway, test meters included, in the order they send."""
        return list(self.owner)

    @property
    def customer_meter_ids(self) -> list[str]:
        """The meters of ordinary customers (whose outcomes :meth:`collect` returns)."""
        test = set(self.authority.plan.meter_ids) if self.authority else set()
        return [m for m in self.owner if m not in test]

    def provision(self) -> None:
        """What the operator and the PKI do before the first reading: records and certificates."""
        cfg = self.config
        programs = {medium: cfg.program(medium) for medium in dict.fromkeys(cfg.media)}
        self.program = programs.get(Medium.ELECTRICITY) or cfg.program()
        pki = self.cluster.data.open_pki()
        ids = self.cluster.data.identities_store(pki)
        store = self.cluster.data.open_store()
        gateway = self.gateway = Gateway(
            self.gateway_id,
            ids.identity(self.gateway_id, Role.GATEWAY),
            readings_per_transmission=cfg.readings_per_transmission,
        )
        period = cfg.period
        block = block_for(self.program.transmission_intervals(period.intervals))
        smgw = SmartMeterGateway(
            self.gateway_id, folder=self.cluster.data.root / "gateways" / self.gateway_id
        )
        sensors: list[Sensor] = []
        total = cfg.meters + cfg.test_meters
        positions = place_test_meters(total, cfg.test_meters)
        plan = CheckPlan.generate(
            [TestMeter.like(self.model(n), f"c-{n:04d}") for n in positions],
            check_probability=cfg.check_probability,
        )
        authority = self.authority = TestCustomers(plan) if positions else None
        self.trust = ids.trust
        try:
            store.register_gateway(self.gateway_id)
            for n in range(1, total + 1):
                meter_id, customer_id = f"m-{n:04d}", f"c-{n:04d}"
                program = programs[cfg.medium(n)] if cfg.radio else self.program
                sensor = None
                own = authority is not None and n in positions  # one of the authority's
                if cfg.radio:
                    sensor = self.sensor(n)
                    if own:
                        sensor = Sensor(replace(sensor.config, seed=plan.seed(sensor.meter_id)))
                    meter_id = sensor.meter_id
                    sensors.append(sensor)
                    smgw.configure_meter(
                        GatewayMeter(
                            meter_id, sensor.config.medium, customer_id, Security.AES, sensor.key
                        )
                    )
                store.register_meter(
                    MeterRecord(
                        meter_id, self.gateway_id, customer_id, program.name, program.config
                    )
                )
                made = self.display_keys and self.display_keys(customer_id, meter_id, program)
                if made:
                    self.keys_of_displays.add(customer_id)
                keys = made or CustomerKeyPair.for_program(program, block)
                receiver = Receiver(
                    customer_id, ids.identity(customer_id, Role.RECEIVER), keys, ids.trust
                )
                self.receivers[customer_id] = receiver
                self.owner[meter_id] = customer_id
                self.contracts[meter_id] = program
                self.media_of[meter_id] = cfg.medium(n) if cfg.radio else Medium.ELECTRICITY
                source: ReadingSource = (
                    smgw.source(meter_id)
                    if sensor is not None
                    else Meter(plan.meter_config(meter_id) if own else self.meter_config(n))
                )
                if authority is not None and own:
                    authority.keys[customer_id] = keys
                    authority.contracts[meter_id] = program
                encryptor = Encryptor(program.params, keys.context, keys.public_key)
                gateway.attach(source, customer_id, encryptor, program)
        finally:
            store.close()
            pki.close()
        if cfg.radio:
            origin = period.start - 1  # the reading before the period's first quarter hour
            self.network = FieldNetwork(
                smgw, sensors, origin=origin, channel=cfg.channel, seed=cfg.seed
            )

    def model(self, n: int) -> MeterConfig:
        """The simulation of meter ``n``: read directly, or on the radio."""
        return self.sensor(n).meter.config if self.config.radio else self.meter_config(n)

    def meter_config(self, n: int) -> MeterConfig:
        """Meter ``n``'s simulation (household, every fourth a business)."""
        cfg = self.config
        return MeterConfig(
            f"m-{n:04d}",
            seed=cfg.seed + n,
            error_probability=cfg.error_probability,
            profile=household_or_business(n),
        )

    def sensor(self, n: int) -> Sensor:
        """Meter ``n`` as an electricity meter on the radio, with its own AES key."""
        cfg = self.config
        key = hashlib.blake2b(f"testbed-key|{cfg.seed}|{n}".encode(), digest_size=16).digest()
        return Sensor(SensorConfig(f"{n:08d}", cfg.medium(n), seed=cfg.seed + n, key=key))

    def measure(self) -> NetworkStats | None:
        """With ``config.radio``: the meters send the period's readings (and the one before
        it) through the channel to the gateway. Without: nothing to do (None)."""
        if self.network is None:
            return None
        period = self.config.period
        origin = period.start - 1
        return self.network.run(origin, period.end - origin)

    async def connect(self, role: str) -> Client:
        """A bus connection as ``role``, with that role's TLS client certificate."""
        return await connect(
            self.cluster.bus_url,
            self.cluster.data.credentials(role),
            name=f"testbed-{role}",
            role=role,
        )

    async def register_keys(self) -> None:
        nc = await self.connect("receiver")
        try:
            for customer_id, receiver in self.receivers.items():
                if customer_id not in self.keys_of_displays:  # a display registers its own
                    await receiver.register(nc)
        finally:
            await nc.drain()

    async def send(
        self, messages: list[bytes], progress: Callable[[int], None] | None = None
    ) -> None:
        assert self.gateway is not None
        nc = await self.connect("gateway")
        js = nc.jetstream(timeout=10.0)
        try:
            for raw in messages:
                await publish_until_stored(js, self.gateway.subject, raw)
                self.bytes_sent += len(raw)
                self.messages_sent += 1
                if progress:
                    progress(1)
        finally:
            await nc.drain()

    def uploads(self, meter_id: str) -> list[bytes]:
        assert self.gateway is not None
        return list(self.gateway.uploads(meter_id, self.config.period))

    def reference(self, meter_id: str, period: BillingPeriod | None = None) -> RegisterSet:
        assert self.gateway is not None
        period = period or self.config.period
        intervals = self.gateway.intervals(meter_id, period.start, period.intervals)
        return self.contracts[meter_id].reference(meter_id, intervals)

    async def collect(
        self,
        timeout_s: float = 120.0,
        progress: Callable[[int], None] | None = None,
        *,
        missing_ok: bool = False,
        period: BillingPeriod | None = None,
    ) -> list[MeterOutcome]:
        """Pull every meter's result through the display, verify it, report the verdict.

        The authority's test meters are fetched, checked and reported alike (a display is a
        display); their results go to :attr:`authority` instead of the outcomes returned.
        ``TimeoutError`` if a result is still missing after ``timeout_s``; with
        ``missing_ok`` the outcomes of the meters that have one are returned instead."""
        nc = await self.connect("receiver")
        period = period or self.config.period
        done: dict[str, tuple[bytes, Verdict]] = {}
        deadline = time.monotonic() + timeout_s
        try:
            while len(done) < len(self.owner):
                # The same steps for every meter, test meters included: what the cloud sees
                # of the loop (fetch, report, the pause before the next fetch) must not
                # differ. Anything done for one kind only waits until after the loop.
                for meter_id, customer_id in self.owner.items():
                    if meter_id in done:
                        continue
                    receiver = self.receivers[customer_id]
                    result = await receiver.fetch(nc, meter_id, period)
                    if result is None:
                        continue
                    contract = self.contracts[meter_id]
                    verdict = receiver.check(result, meter_id, period, contract)
                    await receiver.send_report(nc, verdict)
                    done[meter_id] = (result, verdict)
                    if progress:
                        progress(1)
                if len(done) < len(self.owner):
                    if time.monotonic() > deadline:
                        if missing_ok:
                            break
                        missing = sorted(set(self.owner) - set(done))
                        raise TimeoutError(f"no result for {', '.join(missing)}")
                    await asyncio.sleep(0.2)
        finally:
            await nc.drain()
        test = set(self.authority.plan.meter_ids) if self.authority else set()
        outcomes = []
        for meter_id, customer_id in self.owner.items():
            if meter_id not in done:
                continue
            result, verdict = done[meter_id]
            if self.authority is not None and meter_id in test:
                self.authority.keep(meter_id, period, result)
            else:
                reference = self.reference(meter_id, period)
                outcomes.append(MeterOutcome(meter_id, customer_id, reference, verdict))
        return outcomes

    def check(
        self,
        period: BillingPeriod | None = None,
        *,
        round_id: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> CheckRound | None:
        """The authority's round for ``period``: its test meters' results (fetched by
        :meth:`collect`) against its test vectors. None if it does not check this period
        (or has no test meters)."""
        period = period or self.config.period
        if self.authority is None or not self.authority.plan.checks_period(period):
            return None
        assert self.trust is not None
        return self.authority.check(period, self.trust, round_id=round_id, progress=progress)

    async def log_check(self, check_round: CheckRound) -> None:
        """Hand a round's verdicts to the logbook, as the authority (its monitor user)."""
        nc = await self.connect("monitor")
        try:
            await log_round(nc, check_round)
        finally:
            await nc.drain()
