"""Confidential functionality checks: the authority's test meters and secret test vectors.

The duplicate-ciphertext check of the customer's display sees random tampering, not a
tariff program that bills every result wrongly in the same way (r and r' alike). The
authority closes that gap the way a market-surveillance officer tests a meter in the
field, but unannounced and in confidence:

- It signs up **test customers** through the operator's ordinary onboarding: their meters
  sit behind an ordinary gateway, with the same identifier scheme, keys, certificates and
  cadence as every other customer (:class:`CheckPlan` says which of the meters are its own;
  the operator is never told).
- Each test meter reads a **secret series**: the ordinary load model, seeded from the
  authority's secret (:meth:`CheckPlan.meter_config`). Knowing the series, the authority
  precomputes each period's registers and bill with the plaintext reference of the tariff
  program (:meth:`CheckPlan.expected`): these are the test vectors.
- Test meters send every period, as all meters do, and their results are fetched every
  period, as every display does. Which periods the authority actually checks is drawn from
  its secret (:meth:`CheckPlan.checks_period`): "unannounced" means which results are
  compared, never a difference in the traffic.
- A **check** (:func:`judge`) is the display's own check of the result (signature,
  dec(r) = dec(r'), registers, index sums) followed by a comparison of every decrypted
  register with the expectation. A **round** (:class:`CheckRound`) groups the checks of a
  period by tariff program and version, as the result names them, and goes to the logbook
  as one ``functionality-check`` event per program version: no meter id, no customer id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from metrocloud.core.clock import BillingPeriod
from metrocloud.core.events import LogEvent, functionality_check_event
from metrocloud.fhe.context import CustomerKeyPair
from metrocloud.fhe.packing import Interval
from metrocloud.field.gateway import derive_intervals
from metrocloud.field.loadprofile import COMMERCIAL, DEFAULT_ANNUAL_KWH, HOUSEHOLD
from metrocloud.field.meter import Meter, MeterConfig
from metrocloud.pki import TrustStore
from metrocloud.receiver.verify import check_result
from metrocloud.tariffs import RegisterSet, TariffProgram

ACTOR = "authority"
"""Who the round events name as their author."""
LOG_SUBJECT = "legal.log.monitor"
"""The authority's way into the logbook (its monitor's broker user)."""
SECRET_BYTES = 32
UNKNOWN_VERSION = "unknown"
"""The version of a check without an authentic result naming the program."""
PLAN_FILE = "check-plan.json"


def household_or_business(position: int) -> str:
    """The load model of the ``position``-th meter of a gateway (from 1): every fourth is
    a business, as the testbed's ordinary meters are."""
    return COMMERCIAL if position % 4 == 0 else HOUSEHOLD


@dataclass(frozen=True)
class TestMeter:
    """One of the authority's test meters, with the customer it is registered under and
    the load model it follows: the ordinary one for a meter of its kind and place."""

    __test__ = False  # not a pytest test class

    meter_id: str
    customer_id: str
    profile: str = HOUSEHOLD
    annual_kwh: float = DEFAULT_ANNUAL_KWH
    """Consumption of an average year, in thousands of the register's unit."""
    max_interval_wh: int = 5000
    error_probability: float = 0.0
    """How often the meter flags a reading as erroneous (as ordinary meters of its kind)."""

    @classmethod
    def like(cls, model: MeterConfig, customer_id: str) -> TestMeter:
        """A test meter that follows ``model`` (an ordinary meter's simulation) but for
        its seed."""
        return cls(
            model.meter_id,
            customer_id,
            model.profile,
            model.annual_kwh,
            model.max_interval_wh,
            model.error_probability,
        )


