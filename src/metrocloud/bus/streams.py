"""JetStream streams and durable pull consumers of :mod:`.subjects`, and pulling from them.

:func:`ensure_streams` runs once at start-up as the ``admin`` user: it creates what is
missing and updates what drifted, and changes nothing when all is as specified, so it can
run at every start. Services never create anything: they bind to their durable consumer
with :func:`pull`, which needs only the ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>`` and
``$JS.ACK.<stream>.<durable>.>`` permissions that :mod:`.subjects` grants.

On a cluster (:mod:`.cluster`) ``ensure_streams(js, replicas=3)`` keeps every stream and
consumer on three nodes; an existing stream or consumer with another replica count is
scaled by an update (NATS moves the data), never kept as it was.
"""

from __future__ import annotations

import asyncio
import logging

from nats.aio.msg import Msg
from nats.errors import NoRespondersError
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
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

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

SCALE_TIMEOUT_S = 30.0
"""How long :func:`ensure_streams` waits for a stream to reach a new replica count."""

_NO_LEADER_PAUSE_S = 0.25

_RETENTION = {"limits": RetentionPolicy.LIMITS, "workqueue": RetentionPolicy.WORK_QUEUE}


def _ns(seconds: float | None) -> int:
    return round((seconds or 0.0) * 1_000_000_000)


def _check_replicas(replicas: int) -> None:
    if not 1 <= replicas <= 5:
        raise ConfigurationError(f"replicas must be 1 to 5 (JetStream's limit), got {replicas}")


def stream_config(spec: StreamSpec, replicas: int = 1) -> StreamConfig:
    """The nats-py configuration of one stream (file storage, ``replicas`` copies)."""
    _check_replicas(replicas)
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=_RETENTION[spec.retention],
        storage=StorageType.FILE,
        num_replicas=replicas,
        max_age=spec.max_age_s,
        duplicate_window=spec.duplicate_window_s,
        allow_direct=spec.allow_direct,
    )


