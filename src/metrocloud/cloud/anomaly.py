"""Anomaly detection: watches every cloud component and says green, yellow or red.

Every ``interval_s`` the service scrapes each component's metrics (``GET /metrics``, see
:mod:`metrocloud.metrics`), asks the broker how far each durable consumer has come, and hands
one :class:`~metrocloud.detection.Observation` to the detector
(:mod:`metrocloud.detection`): a baseline learned over the training window, robust z-scores
per metric, a joint outlier model, and the red rules (a component that does not answer, a
consumer that stalls, memory far beyond the baseline). A state machine with hysteresis turns
the findings into each component's state; every change goes to the logbook as an ``anomaly``
event with the metrics that caused it, which is where the authority's verification monitor
reads the state from.

Options (``--option KEY=VALUE`` or the ``[options]`` table of a configuration file):
``rules`` a TOML file of detector settings (``docs/anomaly-rules.md``); ``interval_s`` and
``training_s`` override the file's.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import Gauge

from metrocloud.bus.subjects import CONSUMERS
from metrocloud.cloud.runtime import TRANSIENT, Service
from metrocloud.core.events import AnomalyState, anomaly_event
from metrocloud.detection import (
    ConsumerProgress,
    Detector,
    DetectorConfig,
    Level,
    Observation,
    Scrape,
    StateMachine,
    Transition,
    derive,
    load_rules,
    parse_scrape,
    software_context,
)

_log = logging.getLogger(__name__)

STATES: dict[Level, AnomalyState] = {Level.GREEN: "green", Level.YELLOW: "yellow", Level.RED: "red"}
OVERRIDES = ("interval_s", "training_s")
"""Detector settings an option may override."""


def consumer_component(durable: str) -> str:
    """The service that pulls from ``durable`` (``storage-readings`` -> ``storage``)."""
    return durable.split("-", 1)[0]


def detector_config(options: dict[str, str]) -> DetectorConfig:
    """The detector's settings: the ``rules`` file (or the defaults), then the overrides."""
    config = load_rules(Path(options["rules"])) if "rules" in options else DetectorConfig()
    given = {key: float(options[key]) for key in OVERRIDES if key in options}
    if not given:
        return config
    return DetectorConfig.model_validate({**config.model_dump(), **given})


