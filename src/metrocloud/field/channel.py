"""A simulated 868 MHz wireless M-Bus radio channel between meters and one gateway.

Meters (and any other ISM-band user) put :class:`Transmission` s on the air with
:meth:`Channel.send`; the gateway takes :class:`Reception` s out with
:meth:`Channel.deliver`. Frames are opaque bytes: the channel knows their length, never
their content, so it carries any telegram format.

Air time follows the radio mode (:class:`RadioMode`; chip rate, line code, preamble, sync
word and postamble of EN 13757-4 modes T, C and S, see ``docs/channel.md`` for the sources).
Impairments, each switched on by giving its configuration and off with ``None``:

* :class:`Loss`: a frame fades away with a fixed probability;
* :class:`BitErrors`: independent bit flips on the delivered copy (length never changes);
* :class:`Echo`: a delayed, attenuated second copy of a delivered frame (multipath,
  repeaters: the gateway sees a duplicate);
* :class:`Interference`: foreign ISM-band bursts, a Poisson process in time;
* :class:`Collisions`: frames that overlap in time disturb each other, with power capture;
* :class:`Delay`: processing delay with jitter before the gateway gets a frame;
* :class:`PathLoss`: per-link received power from a log-distance model with log-normal
  shadowing fixed per link (and optional per-frame fading); frames below the receiver's
  sensitivity are lost.

A frame disturbed by a stronger signal (a colliding frame or a burst that the frame does
not exceed by the capture threshold) is lost when the disturbance reaches its preamble or
sync word (the receiver never locks on), and delivered with the disturbed bytes garbled
when only the data part is hit (the receiver locked on, then read noise).

Randomness: every component draws from its own stream derived from ``(seed, receiver,
component)`` with BLAKE2b, and only ``random()`` of :class:`random.Random` is used (stable
across Python versions). A component draws for every sent frame in send order whether or
not another component already lost it, so switching one impairment on or off never
changes the draws of another, and the same sends give the same deliveries however they are
split between :meth:`Channel.deliver` calls. Interference bursts depend on time only (one
stream per time slot), shadowing on the link only, garbled bytes on the frame's sequence
number only.

Causality: a frame is handed out once ``deliver(until_s)`` reaches its reception time, and
after that no frame may start before ``until_s``: a transmission that starts before the
channel's horizon is refused, so every frame that could overlap a delivered one was known
when it was delivered.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import Final, Literal, NamedTuple

__all__ = [
    "MODES",
    "MODE_C",
    "MODE_S",
    "MODE_S_LONG",
    "MODE_T",
    "BitErrors",
    "Burst",
    "Channel",
    "ChannelConfig",
    "ChannelStats",
    "Collisions",
    "Delay",
    "Echo",
    "Interference",
    "Loss",
    "PathLoss",
    "RadioMode",
    "Reception",
    "Transmission",
]

SPEED_OF_LIGHT_M_S: Final = 299_792_458.0

# Causes of a lost frame (the ``lost_*`` counters of ChannelStats).
LOSS: Final = "loss"
COLLISION: Final = "collision"
INTERFERENCE: Final = "interference"
JAMMED: Final = "jammed"
INTERRUPTED: Final = "interrupted"
WEAK: Final = "weak"


# ---------------------------------------------------------------------------------------
# Radio modes


@dataclass(frozen=True)
class RadioMode:
    """The physical layer of one wireless M-Bus mode (meter to other direction).

    ``chips_per_byte`` is the line code: 8 for NRZ, 12 for 3-out-of-6 (4 bits to 6 chips),
    16 for Manchester (1 bit to 2 chips). Preamble, sync word and postamble are in chips.
    """

    name: str
    chip_rate_cps: float
    chips_per_byte: int
    preamble_chips: int
    sync_chips: int
    postamble_chips: int = 2
    sensitivity_dbm: float = -101.0

    def __post_init__(self) -> None:
        if not self.chip_rate_cps > 0 or self.chips_per_byte <= 0:
            raise ValueError("chip rate and chips per byte must be positive")
        if min(self.preamble_chips, self.sync_chips, self.postamble_chips) < 0:
            raise ValueError("preamble, sync and postamble lengths must be >= 0")

    @property
    def bit_rate_bps(self) -> float:
        """Net data rate: 8 bits per ``chips_per_byte`` chips."""
        return self.chip_rate_cps * 8.0 / self.chips_per_byte

    @property
    def header_s(self) -> float:
        """Air time of preamble and sync word: the part a receiver needs to lock on."""
        return (self.preamble_chips + self.sync_chips) / self.chip_rate_cps

    @property
    def byte_s(self) -> float:
        """Air time of one frame byte."""
        return self.chips_per_byte / self.chip_rate_cps

    def airtime_s(self, nbytes: int) -> float:
        """Air time of a frame of ``nbytes`` bytes, preamble to postamble."""
        chips = (
            self.preamble_chips
            + self.sync_chips
            + self.postamble_chips
            + self.chips_per_byte * nbytes
        )
        return chips / self.chip_rate_cps


#: Mode T1 (frequent transmit, meter to other): 100 kcps, 3-out-of-6 (66.67 kbit/s),
#: 19 x "01" preamble and a 10-chip sync word; sensitivity -101 dBm (RC1180-MBUS, mode T).
MODE_T: Final = RadioMode("T1", 100_000.0, 12, 38, 10, 2, -101.0)
#: Mode C1 (compact, meter to other), frame format A: 100 kcps NRZ (100 kbit/s),
#: 16 x "01" preamble and the 32-chip sync 0x543D 0x54CD; sensitivity taken as mode T's.
MODE_C: Final = RadioMode("C1", 100_000.0, 8, 32, 32, 2, -101.0)
#: Mode S1-m / S2 (stationary, short header): 32.768 kcps Manchester (16.384 kbit/s),
#: 15 x "01" preamble and an 18-chip sync word; sensitivity -102 dBm (RC1180-MBUS, mode S).
MODE_S: Final = RadioMode("S1-m", 32_768.0, 16, 30, 18, 2, -102.0)
#: Mode S1 with the long header (279 x "01") of meters that wake a sleeping receiver.
MODE_S_LONG: Final = RadioMode("S1", 32_768.0, 16, 558, 18, 2, -102.0)

MODES: Final[Mapping[str, RadioMode]] = {
    "T": MODE_T,
    "C": MODE_C,
    "S": MODE_S,
    "S-long": MODE_S_LONG,
}


# ---------------------------------------------------------------------------------------
# Impairment configurations (None in ChannelConfig switches one off)


def _check_range(name: str, lo: float, hi: float, minimum: float = 0.0) -> None:
    if not (minimum <= lo <= hi < math.inf):
        raise ValueError(f"{name} must satisfy {minimum} <= low <= high < inf, not {lo}, {hi}")


@dataclass(frozen=True)
class Loss:
    """Each frame is lost independently with ``probability`` (deep fade, receiver busy)."""

    probability: float = 0.01

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("loss probability must lie in [0, 1]")


@dataclass(frozen=True)
class BitErrors:
    """Independent bit flips with bit error rate ``ber`` on the delivered frame's bytes."""

    ber: float = 1e-4

    def __post_init__(self) -> None:
        if not 0.0 <= self.ber <= 1.0:
            raise ValueError("bit error rate must lie in [0, 1]")