def consumer_config(spec: ConsumerSpec, replicas: int = 1) -> ConsumerConfig:
    """The nats-py configuration of one durable pull consumer with explicit acks, its
    state kept on ``replicas`` nodes (as many as its stream's)."""
    _check_replicas(replicas)
    return ConsumerConfig(
        durable_name=spec.durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        filter_subject=spec.filter_subject,
        ack_wait=spec.ack_wait_s,
        max_deliver=spec.max_deliver,
        num_replicas=replicas,
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
    if (have.num_replicas or 1) != want.num_replicas:
        drift.append(f"num_replicas {have.num_replicas} -> {want.num_replicas}")
    return drift


def _replicas_refused(what: str, replicas: int, exc: APIError) -> ConfigurationError:
    """A clear error when the server cannot hold ``replicas`` copies (a single server, or
    fewer nodes than replicas)."""
    return ConfigurationError(
        f"{what} needs {replicas} replicas, which this NATS server refused: {exc.description} "
        f"(code {exc.err_code}); a single server holds one, a cluster at most one per node"
    )


async def _ensure_stream(js: JetStreamContext, spec: StreamSpec, replicas: int) -> StreamInfo:
    want = stream_config(spec, replicas)
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        _log.info(
            "creating stream %s on %s (%d replicas)",
            spec.name,
            ", ".join(spec.subjects),
            replicas,
        )
        try:
            return await js.add_stream(config=want)
        except APIError as exc:
            if replicas > 1:
                raise _replicas_refused(f"stream {spec.name}", replicas, exc) from exc
            raise
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
    rescale = (have.num_replicas or 1) != want.num_replicas
    try:
        info = await js.update_stream(
            config=have.evolve(
                subjects=want.subjects,
                max_age=want.max_age,
                duplicate_window=want.duplicate_window,
                allow_direct=want.allow_direct,
                num_replicas=want.num_replicas,
            )
        )
    except APIError as exc:
        if rescale:
            raise _replicas_refused(f"stream {spec.name}", replicas, exc) from exc
        raise
    return await _scaled(js, spec.name, replicas) if rescale else info


async def _scaled(
    js: JetStreamContext, name: str, replicas: int, timeout_s: float = SCALE_TIMEOUT_S
) -> StreamInfo:
    """Wait until stream ``name`` runs on ``replicas`` nodes: the cluster adds or drops
    peers after the update has been accepted, and refuses a consumer with more replicas
    than its stream has until then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        info = await js.stream_info(name)
        peers = 1 + len(info.cluster.replicas or []) if info.cluster is not None else 1
        if peers == replicas:
            return info
        if loop.time() > deadline:
            raise ConfigurationError(
                f"stream {name} runs on {peers} nodes {timeout_s:.0f} s after it was asked to "
                f"run on {replicas}"
            )
        await asyncio.sleep(0.05)


def _consumer_drift(have: ConsumerConfig, want: ConsumerConfig) -> tuple[list[str], list[str]]:
    """(drift that an update fixes, drift that needs the consumer recreated).

    A consumer made without a replica count (0, as before replicas were asked for) counts
    as one replica: on a single server that is what it has, and on a cluster it is given
    its count explicitly.
    """
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
    if (have.num_replicas or 1) != want.num_replicas:  # 0: the stream's, never scaled up
        editable.append(f"num_replicas {have.num_replicas} -> {want.num_replicas}")
    return editable, fixed


async def _ensure_consumer(js: JetStreamContext, spec: ConsumerSpec, replicas: int) -> ConsumerInfo:
    want = consumer_config(spec, replicas)
    try:
        info: ConsumerInfo = await js.consumer_info(spec.stream, spec.durable)
    except NotFoundError:
        _log.info("creating consumer %s.%s on %s", spec.stream, spec.durable, spec.filter_subject)
        try:
            return await js.add_consumer(spec.stream, config=want)
        except APIError as exc:
            if replicas > 1:
                what = f"consumer {spec.stream}.{spec.durable}"
                raise _replicas_refused(what, replicas, exc) from exc
            raise
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
        num_replicas=want.num_replicas,
    )
    return await js.add_consumer(spec.stream, config=updated)


async def ensure_streams(
    js: JetStreamContext,
    streams: tuple[StreamSpec, ...] = STREAMS,
    consumers: tuple[ConsumerSpec, ...] = CONSUMERS,
    *,
    replicas: int = 1,
) -> None:
    """Create or update every stream, then every durable consumer. Idempotent.

    Every stream and consumer is kept on ``replicas`` nodes: 1 on a single server, 3 on a
    3-node cluster (writes and deliveries go on while any one node is down). An existing
    one with another replica count is scaled by an update. Needs the JetStream API
    permissions of the ``admin`` role. Raises :class:`ConfigurationError` when an existing
    stream or consumer differs in a setting that NATS cannot change in place (retention,
    storage, ack or deliver policy), or when the server cannot hold ``replicas`` copies.
    """
    _check_replicas(replicas)
    for stream in streams:
        await _ensure_stream(js, stream, replicas)
    for consumer in consumers:
        await _ensure_consumer(js, consumer, replicas)
    if replicas > 1:  # services start next: let them find leaders to talk to
        for stream in streams:
            await _led(js, stream.name, None)
        for consumer in consumers:
            await _led(js, consumer.stream, consumer.durable)


async def _led(
    js: JetStreamContext, stream: str, durable: str | None, timeout_s: float = SCALE_TIMEOUT_S
) -> None:
    """Wait until the replicated stream (or its consumer ``durable``) has a leader."""
    what = f"stream {stream}" if durable is None else f"consumer {stream}.{durable}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        info: StreamInfo | ConsumerInfo
        if durable is None:
            info = await js.stream_info(stream)
        else:
            info = await js.consumer_info(stream, durable)
        cluster = info.cluster
        if cluster is not None and cluster.leader:
            return
        if loop.time() > deadline:
            raise ConfigurationError(f"{what} has no leader after {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


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
    """Fetch up to ``batch`` messages; an empty list when none came within ``timeout_s``.

    Also empty, after a short pause, while the consumer has no leader to answer (on a
    cluster: just created, or its leader's node went away and the others are electing a
    new one; the server answers 503, No Responders): the caller simply fetches again.
    """
    try:
        return await sub.fetch(batch, timeout=timeout_s)
    except (NatsTimeoutError, asyncio.TimeoutError):
        return []
    except (NoRespondersError, ServiceUnavailableError) as exc:
        _log.info("fetch: no consumer leader to answer (%r); fetching again", exc)
        await asyncio.sleep(min(timeout_s, _NO_LEADER_PAUSE_S))
        return []