@dataclass(frozen=True)
class CheckPlan:
    """What the authority keeps to itself: the secret its series and its choice of periods
    derive from, its test meters, and how often a period is checked."""

    secret: bytes
    meters: tuple[TestMeter, ...]
    check_probability: float = 1.0
    """The chance that a given period is checked (drawn from the secret per period)."""

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise ValueError("the check secret must be at least 16 bytes")
        if not 0.0 < self.check_probability <= 1.0:
            raise ValueError("check_probability must be in (0, 1]")
        ids = [m.meter_id for m in self.meters]
        if len(set(ids)) != len(ids):
            raise ValueError("a test meter is listed twice")

    @classmethod
    def generate(
        cls,
        meters: Iterable[TestMeter],
        *,
        check_probability: float = 1.0,
    ) -> CheckPlan:
        """A plan with a fresh secret from the operating system's random source."""
        return cls(secrets.token_bytes(SECRET_BYTES), tuple(meters), check_probability)

    def _draw(self, *parts: str) -> bytes:
        return hmac.new(self.secret, "|".join(parts).encode(), hashlib.sha256).digest()

    def meter(self, meter_id: str) -> TestMeter:
        for meter in self.meters:
            if meter.meter_id == meter_id:
                return meter
        raise KeyError(f"{meter_id} is not a test meter")

    @property
    def meter_ids(self) -> list[str]:
        return [m.meter_id for m in self.meters]

    def seed(self, meter_id: str) -> int:
        """The secret seed of a test meter's series."""
        self.meter(meter_id)  # KeyError for a meter that is not a test meter
        return int.from_bytes(self._draw("series", meter_id)[:8], "big")

    def meter_config(self, meter_id: str) -> MeterConfig:
        """The simulation a test meter reads: the ordinary load model with a secret seed."""
        meter = self.meter(meter_id)
        return MeterConfig(
            meter_id,
            seed=self.seed(meter_id),
            annual_kwh=meter.annual_kwh,
            profile=meter.profile,
            max_interval_wh=meter.max_interval_wh,
            error_probability=meter.error_probability,
        )

    def series(self, meter_id: str, period: BillingPeriod) -> list[Interval]:
        """The secret test vector's input: the energy of each quarter hour of ``period``."""
        meter = Meter(self.meter_config(meter_id))
        readings = meter.readings(period.start - 1, period.intervals + 1)
        return derive_intervals(readings[0], readings[1:], meter.max_interval_wh)

    def expected(self, meter_id: str, period: BillingPeriod, program: TariffProgram) -> RegisterSet:
        """What a correct ``program`` bills for the test meter's ``period``: the plaintext
        reference over the secret series."""
        return program.reference(meter_id, self.series(meter_id, period))

    def checks_period(self, period: BillingPeriod) -> bool:
        """Whether the authority compares the results of ``period`` (secret, per period)."""
        if self.check_probability >= 1.0:
            return True
        draw = int.from_bytes(self._draw("round", period.period_id)[:8], "big")
        return draw < self.check_probability * 2**64

    # -- keeping it -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "secret": self.secret.hex(),
            "meters": [vars(m) for m in self.meters],
            "check_probability": self.check_probability,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckPlan:
        return cls(
            bytes.fromhex(data["secret"]),
            tuple(TestMeter(**m) for m in data["meters"]),
            float(data["check_probability"]),
        )

    def save(self, folder: Path) -> Path:
        """Write the plan to ``folder`` (created 0700), readable by the authority only."""
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / PLAN_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(self.to_dict(), out, indent=1)
        return path

    @classmethod
    def load(cls, folder: Path) -> CheckPlan:
        return cls.from_dict(json.loads((folder / PLAN_FILE).read_text(encoding="utf-8")))


def place_test_meters(total: int, test_meters: int) -> list[int]:
    """Which of a gateway's meter positions ``1..total`` the test meters take: drawn from
    the operating system's random source, so the numbering tells nothing."""
    if not 0 <= test_meters <= total:
        raise ValueError(f"{test_meters} test meters do not fit among {total} meters")
    return sorted(secrets.SystemRandom().sample(range(1, total + 1), test_meters))


@dataclass(frozen=True)
class CheckOutcome:
    """One test meter's check in one period: for the authority's eyes only."""

    meter_id: str
    period_id: str
    program: str
    program_version: str
    passed: bool
    reason: str
    expected: RegisterSet
    found: RegisterSet | None = None


def judge(
    result: bytes | None,
    keys: CustomerKeyPair,
    trust: TrustStore,
    *,
    meter_id: str,
    period: BillingPeriod,
    contract: TariffProgram,
    expected: RegisterSet,
) -> CheckOutcome:
    """Check one test meter's result: the display's checks, then every register against
    the precomputed ``expected``. The check is of the contract's program; its version is
    the one the result names (``unknown`` without an authentic result of that program)."""
    program, version = contract.name, UNKNOWN_VERSION

    def outcome(passed: bool, reason: str, found: RegisterSet | None = None) -> CheckOutcome:
        return CheckOutcome(
            meter_id, period.period_id, program, version, passed, reason, expected, found
        )

    if result is None:
        return outcome(False, "no result within the time allowed")
    verdict = check_result(result, keys, trust, meter_id=meter_id, period=period, contract=contract)
    if verdict.result is not None and verdict.result.tariff.get("name") == program:
        version = str(verdict.result.tariff.get("version", version))
    if not verdict.verified or verdict.registers is None:
        return outcome(False, f"the display's check failed: {verdict.reason}")
    if verdict.registers != expected:
        found = verdict.registers.differences(
            expected, contract.register_names(), this="result", that="expected"
        )
        return outcome(
            False, "result differs from the test vector: " + "; ".join(found), verdict.registers
        )
    return outcome(True, "equal to the test vector", verdict.registers)


