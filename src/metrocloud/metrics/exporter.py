"""A component's metrics in the Prometheus text format: its process, its messages, its work.

Every cloud process keeps one :class:`ComponentMetrics` and serves it on its metrics port
(``GET /metrics`` on 127.0.0.1, :func:`serve_metrics`). The anomaly detection service scrapes
them all; an operator's Prometheus may scrape them too. The names (all ``metrocloud_``):

==========================================  =========  ===============================
``process_cpu_seconds_total``               counter    user + system CPU of the process
``process_resident_memory_bytes``           gauge      resident set size
``process_open_fds`` / ``process_sockets``  gauge      open files, of them sockets
``process_threads``                         gauge      threads
``process_io_read_bytes_total`` / write     counter    bytes read from / written to disk
``messages_in_total{subject}``              counter    messages taken from the bus
``messages_out_total{subject}``             counter    messages handed to the bus
``consumer_pending{durable}``               gauge      messages still waiting for it
``processing_seconds{step}``                histogram  time per handled message / step
``rejections_total{reason}``                counter    inputs refused (and logged)
``errors_total{kind}``                      counter    handler failures, by exception
``software_info{component,version,...}``    gauge      the legally relevant code loaded
==========================================  =========  ===============================

Subjects are counted by family (``legal.in.reading.*``, see
:func:`metrocloud.bus.subjects.subject_family`), never per meter: the metrics say how
much flows, not whose readings.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from metrocloud.bus.subjects import subject_family

PREFIX = "metrocloud"
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Histogram buckets of ``processing_seconds``: from a storage insert to a TAF 3 read-out."""


def _socket_count(process: psutil.Process) -> int:
    """Open sockets of ``process``: on Linux counted among its file descriptors (cheap)."""
    if sys.platform.startswith("linux"):
        folder = f"/proc/{process.pid}/fd"
        count = 0
        for fd in os.listdir(folder):
            with contextlib.suppress(OSError):  # closed meanwhile
                count += os.readlink(f"{folder}/{fd}").startswith("socket:")
        return count
    return len(process.net_connections(kind="all"))


class ProcessCollector(Collector):
    """The process's system metrics, read with psutil at every scrape."""

    def __init__(self, pid: int | None = None) -> None:
        self.process = psutil.Process(pid)

    def collect(self) -> Iterable[Metric]:
        p = self.process
        with p.oneshot():
            cpu = p.cpu_times()
            yield _counter(
                "process_cpu_seconds", "User and system CPU time.", cpu.user + cpu.system
            )
            yield _gauge("process_resident_memory_bytes", "Resident memory.", p.memory_info().rss)
            yield _gauge("process_open_fds", "Open file descriptors.", p.num_fds())
            yield _gauge("process_sockets", "Open sockets.", _socket_count(p))
            yield _gauge("process_threads", "Threads.", p.num_threads())
            try:
                io = p.io_counters()
            except (psutil.AccessDenied, AttributeError):  # not readable in some containers
                return
            yield _counter("process_io_read_bytes", "Bytes read from storage.", io.read_bytes)
            yield _counter("process_io_write_bytes", "Bytes written to storage.", io.write_bytes)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, value=value)


class ComponentMetrics:
    """One process's metrics registry: system metrics and what the service counts."""

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if process:
            self.registry.register(ProcessCollector())
        r = self.registry
        self.messages_in = Counter(
            f"{PREFIX}_messages_in", "Messages taken from the bus.", ["subject"], registry=r
        )
        self.messages_out = Counter(
            f"{PREFIX}_messages_out", "Messages handed to the bus.", ["subject"], registry=r
        )
        self.pending = Gauge(
            f"{PREFIX}_consumer_pending",
            "Messages waiting for a consumer.",
            ["durable"],
            registry=r,
        )
        self.processing = Histogram(
            f"{PREFIX}_processing_seconds",
            "Time to handle one message, or one step of a tariff program.",
            ["step"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.rejections = Counter(f"{PREFIX}_rejections", "Inputs refused.", ["reason"], registry=r)
        self.errors = Counter(
            f"{PREFIX}_errors", "Failures while handling a message.", ["kind"], registry=r
        )
        self.key_bytes = Gauge(
            f"{PREFIX}_evaluation_keys_bytes",
            "Serialized evaluation keys installed (with per-customer overhead).",
            registry=r,
        )
        self.key_evictions = Counter(
            f"{PREFIX}_evaluation_key_evictions",
            "Customers whose evaluation keys were dropped to stay within the budget.",
            registry=r,
        )
        self.software = Gauge(
            f"{PREFIX}_software_info",
            "The legally relevant software this process loaded.",
            ["component", "version", "checksum"],
            registry=r,
        )

    def received(self, subject: str) -> None:
        self.messages_in.labels(subject_family(subject)).inc()

    def sent(self, subject: str) -> None:
        self.messages_out.labels(subject_family(subject)).inc()

    def rejected(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def failed(self, exc: BaseException) -> None:
        self.errors.labels(type(exc).__name__).inc()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the block as one ``step`` (also when it raises)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.processing.labels(name).observe(time.perf_counter() - started)

    def evaluation_keys(self, held_bytes: int, evicted: int) -> None:
        self.key_bytes.set(held_bytes)
        self.key_evictions.inc(evicted)

    def loaded(self, component: str, version: str, checksum: str) -> None:
        self.software.labels(component, version, checksum).set(1)


@dataclass
class MetricsServer:
    """``GET /metrics`` of one registry, served from a daemon thread."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    @property
    def url(self) -> str:
        host = str(self.server.server_address[0])
        where = f"[{host}]" if ":" in host else host  # an IPv6 address in brackets
        return f"http://{where}:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(
    metrics: ComponentMetrics, port: int = 0, host: str = "127.0.0.1"
) -> MetricsServer:
    """Serve ``metrics`` on ``host:port`` (0: a free port); loopback unless told otherwise."""
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    return MetricsServer(server, thread)
