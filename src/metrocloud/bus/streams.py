"""JetStream streams and durable pull consumers of :mod:`.subjects`, and pulling from them.

:func:`ensure_streams` runs once at start-up as the ``admin`` user: it creates what is
missing and updates what drifted, and changes nothing when all is as specified, so it can
run at every start. Services never create anything: they bind to their durable consumer
with :func:`pull`, which needs only the ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>`` and
``$JS.ACK.<stream>.<durable>.>`` permissions that :mod:`.subjects` grants.
"""

from __future__ import annotations

import asyncio
import logging

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from metrocloud.bus.subjects import CONSUMERS, STREAMS, ConsumerSpec, StreamSpec
from metrocloud.core.errors import ConfigurationError

__all__ = [
    "PullSubscription",
    "consumer_config",
    "consumer_spec",
    "ensure_streams",
    "fetch",
    "pull",
    "stream_config",
]

_log = logging.getLogger(__name__)

PullSubscription = JetStreamContext.PullSubscription

_RETENTION = {"limits": RetentionPolicy.LIMITS, "workqueue": RetentionPolicy.WORK_QUEUE}


def _ns(seconds: float | None) -> int:
    return round((seconds or 0.0) * 1_000_000_000)


def stream_config(spec: StreamSpec) -> StreamConfig:
    """The nats-py configuration of one stream (file storage, one replica)."""
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=_RETENTION[spec.retention],
        storage=StorageType.FILE,
        num_replicas=1,
        max_age=spec.max_age_s,
        duplicate_window=spec.duplicate_window_s,
        allow_direct=spec.allow_direct,
    )


def consumer_config(spec: ConsumerSpec) -> ConsumerConfig:
    """The nats-py configuration of one durable pull consumer with explicit acks."""
    return ConsumerConfig(
        durable_name=spec.durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        filter_subject=spec.filter_subject,
        ack_wait=spec.ack_wait_s,
        max_deliver=spec.max_deliver,
    )


def consumer_spec(durable: str, consumers: tuple[ConsumerSpec, ...] = CONSUMERS) -> ConsumerSpec:
    """The consumer spec named ``durable``."""
    for spec in consumers:
        if spec.durable == durable:
            return spec
    known = ", ".join(c.durable for c in consumers)
    raise ConfigurationError(f"unknown consumer {durable!r}; known: {known}")


def _stream_drift(have: StreamConfig, want: StreamConfig) -> list[str]:
    drift = []
    if sorted(have.subjects or []) != sorted(want.subjects or []):
        drift.append(f"subjects {have.subjects} -> {want.subjects}")
    if _ns(have.max_age) != _ns(want.max_age):
        drift.append(f"max_age {have.max_age} -> {want.max_age}")
    if _ns(have.duplicate_window) != _ns(want.duplicate_window):
        drift.append(f"duplicate_window {have.duplicate_window} -> {want.duplicate_window}")
    if bool(have.allow_direct) != bool(want.allow_direct):
        drift.append(f"allow_direct {have.allow_direct} -> {want.allow_direct}")
    return drift


async def _ensure_stream(js: JetStreamContext, spec: StreamSpec) -> StreamInfo:
    want = stream_config(spec)
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        _log.info("creating stream %s on %s", spec.name, ", ".join(spec.subjects))
        return await js.add_stream(config=want)
    have = info.config
    fixed = []
    if have.retention != want.retention:
        fixed.append(f"retention {have.retention} (want {want.retention})")
    if have.storage != want.storage:
        fixed.append(f"storage {have.storage} (want {want.storage})")
    if fixed:
        raise ConfigurationError(
            f"stream {spec.name} exists with {', '.join(fixed)}, which cannot be changed in "
            "place; delete the stream (losing its messages) to recreate it"
        )
    drift = _stream_drift(have, want)
    if not drift:
        return info
    _log.warning("updating stream %s: %s", spec.name, "; ".join(drift))
    return await js.update_stream(
        config=have.evolve(
            subjects=want.subjects,
            max_age=want.max_age,
            duplicate_window=want.duplicate_window,
            allow_direct=want.allow_direct,
        )
    )