@dataclass(frozen=True)
class Echo:
    """With ``probability`` a delivered frame arrives a second time, ``delay_s`` (uniform)
    after the first copy and ``attenuation_db`` weaker; bytes as delivered the first time."""

    probability: float = 0.01
    delay_s: tuple[float, float] = (0.002, 0.05)
    attenuation_db: float = 6.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("echo probability must lie in [0, 1]")
        _check_range("echo delay", *self.delay_s)


@dataclass(frozen=True)
class Interference:
    """Foreign ISM-band bursts (home automation, alarm systems, other meters' neighbours).

    Bursts start as a Poisson process of ``rate_hz``; a burst lasts ``duration_s`` (uniform
    or log-uniform between the bounds) and arrives with a power uniform in ``power_dbm``.
    A frame overlapped by a burst survives only if it is at least ``capture_db`` stronger.
    """

    rate_hz: float = 0.2
    duration_s: tuple[float, float] = (0.002, 0.1)
    law: Literal["uniform", "loguniform"] = "loguniform"
    power_dbm: tuple[float, float] = (-100.0, -50.0)
    capture_db: float = 6.0

    def __post_init__(self) -> None:
        if not 0.0 < self.rate_hz < math.inf:
            raise ValueError("interference rate must be positive and finite")
        _check_range("burst duration", *self.duration_s, minimum=1e-9)
        _check_range("burst power", *self.power_dbm, minimum=-math.inf)
        if self.law not in ("uniform", "loguniform"):
            raise ValueError(f"unknown burst duration law {self.law!r}")


@dataclass(frozen=True)
class Collisions:
    """Overlapping frames disturb each other unless one exceeds the other by ``capture_db``."""

    capture_db: float = 6.0


