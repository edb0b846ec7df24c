"""From a component's metrics page to features: real expositions of ``prometheus_client``,
rates over two scrapes, latencies, and what a first scrape or a restart leaves out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from metrocloud.detection.features import (
    Scrape,
    derive,
    parse_scrape,
    sample_key,
    software_context,
    split_key,
)

IN = "legal.in.reading.*"
OUT = "legal.out.reading.*"


class Component:
    """A component's metrics, as the services expose them."""

    def __init__(self, name: str = "legal", version: str = "1.0.0") -> None:
        self.name = name
        self.registry = CollectorRegistry()
        r = self.registry
        self.cpu = Counter("metrocloud_process_cpu_seconds", "CPU", registry=r)
        self.rss = Gauge("metrocloud_process_resident_memory_bytes", "RSS", registry=r)
        self.fds = Gauge("metrocloud_process_open_fds", "fds", registry=r)
        self.sockets = Gauge("metrocloud_process_sockets", "sockets", registry=r)
        self.threads = Gauge("metrocloud_process_threads", "threads", registry=r)
        self.io_read = Counter("metrocloud_process_io_read_bytes", "read", registry=r)
        self.io_write = Counter("metrocloud_process_io_write_bytes", "write", registry=r)
        self.messages_in = Counter("metrocloud_messages_in", "in", ["subject"], registry=r)
        self.messages_out = Counter("metrocloud_messages_out", "out", ["subject"], registry=r)
        self.pending = Gauge("metrocloud_consumer_pending", "pending", ["durable"], registry=r)
        self.processing = Histogram("metrocloud_processing_seconds", "t", ["step"], registry=r)
        self.rejections = Counter("metrocloud_rejections", "rejected", ["reason"], registry=r)
        self.errors = Counter("metrocloud_errors", "errors", ["kind"], registry=r)
        info = Gauge(
            "metrocloud_software_info", "software", ["component", "version", "checksum"], registry=r
        )
        info.labels(name, version, "c0ffee").set(1)
        self.rss.set(100 * 1024 * 1024)
        self.fds.set(40)
        self.sockets.set(12)
        self.threads.set(8)
        self.pending.labels("legal").set(3)

    def scrape(self, time: float) -> Scrape:
        return parse_scrape(self.name, generate_latest(self.registry).decode(), time)


def busy(component: Component) -> None:
    """Two seconds of work: 0.5 s CPU, 10 readings in, 8 out, 4 processed, a rejection."""
    component.cpu.inc(0.5)
    component.io_read.inc(4096)
    component.io_write.inc(2048)
    component.messages_in.labels(IN).inc(10)
    component.messages_out.labels(OUT).inc(8)
    for seconds in (0.01, 0.02, 0.03, 0.06):
        component.processing.labels("legal").observe(seconds)
    component.rejections.labels("replay").inc()


def test_a_scrape_keeps_every_sample_under_its_canonical_key() -> None:
    component = Component()
    busy(component)
    scrape = component.scrape(10.0)
    assert scrape.component == "legal" and scrape.time == 10.0
    samples = scrape.samples
    assert samples["metrocloud_process_cpu_seconds_total"] == 0.5
    assert samples[f'metrocloud_messages_in_total{{subject="{IN}"}}'] == 10
    assert samples['metrocloud_processing_seconds_count{step="legal"}'] == 4
    assert samples['metrocloud_processing_seconds_sum{step="legal"}'] == pytest.approx(0.12)
    assert not any(key.endswith("_created") or "_created{" in key for key in samples)
    assert not any("_bucket" in key for key in samples)
    assert scrape.software == frozenset({("legal", "1.0.0", "c0ffee")})
    assert not any(key.startswith("metrocloud_software_info") for key in samples)


def test_the_first_scrape_gives_the_gauges_only() -> None:
    component = Component()
    busy(component)
    features = derive(None, component.scrape(0.0))
    assert features == {
        "legal/rss_mb": 100.0,
        "legal/fds": 40.0,
        "legal/sockets": 12.0,
        "legal/threads": 8.0,
        "legal/pending:legal": 3.0,
    }