def _consumer_drift(have: ConsumerConfig, want: ConsumerConfig) -> tuple[list[str], list[str]]:
    """(drift that an update fixes, drift that needs the consumer recreated)."""
    editable, fixed = [], []
    if have.deliver_subject:
        fixed.append(f"push consumer delivering to {have.deliver_subject}")
    if have.ack_policy != want.ack_policy:
        fixed.append(f"ack_policy {have.ack_policy} (want {want.ack_policy})")
    if have.deliver_policy != want.deliver_policy:
        fixed.append(f"deliver_policy {have.deliver_policy} (want {want.deliver_policy})")
    if (have.filter_subject or "") != (want.filter_subject or "") or have.filter_subjects:
        editable.append(f"filter_subject {have.filter_subject} -> {want.filter_subject}")
    if _ns(have.ack_wait) != _ns(want.ack_wait):
        editable.append(f"ack_wait {have.ack_wait} -> {want.ack_wait}")
    if (have.max_deliver or -1) != (want.max_deliver or -1):
        editable.append(f"max_deliver {have.max_deliver} -> {want.max_deliver}")
    return editable, fixed


async def _ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> ConsumerInfo:
    want = consumer_config(spec)
    try:
        info: ConsumerInfo = await js.consumer_info(spec.stream, spec.durable)
    except NotFoundError:
        _log.info("creating consumer %s.%s on %s", spec.stream, spec.durable, spec.filter_subject)
        return await js.add_consumer(spec.stream, config=want)
    editable, fixed = _consumer_drift(info.config, want)
    if fixed:
        raise ConfigurationError(
            f"consumer {spec.stream}.{spec.durable} exists with {', '.join(fixed)}, which "
            "cannot be changed in place; delete the consumer to recreate it"
        )
    if not editable:
        return info
    _log.warning("updating consumer %s.%s: %s", spec.stream, spec.durable, "; ".join(editable))
    updated = info.config.evolve(
        filter_subject=want.filter_subject,
        filter_subjects=None,
        ack_wait=want.ack_wait,
        max_deliver=want.max_deliver,
    )
    return await js.add_consumer(spec.stream, config=updated)


async def ensure_streams(
    js: JetStreamContext,
    streams: tuple[StreamSpec, ...] = STREAMS,
    consumers: tuple[ConsumerSpec, ...] = CONSUMERS,
) -> None:
    """Create or update every stream, then every durable consumer. Idempotent.

    Needs the JetStream API permissions of the ``admin`` role. Raises
    :class:`ConfigurationError` when an existing stream or consumer differs in a setting
    that NATS cannot change in place (retention, storage, ack or deliver policy).
    """
    for stream in streams:
        await _ensure_stream(js, stream)
    for consumer in consumers:
        await _ensure_consumer(js, consumer)


async def pull(
    js: JetStreamContext, spec: ConsumerSpec | str, *, pending_msgs_limit: int = 4096
) -> JetStreamContext.PullSubscription:
    """Bind to an existing durable pull consumer (given by spec or durable name).

    Binding makes no JetStream API call, so it needs no permission beyond fetching
    (``$JS.API.CONSUMER.MSG.NEXT...``) and acking (``$JS.ACK...``); the fetched messages
    arrive on the connection's own inbox.
    """
    if isinstance(spec, str):
        spec = consumer_spec(spec)
    return await js.pull_subscribe_bind(
        durable=spec.durable, stream=spec.stream, pending_msgs_limit=pending_msgs_limit
    )


async def fetch(
    sub: JetStreamContext.PullSubscription, batch: int = 1, timeout_s: float = 1.0
) -> list[Msg]:
    """Fetch up to ``batch`` messages; an empty list when none came within ``timeout_s``."""
    try:
        return await sub.fetch(batch, timeout=timeout_s)
    except (NatsTimeoutError, asyncio.TimeoutError):
        return []