@dataclass(frozen=True)
class Delay:
    """The gateway gets a frame ``base_s`` plus uniform ``[0, jitter_s)`` after its end."""

    base_s: float = 0.001
    jitter_s: float = 0.002

    def __post_init__(self) -> None:
        if not (0.0 <= self.base_s < math.inf and 0.0 <= self.jitter_s < math.inf):
            raise ValueError("delay and jitter must be finite and >= 0")


@dataclass(frozen=True)
class PathLoss:
    """Log-distance path loss with log-normal shadowing fixed per link.

    ``rssi = tx_power_dbm - (FSPL(reference_m) + 10 exponent log10(d / reference_m) + X)``
    with ``X ~ N(0, shadowing_db)`` drawn once per link from the seed, plus per frame
    ``N(0, fading_db)``. ``d`` comes from ``positions`` (metres; the receiver included,
    at the origin when absent) or is ``default_distance_m`` for a node without position.
    """

    tx_power_dbm: float = 14.0
    frequency_hz: float = 868.95e6
    exponent: float = 3.0
    reference_m: float = 1.0
    shadowing_db: float = 8.0
    fading_db: float = 0.0
    default_distance_m: float = 20.0
    positions: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.frequency_hz > 0 and self.reference_m > 0 and self.default_distance_m > 0):
            raise ValueError("frequency, reference and default distance must be positive")
        if self.shadowing_db < 0 or self.fading_db < 0 or self.exponent < 0:
            raise ValueError("exponent, shadowing and fading must be >= 0")

    @property
    def reference_loss_db(self) -> float:
        """Free-space path loss at the reference distance (Friis)."""
        return 20.0 * math.log10(
            4.0 * math.pi * self.reference_m * self.frequency_hz / SPEED_OF_LIGHT_M_S
        )

    def mean_loss_db(self, distance_m: float) -> float:
        """Path loss at ``distance_m`` without shadowing (closer than the reference: clamped)."""
        d = max(distance_m, self.reference_m)
        return self.reference_loss_db + 10.0 * self.exponent * math.log10(d / self.reference_m)


@dataclass(frozen=True)
class ChannelConfig:
    """A channel to one receiver; every impairment is off unless configured.

    ``ChannelConfig()`` is an ideal channel: every frame arrives once, unchanged, at
    ``nominal_rssi_dbm``, at the end of its air time. :meth:`realistic` switches all on.
    ``sensitivity_dbm`` (default: the mode's) loses frames that arrive weaker.
    """

    mode: RadioMode = MODE_T
    receiver: str = "smgw"
    nominal_rssi_dbm: float = -60.0
    sensitivity_dbm: float | None = None
    loss: Loss | None = None
    bit_errors: BitErrors | None = None
    echo: Echo | None = None
    interference: Interference | None = None
    collisions: Collisions | None = None
    delay: Delay | None = None
    path_loss: PathLoss | None = None

    @classmethod
    def realistic(cls, **overrides: object) -> ChannelConfig:
        """Every impairment on with its defaults; keyword arguments replace fields."""
        base = cls(
            loss=Loss(),
            bit_errors=BitErrors(),
            echo=Echo(),
            interference=Interference(),
            collisions=Collisions(),
            delay=Delay(),
            path_loss=PathLoss(),
        )
        return replace(base, **overrides)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# What goes in and what comes out


class Transmission(NamedTuple):
    """A frame put on the air by ``sender`` (a meter address or another ISM user)."""

    sender: str
    frame: bytes
    start_s: float


class Reception(NamedTuple):
    """A frame as the receiver got it.

    ``start_s``/``end_s`` is the frame's time on the air, ``at_s`` the moment the gateway
    holds it (``end_s`` plus processing delay); deliveries are ordered by ``at_s``.
    ``sender``, ``seq`` (the number :meth:`Channel.send` returned), ``corrupted``, ``echo``
    and ``injected`` are ground truth for tests and reports: a gateway must not use them.
    """

    frame: bytes
    start_s: float
    end_s: float
    rssi_dbm: float
    at_s: float
    sender: str
    seq: int
    corrupted: bool = False
    echo: bool = False
    injected: bool = False


class Burst(NamedTuple):
    """One foreign ISM-band burst of the interference process."""

    start_s: float
    end_s: float
    power_dbm: float


