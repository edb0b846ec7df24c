"""The demo workload as a steady stream: one billing period after another.

``metrocloud demo`` bills one period of its meters and stops. Anomaly detection needs a cloud
that keeps working: :class:`SteadyWorkload` sends the next period of every meter (its
transmissions and closing, signed by the gateway) every ``pace_s`` seconds, pulls each
result through the display and verifies it, for as long as it runs. Time is compressed: a
billing period of ``days`` days every few seconds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from metrocloud.core.clock import BillingPeriod
from metrocloud.testbed.pipeline import Pipeline


@dataclass
class WorkloadStats:
    periods: int = 0
    """Billing periods sent."""
    verified: int = 0
    """Bills pulled, verified and equal to the plaintext reference."""
    failed: int = 0
    """Bills that were not (or did not come in time)."""
    seconds_per_period: list[float] = field(default_factory=list)


class SteadyWorkload:
    """Periods of ``pipeline``'s meters, one every ``pace_s`` seconds, from a thread."""

    def __init__(self, pipeline: Pipeline, pace_s: float = 5.0, result_timeout_s: float = 60.0):
        self.pipeline = pipeline
        self.pace_s = pace_s
        self.result_timeout_s = result_timeout_s
        self.stats = WorkloadStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def period(self, n: int) -> BillingPeriod:
        """The ``n``-th period after the pipeline's own (which the demo bills)."""
        cfg = self.pipeline.config
        return BillingPeriod.days(cfg.first_day + timedelta(days=cfg.days * n), cfg.days)

    def uploads(self, period: BillingPeriod) -> list[bytes]:
        """Every meter's signed messages of ``period`` (encrypted by the gateway)."""
        gateway = self.pipeline.gateway
        assert gateway is not None
        return [m for meter in self.pipeline.meter_ids for m in gateway.uploads(meter, period)]

    async def bill(self, period: BillingPeriod, messages: list[bytes] | None = None) -> None:
        """Send every meter's ``period`` (``messages`` if made already), verify every bill."""
        started = time.monotonic()
        await self.pipeline.send(self.uploads(period) if messages is None else messages)
        self.stats.periods += 1
        outcomes = await self.pipeline.collect(
            self.result_timeout_s, period=period, missing_ok=True
        )
        ok = sum(o.ok for o in outcomes)
        self.stats.verified += ok
        self.stats.failed += len(self.pipeline.customer_meter_ids) - ok
        self.stats.seconds_per_period.append(time.monotonic() - started)

    async def run(self, first: list[bytes] | None = None) -> None:
        """Bill period after period until :meth:`stop` (``first``: the first period's
        messages, made already)."""
        n = 1
        while not self._stop.is_set():
            started = time.monotonic()
            await self.bill(self.period(n), first if n == 1 else None)
            n += 1
            left = self.pace_s - (time.monotonic() - started)
            if left > 0:
                await asyncio.get_running_loop().run_in_executor(None, self._stop.wait, left)

    def start(self) -> None:
        """Run in a thread. The first period is encrypted here: OpenFHE's random generator
        hangs in a thread when the process has not used it on its main thread first."""
        first = self.uploads(self.period(1))

        def main() -> None:
            try:
                asyncio.run(self.run(first))
            except BaseException as exc:  # reported by stop()
                self._error = exc

        self._thread = threading.Thread(target=main, name="steady-workload", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 120.0) -> WorkloadStats:
        """Stop after the period in flight; re-raises what ended the thread early."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._error is not None:
            raise self._error
        return self.stats

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