def test_two_scrapes_give_rates_per_second_and_the_mean_latency() -> None:
    component = Component()
    busy(component)
    first = component.scrape(100.0)
    busy(component)
    component.errors.labels("ValueError").inc(3)  # a new kind counts from zero
    second = component.scrape(102.0)
    features = derive(first, second)
    assert features["legal/cpu"] == pytest.approx(0.25)
    assert features["legal/io_read_kbs"] == pytest.approx(2.0)
    assert features["legal/io_write_kbs"] == pytest.approx(1.0)
    assert features[f"legal/in:{IN}"] == pytest.approx(5.0)
    assert features[f"legal/out:{OUT}"] == pytest.approx(4.0)
    assert features["legal/rejections"] == pytest.approx(0.5)
    assert features["legal/errors"] == pytest.approx(1.5)
    assert features["legal/latency:legal"] == pytest.approx(0.03)
    assert features["legal/rss_mb"] == 100.0


def test_a_step_without_messages_in_between_has_no_latency() -> None:
    component = Component()
    busy(component)
    first = component.scrape(0.0)
    component.cpu.inc(0.1)
    features = derive(first, component.scrape(2.0))
    assert "legal/latency:legal" not in features
    assert features["legal/cpu"] == pytest.approx(0.05)
    assert features[f"legal/in:{IN}"] == 0.0
    assert features["legal/rejections"] == 0.0 and features["legal/errors"] == 0.0


def test_a_restarted_process_gives_no_rates_for_that_sample() -> None:
    before = Component()
    for _ in range(3):
        busy(before)
    first = before.scrape(0.0)
    after = Component()  # the process restarted: its counters start again at zero
    busy(after)
    features = derive(first, after.scrape(2.0))
    for name in ("cpu", "io_read_kbs", "io_write_kbs", f"in:{IN}", f"out:{OUT}", "rejections"):
        assert f"legal/{name}" not in features, name
    assert "legal/latency:legal" not in features
    assert features["legal/rss_mb"] == 100.0  # gauges stay


def test_rates_need_a_scrape_of_the_same_component_taken_earlier() -> None:
    legal, storage = Component("legal"), Component("storage")
    busy(legal)
    busy(storage)
    first = legal.scrape(5.0)
    busy(legal)
    assert "legal/cpu" not in derive(first, legal.scrape(5.0))
    assert "legal/cpu" not in derive(first, legal.scrape(4.0))
    assert "storage/cpu" not in derive(first, storage.scrape(7.0))


def test_non_finite_values_are_left_out() -> None:
    scrape = Scrape("legal", 0.0, {"metrocloud_process_open_fds": float("nan")})
    assert derive(None, scrape) == {}


@pytest.mark.parametrize(
    "text",
    ["hello world", "<html><body>Not Found</body></html>", 'metric{a="b"} notanumber', "{{{"],
)
def test_text_that_is_no_metrics_page_raises(text: str) -> None:
    with pytest.raises(ValueError, match="legal: not a Prometheus metrics page"):
        parse_scrape("legal", text, 0.0)


def test_the_software_context_is_the_union_of_all_scrapes() -> None:
    legal, tariff = Component("legal", "1.0.0"), Component("tariff-taf1", "2.1.0")
    context = software_context([legal.scrape(0.0), tariff.scrape(0.0), legal.scrape(2.0)])
    assert context == {("legal", "1.0.0", "c0ffee"), ("tariff-taf1", "2.1.0", "c0ffee")}
    assert software_context([]) == frozenset()


def test_sample_keys_sort_their_labels() -> None:
    assert sample_key("m", {}) == "m"
    assert sample_key("m", {"b": "2", "a": "1"}) == 'm{a="1",b="2"}'


@given(
    st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
    st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), st.text(max_size=12)),
)
def test_sample_keys_split_back_into_name_and_labels(name: str, labels: dict[str, str]) -> None:
    assert split_key(sample_key(name, labels)) == (name, labels)