@dataclass(slots=True)
class ChannelStats:
    """Counters since construction or :meth:`Channel.reset`.

    ``sent + injected == delivered + lost + pending`` at any time; ``corrupted`` counts
    delivered frames with at least one changed bit, ``duplicated`` the extra echo copies.
    """

    sent: int = 0
    injected: int = 0
    delivered: int = 0
    corrupted: int = 0
    duplicated: int = 0
    lost_loss: int = 0
    lost_collision: int = 0
    lost_interference: int = 0
    lost_jammed: int = 0
    lost_interrupted: int = 0
    lost_weak: int = 0
    flipped_bits: int = 0
    pending: int = 0

    @property
    def lost(self) -> int:
        """Frames lost for any cause."""
        return (
            self.lost_loss
            + self.lost_collision
            + self.lost_interference
            + self.lost_jammed
            + self.lost_interrupted
            + self.lost_weak
        )

    @property
    def receptions(self) -> int:
        """Receptions handed out: delivered frames plus their echoes."""
        return self.delivered + self.duplicated

    def lost_by_cause(self) -> dict[str, int]:
        """The lost counters keyed by cause."""
        return {
            LOSS: self.lost_loss,
            COLLISION: self.lost_collision,
            INTERFERENCE: self.lost_interference,
            JAMMED: self.lost_jammed,
            INTERRUPTED: self.lost_interrupted,
            WEAK: self.lost_weak,
        }


# ---------------------------------------------------------------------------------------
# The channel


class _Tx:
    """A frame on its way: what the send-time draws decided, waiting for its delivery."""

    __slots__ = (
        "at",
        "delay",
        "echo_s",
        "end",
        "flips",
        "frame",
        "injected",
        "rssi",
        "sender",
        "seq",
        "start",
    )

    def __init__(
        self,
        seq: int,
        sender: str,
        frame: bytes,
        start: float,
        end: float,
        rssi: float,
        delay: float,
        flips: list[int] | None,
        echo_s: float,
        injected: bool,
    ) -> None:
        self.seq = seq
        self.sender = sender
        self.frame = frame
        self.start = start
        self.end = end
        self.rssi = rssi
        self.delay = delay
        self.at = end + delay
        self.flips = flips
        self.echo_s = echo_s  # < 0: no echo
        self.injected = injected


_ORDER = attrgetter("at", "start", "seq")
_START = attrgetter("start")
_RECEPTION_ORDER = attrgetter("at_s", "start_s", "seq", "echo")
_TWO_PI: Final = 2.0 * math.pi
_INV_2_53: Final = 2.0**-53


@dataclass
class _Force:
    a: str
    b: str
    offset_s: float
    first: tuple[str, float] | None = None


