"""From one component's ``/metrics`` page to the numbers the anomaly detector watches.

Every cloud component shows its counters and gauges in the Prometheus text format. A
:class:`Scrape` is one reading of such a page: each sample under a canonical key
(``name{label="value",...}``, labels sorted), and the software the component says it runs
(``metrocloud_software_info``). :func:`derive` turns two successive scrapes of the same
component into features named ``<component>/<feature>``:

* gauges, read as they are: ``rss_mb`` (resident memory in MiB), ``fds``, ``sockets``,
  ``threads``, ``pending:<durable>`` (messages a consumer has yet to handle);
* rates per second over the two scrapes: ``cpu`` (cores busy), ``io_read_kbs`` and
  ``io_write_kbs`` (KiB/s), ``in:<subject>`` and ``out:<subject>`` (messages/s per subject
  family), ``rejections`` and ``errors`` (all reasons or kinds together);
* ``latency:<step>``: the mean processing time of a step over the two scrapes (seconds),
  only when the step handled at least one message between them.

A rate needs an earlier scrape of the same component, taken earlier. A counter that went
down means the process restarted: that sample gives no rate for it, never a negative one.
A labelled series that is new since the earlier scrape counts from zero: the client
library creates it at its first increment.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

PREFIX = "metrocloud_"
SOFTWARE_INFO = "metrocloud_software_info"

CPU = "metrocloud_process_cpu_seconds_total"
RSS = "metrocloud_process_resident_memory_bytes"
IO_READ = "metrocloud_process_io_read_bytes_total"
IO_WRITE = "metrocloud_process_io_write_bytes_total"
MESSAGES_IN = "metrocloud_messages_in_total"
MESSAGES_OUT = "metrocloud_messages_out_total"
PENDING = "metrocloud_consumer_pending"
LATENCY_SUM = "metrocloud_processing_seconds_sum"
LATENCY_COUNT = "metrocloud_processing_seconds_count"
REJECTIONS = "metrocloud_rejections_total"
ERRORS = "metrocloud_errors_total"

GAUGES = {
    "fds": "metrocloud_process_open_fds",
    "sockets": "metrocloud_process_sockets",
    "threads": "metrocloud_process_threads",
}
"""Gauges taken over as they are: feature kind → metric name."""

MIB = 1024.0 * 1024.0
KIB = 1024.0

Software = tuple[str, str, str]
"""One running program: (component, version, checksum)."""

_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')
_SKIPPED_SUFFIXES = ("_created", "_bucket")


@dataclass(frozen=True)
class Scrape:
    """One reading of a component's metrics page at ``time`` (monotonic seconds)."""

    component: str
    time: float
    samples: dict[str, float] = field(default_factory=dict)
    software: frozenset[Software] = frozenset()


def sample_key(name: str, labels: Mapping[str, str]) -> str:
    """The canonical key of a sample: ``name{a="1",b="2"}`` with labels sorted by name."""
    if not labels:
        return name
    inner = ",".join(f'{label}="{_escape(labels[label])}"' for label in sorted(labels))
    return f"{name}{{{inner}}}"


def split_key(key: str) -> tuple[str, dict[str, str]]:
    """The metric name and labels of a canonical key (the reverse of :func:`sample_key`)."""
    name, brace, rest = key.partition("{")
    if not brace:
        return name, {}
    return name, {m.group(1): _unescape(m.group(2)) for m in _LABEL.finditer(rest)}


def parse_scrape(component: str, text: str, time: float) -> Scrape:
    """Read a metrics page in the text exposition format; ``ValueError`` if it is not one."""
    samples: dict[str, float] = {}
    software: set[Software] = set()
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == SOFTWARE_INFO:
                    software.add(_software(sample.labels))
                elif not sample.name.endswith(_SKIPPED_SUFFIXES):
                    samples[sample_key(sample.name, sample.labels)] = float(sample.value)
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise ValueError(f"{component}: not a Prometheus metrics page: {exc}") from None
    return Scrape(component, time, samples, frozenset(software))