class Anomaly(Service):
    name = "anomaly"
    role = "anomaly"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config = detector_config(self.options)
        self.detector = Detector(self.config)
        self.machine = StateMachine(self.config)
        self.progress = ConsumerProgress()
        self._previous: dict[str, Scrape] = {}
        self._trained = False
        self._preloaded = False
        self._training_since = 0.0
        self.level = Gauge(
            "metrocloud_anomaly_level",
            "Each component's state: 0 green, 1 yellow, 2 red.",
            ["component"],
            registry=self.metrics.registry,
        )
        self.training = Gauge(
            "metrocloud_anomaly_training",
            "1 while the baseline is being learned.",
            registry=self.metrics.registry,
        )

    def targets(self) -> dict[str, str]:
        """Process name -> metrics URL of every cloud component (this one's own included)."""
        found = self.data.cluster().get("metrics", {})
        return {str(k): str(v) for k, v in dict(found).items()}

    async def serve(self) -> None:
        targets = self.targets()
        _log.info("watching %d components every %.1f s", len(targets), self.config.interval_s)
        async with httpx.AsyncClient(timeout=max(1.0, self.config.interval_s)) as http:
            while not self.stopping:
                started = time.monotonic()
                try:
                    with self.metrics.step("anomaly:round"):
                        await self.round(http, targets)
                except TRANSIENT as exc:  # the broker or the logbook is busy: next round
                    _log.warning("anomaly round failed: %s", exc)
                left = self.config.interval_s - (time.monotonic() - started)
                if left > 0:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), left)

    async def round(self, http: httpx.AsyncClient, targets: dict[str, str]) -> None:
        """One observation: scrape, ask the broker, detect, log what changed."""
        scraped = await asyncio.gather(*(self.scrape(http, n, u) for n, u in targets.items()))
        now = time.monotonic()
        features: dict[str, float] = {}
        down: set[str] = set()
        for name, scrape in zip(targets, scraped, strict=True):
            if scrape is None:
                down.add(name)
                continue
            features.update(derive(self._previous.get(name), scrape))
            self._previous[name] = scrape
        features.update(await self.consumer_backlog(now))
        stalled: dict[str, float] = {}
        for durable, seconds in self.progress.stalled(now).items():
            component = consumer_component(durable)
            stalled[component] = max(seconds, stalled.get(component, 0.0))
        observation = Observation(
            time=now,
            features=features,
            down=frozenset(down),
            stalled=stalled,
            context=software_context(self._previous.values()),
        )
        assessment = self.detector.observe(observation)
        if assessment.training and not self._preloaded:
            await self.preload(now)
        self.training.set(1 if assessment.training else 0)
        if self._trained and assessment.training:
            await self.log_system("retraining", {"features": float(len(features))})
        if not self._trained and not assessment.training:
            await self.log_system("baseline-learned", {"features": float(len(features))})
        self._trained = not assessment.training
        for transition in self.machine.update(assessment):
            await self.log_transition(transition)
        for component, level in self.machine.levels.items():
            self.level.labels(component).set(int(level))

    async def preload(self, now: float) -> None:
        """Import the joint model's library halfway through training: at its end the burst
        of disk reads would show in this process's own metrics as an anomaly, and a cloud
        that never finishes training (a short test) never pays for it."""
        self._training_since = self._training_since or now
        if not self.config.joint:
            self._preloaded = True
        elif now - self._training_since >= self.config.training_s / 2:
            await asyncio.to_thread(importlib.import_module, "sklearn.ensemble")
            self._preloaded = True

    async def scrape(self, http: httpx.AsyncClient, name: str, url: str) -> Scrape | None:
        """Component ``name``'s metrics now; None when it does not answer well."""
        try:
            response = await http.get(url)
            response.raise_for_status()
            return parse_scrape(name, response.text, time.monotonic())
        except (httpx.HTTPError, ValueError) as exc:
            _log.info("scrape of %s failed: %s", name, exc)
            return None

    async def consumer_backlog(self, now: float) -> dict[str, float]:
        """Each durable consumer's backlog as the broker sees it (``<service>/pending:<durable>``;
        it replaces the service's own figure, which a stalled service cannot update)."""
        assert self.js is not None
        found: dict[str, float] = {}
        for spec in CONSUMERS:
            info = await self.js.consumer_info(spec.stream, spec.durable)
            pending = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
            floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
            self.progress.update(spec.durable, pending, floor, now)
            found[f"{consumer_component(spec.durable)}/pending:{spec.durable}"] = float(pending)
        return found

    async def log_transition(self, transition: Transition) -> None:
        metrics: dict[str, float] = {}
        for cause in transition.causes:
            metrics.update(cause.metrics())
        _log.warning(
            "%s: %s -> %s by %s %s",
            transition.component,
            transition.previous.label,
            transition.level.label,
            transition.rule,
            metrics,
        )
        await self.log_event(
            anomaly_event(
                self.name,
                transition.component,
                STATES[transition.previous],
                STATES[transition.level],
                metrics,
                transition.rule,
            )
        )

    async def log_system(self, rule: str, metrics: dict[str, float]) -> None:
        """An event about the detector itself (a baseline learned, say), under its own name:
        it leaves every component's state, its own included, as it was."""
        state = STATES[self.machine.levels.get(self.name, Level.GREEN)]
        await self.log_event(anomaly_event(self.name, self.name, state, state, metrics, rule))


__all__ = ["Anomaly", "Level", "consumer_component", "detector_config"]
