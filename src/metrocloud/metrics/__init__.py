"""Per-component metrics in the Prometheus text format (see :mod:`.exporter`)."""

from metrocloud.metrics.exporter import (
    ComponentMetrics,
    MetricsServer,
    ProcessCollector,
    serve_metrics,
)

__all__ = ["ComponentMetrics", "MetricsServer", "ProcessCollector", "serve_metrics"]