@dataclass(frozen=True)
class ProgramVerdict:
    """A round's verdict on one tariff program version."""

    program: str
    program_version: str
    checks: int
    failures: int
    round_id: str

    @property
    def passed(self) -> bool:
        return self.failures == 0

    def event(self, *, actor: str = ACTOR) -> LogEvent:
        return functionality_check_event(
            actor,
            self.program,
            self.program_version,
            "pass" if self.passed else "fail",
            self.checks,
            self.failures,
            self.round_id,
        )


@dataclass(frozen=True)
class CheckRound:
    """The checks of one period: a verdict per tariff program version."""

    round_id: str
    outcomes: tuple[CheckOutcome, ...]

    @classmethod
    def of(cls, outcomes: Sequence[CheckOutcome], round_id: str | None = None) -> CheckRound:
        return cls(round_id or secrets.token_hex(8), tuple(outcomes))

    @property
    def verdicts(self) -> list[ProgramVerdict]:
        """One per program version. A check without a version (no result, or none from
        legal) counts against the version the round's other results of the program name,
        if they name one: withholding test meters' results must not leave a pass."""
        versions: dict[str, set[str]] = {}
        for outcome in self.outcomes:
            if outcome.program_version != UNKNOWN_VERSION:
                versions.setdefault(outcome.program, set()).add(outcome.program_version)
        groups: dict[tuple[str, str], list[CheckOutcome]] = {}
        for outcome in self.outcomes:
            version = outcome.program_version
            named = versions.get(outcome.program, set())
            if version == UNKNOWN_VERSION and len(named) == 1:
                (version,) = named
            groups.setdefault((outcome.program, version), []).append(outcome)
        return [
            ProgramVerdict(program, version, len(found), sum(not o.passed for o in found),
                           self.round_id)
            for (program, version), found in sorted(groups.items())
        ]  # fmt: skip

    @property
    def passed(self) -> bool:
        return bool(self.outcomes) and all(o.passed for o in self.outcomes)

    def events(self, *, actor: str = ACTOR) -> list[LogEvent]:
        return [verdict.event(actor=actor) for verdict in self.verdicts]


async def log_round(nc: Client, check_round: CheckRound, *, actor: str = ACTOR) -> list[LogEvent]:
    """Hand the round's events to the logbook (as the authority's monitor user)."""
    js = nc.jetstream(timeout=30.0)
    events = check_round.events(actor=actor)
    for event in events:
        await js.publish(LOG_SUBJECT, event.to_json(), headers={"Nats-Msg-Id": event.event_id})
    return events


@dataclass
class TestCustomers:
    """The authority's side of a running field: its plan, the key pair of each test
    customer (the authority is their receiver), the results fetched so far, and the
    programs its test meters are contracted on."""

    __test__ = False  # not a pytest test class

    plan: CheckPlan
    keys: dict[str, CustomerKeyPair] = field(default_factory=dict)
    contracts: dict[str, TariffProgram] = field(default_factory=dict)
    fetched: dict[tuple[str, str], bytes] = field(default_factory=dict)
    """(meter, period id) -> the signed result, as the display handed it out."""

    def keep(self, meter_id: str, period: BillingPeriod, result: bytes) -> None:
        self.fetched[(meter_id, period.period_id)] = result

    def check(
        self,
        period: BillingPeriod,
        trust: TrustStore,
        *,
        round_id: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> CheckRound:
        """Judge every test meter's result of ``period`` against its test vector."""
        outcomes = []
        for meter in self.plan.meters:
            contract = self.contracts[meter.meter_id]
            outcomes.append(
                judge(
                    self.fetched.get((meter.meter_id, period.period_id)),
                    self.keys[meter.customer_id],
                    trust,
                    meter_id=meter.meter_id,
                    period=period,
                    contract=contract,
                    expected=self.plan.expected(meter.meter_id, period, contract),
                )
            )
            if progress:
                progress(1)
        return CheckRound.of(outcomes, round_id)