def derive(previous: Scrape | None, current: Scrape) -> dict[str, float]:
    """The features of ``current``; rates and latencies also need ``previous``."""
    found = dict(_gauges(current))
    if previous is not None and _comparable(previous, current):
        found.update(_rates(previous, current))
    prefix = f"{current.component}/"
    return {prefix + name: value for name, value in found.items() if math.isfinite(value)}


def software_context(scrapes: Iterable[Scrape]) -> frozenset[Software]:
    """Every program the scraped components run: what a baseline belongs to."""
    found: set[Software] = set()
    for scrape in scrapes:
        found.update(scrape.software)
    return frozenset(found)


def _software(labels: Mapping[str, str]) -> Software:
    return (labels.get("component", ""), labels.get("version", ""), labels.get("checksum", ""))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _comparable(previous: Scrape, current: Scrape) -> bool:
    """Whether rates over the two scrapes mean anything: same component, time went on."""
    return previous.component == current.component and current.time > previous.time


def _series(scrape: Scrape, name: str) -> Iterator[tuple[str, float]]:
    """``(key, value)`` of every series of metric ``name``."""
    for key, value in scrape.samples.items():
        if key == name or key.startswith(name + "{"):
            yield key, value


def _label(key: str, label: str) -> str:
    return split_key(key)[1].get(label, "")


def _gauges(scrape: Scrape) -> Iterator[tuple[str, float]]:
    samples = scrape.samples
    if RSS in samples:
        yield "rss_mb", samples[RSS] / MIB
    for kind, name in GAUGES.items():
        if name in samples:
            yield kind, samples[name]
    for key, value in _series(scrape, PENDING):
        yield f"pending:{_label(key, 'durable')}", value


def _rates(previous: Scrape, current: Scrape) -> Iterator[tuple[str, float]]:
    dt = current.time - previous.time
    counters = (("cpu", CPU, 1.0), ("io_read_kbs", IO_READ, KIB), ("io_write_kbs", IO_WRITE, KIB))
    for kind, name, unit in counters:
        delta = _deltas(previous, current, name).get(name)
        if delta is not None:
            yield kind, delta / unit / dt
    for direction, name in (("in", MESSAGES_IN), ("out", MESSAGES_OUT)):
        for subject, delta in _by_label(_deltas(previous, current, name), "subject").items():
            if delta is not None:
                yield f"{direction}:{subject}", delta / dt
    for kind, name in (("rejections", REJECTIONS), ("errors", ERRORS)):
        total = _total(_deltas(previous, current, name))
        if total is not None:
            yield kind, total / dt
    yield from _latencies(previous, current)


def _deltas(previous: Scrape, current: Scrape, name: str) -> dict[str, float | None]:
    """Per series of counter ``name``, how much it grew; ``None`` where it went down.

    A labelled series missing from ``previous`` counts from zero; an unlabelled one
    missing there gives no growth (it is not known where it started).
    """
    before = dict(_series(previous, name))
    deltas: dict[str, float | None] = {}
    for key, now in _series(current, name):
        if key == name and key not in before:
            continue
        delta = now - before.get(key, 0.0)
        deltas[key] = delta if delta >= 0 else None
    return deltas


def _total(deltas: Mapping[str, float | None]) -> float | None:
    """The sum of the growths; ``None`` if any series went down."""
    total = 0.0
    for delta in deltas.values():
        if delta is None:
            return None
        total += delta
    return total


def _by_label(deltas: Mapping[str, float | None], label: str) -> dict[str, float | None]:
    """The growths summed per value of ``label``."""
    groups: dict[str, dict[str, float | None]] = {}
    for key, delta in deltas.items():
        groups.setdefault(_label(key, label), {})[key] = delta
    return {value: _total(group) for value, group in groups.items()}


def _latencies(previous: Scrape, current: Scrape) -> Iterator[tuple[str, float]]:
    sums = _by_label(_deltas(previous, current, LATENCY_SUM), "step")
    counts = _by_label(_deltas(previous, current, LATENCY_COUNT), "step")
    for step, count in counts.items():
        total = sums.get(step)
        if count is not None and count > 0 and total is not None:
            yield f"latency:{step}", total / count