class Channel:
    """The simulated radio channel to one receiver; see the module documentation."""

    def __init__(self, config: ChannelConfig | None = None, seed: int = 0) -> None:
        self.config = config if config is not None else ChannelConfig()
        self.seed = seed
        self.reset()

    # -- set-up ----------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the state right after construction: nothing sent, fresh streams, no
        manipulations, positions as configured."""
        cfg = self.config
        mode = cfg.mode
        self._key = hashlib.blake2b(
            f"metrocloud.field.channel/{self.seed}/{cfg.receiver}".encode(), digest_size=32
        ).digest()
        self._byte_s = mode.byte_s
        self._header_s = mode.header_s
        self._overhead_s = mode.airtime_s(0)
        self._sensitivity = (
            cfg.sensitivity_dbm if cfg.sensitivity_dbm is not None else mode.sensitivity_dbm
        )
        self._rng_loss = self._stream("loss") if cfg.loss is not None else None
        self._loss_p = cfg.loss.probability if cfg.loss is not None else 0.0
        self._rng_bits = self._stream("bit-errors") if cfg.bit_errors is not None else None
        ber = cfg.bit_errors.ber if cfg.bit_errors is not None else 0.0
        self._log1m_ber = math.log1p(-ber) if 0.0 < ber < 1.0 else (0.0 if ber == 0 else -math.inf)
        self._rng_echo = self._stream("echo") if cfg.echo is not None else None
        self._rng_delay = self._stream("delay") if cfg.delay is not None else None
        self._delay_base = cfg.delay.base_s if cfg.delay is not None else 0.0
        self._delay_jitter = cfg.delay.jitter_s if cfg.delay is not None else 0.0
        pl = cfg.path_loss
        self._rng_fading = self._stream("fading") if pl is not None and pl.fading_db > 0 else None
        self._positions: dict[str, tuple[float, float]] = dict(pl.positions) if pl else {}
        self._links: dict[str, float] = {}
        inter = cfg.interference
        self._slot_s = min(max(10.0 / inter.rate_hz, 0.01), 3600.0) if inter else 0.0
        self._slots: dict[int, list[Burst]] = {}
        self._collide = cfg.collisions is not None
        self._interact = self._collide or inter is not None
        self._capture_col = cfg.collisions.capture_db if cfg.collisions else 0.0
        self._seq = 0
        self._horizon = -math.inf
        self._new: list[_Tx] = []
        self._queue: list[_Tx] = []
        self._air: list[_Tx] = []
        self._max_air = 0.0
        self._echoes: list[tuple[float, float, int, Reception]] = []
        self._jams: list[tuple[float, float]] = []
        self._interrupts: dict[str, list[tuple[float, float]]] = {}
        self._forces: list[_Force] = []
        self._stats = ChannelStats()

    def _stream(self, component: str) -> random.Random:
        digest = hashlib.blake2b(component.encode(), key=self._key, digest_size=32).digest()
        return random.Random(int.from_bytes(digest, "big"))

    def _uniforms(self, label: bytes) -> tuple[float, float]:
        """Two uniforms in [0, 1) that depend only on the seed, receiver and label."""
        d = hashlib.blake2b(label, key=self._key, digest_size=16).digest()
        return (
            (int.from_bytes(d[:8], "big") >> 11) * _INV_2_53,
            (int.from_bytes(d[8:], "big") >> 11) * _INV_2_53,
        )

    # -- inspection ------------------------------------------------------------------

    @property
    def stats(self) -> ChannelStats:
        """A snapshot of the counters."""
        return replace(self._stats, pending=len(self._new) + len(self._queue))

    @property
    def horizon_s(self) -> float:
        """The latest ``until_s`` delivered; no frame may start before it."""
        return self._horizon

    def airtime_s(self, nbytes: int) -> float:
        """Air time of a frame of ``nbytes`` bytes in this channel's mode."""
        return self._overhead_s + nbytes * self._byte_s

    def link_rssi_dbm(self, sender: str) -> float:
        """Mean received power of ``sender``'s frames (shadowing included, fading not)."""
        rssi = self._links.get(sender)
        if rssi is None:
            rssi = self._link(sender)
            self._links[sender] = rssi
        return rssi

    def _link(self, sender: str) -> float:
        pl = self.config.path_loss
        if pl is None:
            return self.config.nominal_rssi_dbm
        here = self._positions.get(sender)
        if here is None:
            distance = pl.default_distance_m
        else:
            rx, ry = self._positions.get(self.config.receiver, (0.0, 0.0))
            distance = math.hypot(here[0] - rx, here[1] - ry)
        shadow = 0.0
        if pl.shadowing_db > 0:
            u1, u2 = self._uniforms(b"shadowing/" + sender.encode())
            shadow = pl.shadowing_db * _normal(u1, u2)
        return pl.tx_power_dbm - pl.mean_loss_db(distance) - shadow

    def bursts(self, from_s: float, to_s: float) -> list[Burst]:
        """The interference bursts that overlap ``[from_s, to_s)``, by start time."""
        inter = self.config.interference
        if inter is None or not from_s < to_s:
            return []
        out: list[Burst] = []
        first = math.floor((from_s - inter.duration_s[1]) / self._slot_s)
        last = math.floor(to_s / self._slot_s)
        for k in range(first, last + 1):
            out.extend(b for b in self._slot(k) if b.start_s < to_s and b.end_s > from_s)
        return out

    def _slot(self, k: int) -> list[Burst]:
        bursts = self._slots.get(k)
        if bursts is None:
            inter = self.config.interference
            assert inter is not None
            rng = self._stream(f"interference/{k}")
            rate = inter.rate_hz
            d_lo, d_hi = inter.duration_s
            p_lo, p_hi = inter.power_dbm
            log_ratio = math.log(d_hi / d_lo)
            t = k * self._slot_s
            end = t + self._slot_s
            bursts = []
            while True:
                t -= math.log(1.0 - rng.random()) / rate
                if t >= end:
                    break
                u = rng.random()
                if inter.law == "loguniform":
                    duration = d_lo * math.exp(log_ratio * u)
                else:
                    duration = d_lo + (d_hi - d_lo) * u
                bursts.append(Burst(t, t + duration, p_lo + (p_hi - p_lo) * rng.random()))
            self._slots[k] = bursts
        return bursts

    # -- manipulation hooks ----------------------------------------------------------

    def interrupt(self, sender: str, from_s: float, to_s: float = math.inf) -> None:
        """``sender`` stops sending: its frames sent from now on that would start in
        ``[from_s, to_s)`` never reach the air (lost, cause ``interrupted``)."""
        if not from_s < to_s:
            raise ValueError("an interruption needs from_s < to_s")
        self._interrupts.setdefault(sender, []).append((from_s, to_s))

    def jam(self, from_s: float, to_s: float) -> None:
        """The receiver hears nothing in ``[from_s, to_s)``: every frame not yet delivered
        whose air time overlaps the window is lost (cause ``jammed``), echoes too."""
        if not from_s < to_s:
            raise ValueError("a jam needs from_s < to_s")
        self._jams.append((from_s, to_s))

    def inject(
        self,
        frame: bytes,
        at_s: float,
        rssi_dbm: float,
        *,
        sender: str = "injected",
        impair: bool = False,
    ) -> int:
        """An attacker's crafted frame on the air from ``at_s``, arriving with ``rssi_dbm``.

        It takes part in collisions, interference, jamming and the sensitivity check like
        any frame on the air; the random impairments (loss, bit errors, echo, delay
        jitter, fading) touch it only with ``impair=True``. Returns its sequence number.
        """
        self._stats.injected += 1
        return self._admit(sender, bytes(frame), at_s, rssi_dbm, impair, True)

    def force_collision(self, sender_a: str, sender_b: str, offset_s: float = 0.0) -> None:
        """Make the next frames of two senders overlap: whichever of the two is sent second
        is moved to start ``offset_s`` after the start of the other's latest frame.

        The outcome is up to the collision model, which must be configured.
        """
        if self.config.collisions is None:
            raise ValueError("force_collision needs ChannelConfig.collisions")
        if sender_a == sender_b:
            raise ValueError("a collision needs two different senders")
        if not 0.0 <= offset_s < math.inf:
            raise ValueError("the collision offset must be finite and >= 0")
        self._forces.append(_Force(sender_a, sender_b, offset_s))

    def place(self, node: str, x_m: float, y_m: float) -> None:
        """Move a meter (or the receiver) to ``(x_m, y_m)``; frames sent from now on see
        the new distance (shadowing stays the link's)."""
        if self.config.path_loss is None:
            raise ValueError("positions need ChannelConfig.path_loss")
        self._positions[node] = (x_m, y_m)
        self._links.clear()

    # -- sending ---------------------------------------------------------------------

    def send(self, tx: Transmission) -> int:
        """Put a frame on the air; returns its sequence number (``Reception.seq``)."""
        self._stats.sent += 1
        frame = tx[1]
        if type(frame) is not bytes:
            frame = bytes(frame)
        return self._admit(tx[0], frame, tx[2], None, True, False)

    def send_many(self, txs: Iterable[Transmission]) -> list[int]:
        """:meth:`send` for each transmission, in order."""
        return [self.send(tx) for tx in txs]

    def _admit(
        self,
        sender: str,
        frame: bytes,
        start: float,
        rssi: float | None,
        impair: bool,
        injected: bool,
    ) -> int:
        if not self._horizon <= start < math.inf:
            raise ValueError(
                f"a frame cannot start at {start}: the channel delivered up to {self._horizon}"
            )
        if self._forces:
            start = self._forced_start(sender, start)
        seq = self._seq
        self._seq = seq + 1
        n = len(frame)
        end = start + self._overhead_s + n * self._byte_s
        lost: str | None = None
        flips: list[int] | None = None
        echo_s = -1.0
        delay = self._delay_base
        if rssi is None:
            rssi = self._links.get(sender)
            if rssi is None:
                rssi = self.link_rssi_dbm(sender)
        if impair:
            # every configured component draws for every frame, in send order
            rng = self._rng_loss
            if rng is not None and rng.random() < self._loss_p:
                lost = LOSS
            rng = self._rng_bits
            if rng is not None and n:
                flips = self._draw_flips(rng, n * 8)
            rng = self._rng_echo
            if rng is not None:
                echo = self.config.echo
                assert echo is not None
                u = rng.random()
                v = rng.random()
                if u < echo.probability:
                    echo_s = echo.delay_s[0] + (echo.delay_s[1] - echo.delay_s[0]) * v
            rng = self._rng_delay
            if rng is not None:
                delay += self._delay_jitter * rng.random()
            rng = self._rng_fading
            if rng is not None:
                pl = self.config.path_loss
                assert pl is not None
                rssi += pl.fading_db * _normal(rng.random(), rng.random())
        if self._interrupts:
            for lo, hi in self._interrupts.get(sender, ()):
                if lo <= start < hi:
                    lost = INTERRUPTED
                    break
        if lost is None and rssi < self._sensitivity:
            lost = WEAK
        if lost is not None:
            self._count_lost(lost)
            return seq
        self._new.append(_Tx(seq, sender, frame, start, end, rssi, delay, flips, echo_s, injected))
        if end - start > self._max_air:
            self._max_air = end - start
        return seq

    def _draw_flips(self, rng: random.Random, nbits: int) -> list[int] | None:
        """Positions of flipped bits: geometric gaps between independent flips."""
        log1m = self._log1m_ber
        if log1m == 0.0:
            return None
        pos = -1
        flips: list[int] | None = None
        while True:
            # 1 - random() lies in (0, 1]; the gap is >= 0 bits
            gap = math.log(1.0 - rng.random()) / log1m if log1m != -math.inf else 0.0
            pos += 1 + int(gap)
            if pos >= nbits:
                return flips
            if flips is None:
                flips = [pos]
            else:
                flips.append(pos)

    def _forced_start(self, sender: str, start: float) -> float:
        for force in self._forces:
            if sender != force.a and sender != force.b:
                continue
            if force.first is None or force.first[0] == sender:
                force.first = (sender, start)
                return start
            moved = force.first[1] + force.offset_s
            self._forces.remove(force)
            if moved < self._horizon:
                raise ValueError(
                    f"cannot force {sender!r} to {moved}: the channel delivered up to "
                    f"{self._horizon}"
                )
            return moved
        return start

    def _count_lost(self, cause: str) -> None:
        s = self._stats
        if cause == LOSS:
            s.lost_loss += 1
        elif cause == COLLISION:
            s.lost_collision += 1
        elif cause == INTERFERENCE:
            s.lost_interference += 1
        elif cause == JAMMED:
            s.lost_jammed += 1
        elif cause == INTERRUPTED:
            s.lost_interrupted += 1
        else:
            s.lost_weak += 1

    # -- receiving -------------------------------------------------------------------

    def deliver(self, until_s: float) -> list[Reception]:
        """Every reception the gateway holds by ``until_s`` (``at_s <= until_s``) and did
        not get before, ordered by ``at_s``. Advances the horizon to ``until_s``."""
        if not until_s >= self._horizon:
            raise ValueError(f"cannot deliver up to {until_s}: already at {self._horizon}")
        self._horizon = until_s
        new = self._new
        if new:
            self._new = []
            self._queue.extend(new)
            if self._collide:
                self._air.extend(new)
                self._air.sort(key=_START)
        queue = self._queue
        ready = [tx for tx in queue if tx.at <= until_s]
        if len(ready) == len(queue):
            self._queue = []
        elif ready:
            self._queue = [tx for tx in queue if tx.at > until_s]
        out: list[Reception] = []
        if ready:
            ready.sort(key=_ORDER)
            self._finalize(ready, out)
        echoes = self._echoes
        if echoes and echoes[0][0] <= until_s:
            while echoes and echoes[0][0] <= until_s:
                copy = heapq.heappop(echoes)[3]
                if self._jams and _hits(self._jams, copy.start_s, copy.end_s):
                    continue
                out.append(copy)
                self._stats.duplicated += 1
            out.sort(key=_RECEPTION_ORDER)
        if ready and (self._air or self._slots):
            self._prune(until_s)
        return out

    def flush(self) -> list[Reception]:
        """Deliver everything sent so far, echoes included; the horizon moves to the last
        reception."""
        times = [tx.at for tx in self._new] + [tx.at for tx in self._queue]
        out = self.deliver(max([self._horizon, *times]))
        if self._echoes:  # echoes of the frames just delivered
            out += self.deliver(max(e[0] for e in self._echoes))
        return out

    def _finalize(self, ready: list[_Tx], out: list[Reception]) -> None:
        stats = self._stats
        jams = self._jams
        interact = self._interact
        starts = [a.start for a in self._air] if self._collide else []
        append = out.append
        for tx in ready:
            garble: list[tuple[float, float]] | None = None
            if jams and _hits(jams, tx.start, tx.end):
                self._count_lost(JAMMED)
                continue
            if interact:
                cause, garble = self._disturbance(tx, starts)
                if cause is not None:
                    self._count_lost(cause)
                    continue
            frame = tx.frame
            corrupted = False
            if tx.flips is not None or garble is not None:
                buf = bytearray(frame)
                if tx.flips is not None:
                    for p in tx.flips:
                        buf[p >> 3] ^= 0x80 >> (p & 7)
                    stats.flipped_bits += len(tx.flips)
                if garble is not None:
                    self._garble(buf, tx, garble)
                new_frame = bytes(buf)
                corrupted = new_frame != frame
                frame = new_frame
                if corrupted:
                    stats.corrupted += 1
            stats.delivered += 1
            rec = Reception(
                frame,
                tx.start,
                tx.end,
                tx.rssi,
                tx.at,
                tx.sender,
                tx.seq,
                corrupted,
                False,
                tx.injected,
            )
            append(rec)
            if tx.echo_s >= 0.0:
                self._schedule_echo(rec, tx.echo_s)

    def _schedule_echo(self, rec: Reception, lag: float) -> None:
        echo = self.config.echo
        assert echo is not None
        copy = rec._replace(
            start_s=rec.start_s + lag,
            end_s=rec.end_s + lag,
            at_s=rec.at_s + lag,
            rssi_dbm=rec.rssi_dbm - echo.attenuation_db,
            echo=True,
        )
        heapq.heappush(self._echoes, (copy.at_s, copy.start_s, copy.seq, copy))

    def _disturbance(
        self, tx: _Tx, starts: list[float]
    ) -> tuple[str | None, list[tuple[float, float]] | None]:
        """Lost (and why) or the air-time stretches where a stronger signal garbles it."""
        s, e, rssi = tx.start, tx.end, tx.rssi
        harm: list[tuple[float, float, float, str]] | None = None
        if self._collide:
            air = self._air
            capture = self._capture_col
            i = bisect_left(starts, e) - 1
            earliest = s - self._max_air
            while i >= 0 and starts[i] > earliest:
                other = air[i]
                i -= 1
                if other is tx or other.end <= s:
                    continue
                if rssi - other.rssi < capture:
                    item = (max(s, other.start), min(e, other.end), other.rssi, COLLISION)
                    if harm is None:
                        harm = [item]
                    else:
                        harm.append(item)
        inter = self.config.interference
        if inter is not None:
            capture = inter.capture_db
            slot_s = self._slot_s
            for k in range(
                math.floor((s - inter.duration_s[1]) / slot_s), math.floor(e / slot_s) + 1
            ):
                for b in self._slot(k):
                    if b.start_s >= e:
                        break
                    if b.end_s > s and rssi - b.power_dbm < capture:
                        item = (max(s, b.start_s), min(e, b.end_s), b.power_dbm, INTERFERENCE)
                        if harm is None:
                            harm = [item]
                        else:
                            harm.append(item)
        if harm is None:
            return None, None
        locked = s + self._header_s
        header_hits = [h for h in harm if h[0] < locked]
        if header_hits:
            return max(header_hits, key=lambda h: h[2])[3], None
        return None, [(h[0], h[1]) for h in harm]

    def _garble(self, buf: bytearray, tx: _Tx, stretches: list[tuple[float, float]]) -> None:
        """Replace the bytes on the air during ``stretches`` by noise (always a change)."""
        data_start = tx.start + self._header_s
        n = len(buf)
        hit: set[int] = set()
        for a, b in stretches:
            first = max(0, int((a - data_start) / self._byte_s))
            last = min(n, math.ceil((b - data_start) / self._byte_s))
            hit.update(range(first, last))
        if not hit:
            return
        noise = b""
        block = 0
        while len(noise) < n:
            noise += hashlib.blake2b(
                b"garble/%d/%d" % (tx.seq, block), key=self._key, digest_size=64
            ).digest()
            block += 1
        for i in hit:
            buf[i] ^= noise[i] % 255 + 1

    def _prune(self, until_s: float) -> None:
        """Forget what no frame still to come can overlap."""
        floor = until_s
        for tx in self._queue:
            if tx.start < floor:
                floor = tx.start
        for tx in self._new:
            if tx.start < floor:
                floor = tx.start
        if self._air:
            self._air = [a for a in self._air if a.end > floor]
        inter = self.config.interference
        if inter is not None and len(self._slots) > 8:
            keep = math.floor((floor - inter.duration_s[1]) / self._slot_s)
            for k in [k for k in self._slots if k < keep]:
                del self._slots[k]


def _hits(windows: list[tuple[float, float]], start: float, end: float) -> bool:
    return any(start < hi and end > lo for lo, hi in windows)


def _normal(u1: float, u2: float) -> float:
    """A standard normal from two uniforms in [0, 1) (Box-Muller)."""
    return math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(_TWO_PI * u2)
