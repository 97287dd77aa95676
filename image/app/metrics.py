"""Prometheus metrics: the gateway's traffic per model, and node gauges from the status probes.

One registry per app (created in create_app, never at import), so two apps in one test
process never share counters. Node gauges are read from the connectivity monitor's latest
probes at scrape time: a scrape never causes an SSH round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter("spark_control_requests", "Gateway requests by model, endpoint and status",
                                ["model", "endpoint", "status"], registry=registry)
        self.errors = Counter("spark_control_errors", "Failed gateway requests by model and who failed",
                              ["model", "endpoint", "source"], registry=registry)
        self.latency = Histogram("spark_control_request_duration_seconds", "Whole request duration",
                                 ["model", "endpoint"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.ttft = Histogram("spark_control_time_to_first_token_seconds", "Time to the first streamed chunk",
                              ["model", "endpoint"], buckets=_TTFT_BUCKETS, registry=registry)
        self.chunks = Counter("spark_control_stream_chunks", "Streamed chunks relayed (about one token each)",
                              ["model"], registry=registry)
        self.tokens = Counter("spark_control_tokens", "Tokens reported by upstream usage",
                              ["model", "kind"], registry=registry)
        self.in_flight = Gauge("spark_control_requests_in_flight", "Requests being relayed now", ["model"],
                               registry=registry)
        self.retries = Counter("spark_control_upstream_retries",
                               "Requests sent to another replica after a failed connect", ["model", "upstream"],
                               registry=registry)
        self._routes: dict[tuple[str, str], RouteMetrics] = {}

    def route(self, model: str, endpoint: str) -> RouteMetrics:
        """The children for one (model, endpoint), looked up once: `labels()` takes a lock and
        validates its arguments on every call, which the gateway would pay several times a request.
        Only for models the gateway routed to (a bounded set), never for names clients made up."""
        route = self._routes.get((model, endpoint))
        if route is None:
            route = self._routes[(model, endpoint)] = RouteMetrics(self, model, endpoint)
        return route


class RouteMetrics:
    __slots__ = ("_metrics", "_model", "_endpoint", "_requests", "_errors", "_tokens", "latency", "ttft", "chunks",
                 "in_flight")

    def __init__(self, metrics: GatewayMetrics, model: str, endpoint: str) -> None:
        self._metrics, self._model, self._endpoint = metrics, model, endpoint
        self._requests: dict[str, Any] = {}
        self._errors: dict[str, Any] = {}
        self._tokens: dict[str, Any] = {}
        self.latency = metrics.latency.labels(model, endpoint)
        self.ttft = metrics.ttft.labels(model, endpoint)
        self.chunks = metrics.chunks.labels(model)
        self.in_flight = metrics.in_flight.labels(model)

    def requests(self, status: str):
        child = self._requests.get(status)
        if child is None:
            child = self._requests[status] = self._metrics.requests.labels(self._model, self._endpoint, status)
        return child

    def tokens(self, kind: str):
        child = self._tokens.get(kind)
        if child is None:
            child = self._tokens[kind] = self._metrics.tokens.labels(self._model, kind)
        return child

    def error(self, source: str):
        child = self._errors.get(source)
        if child is None:
            child = self._errors[source] = self._metrics.errors.labels(self._model, self._endpoint, source)
        return child


class NodeCollector(Collector):
    """Node gauges from the latest status probe of every node."""

    def __init__(self, latest: Callable[[], Iterable[dict[str, Any]]]) -> None:
        self._latest = latest

    def collect(self):
        up = GaugeMetricFamily("spark_control_node_up", "1 if the node answered its last probe", labels=["node"])
        mem_total = GaugeMetricFamily("spark_control_node_memory_total_bytes", "MemTotal (unified memory)",
                                      labels=["node"])
        mem_avail = GaugeMetricFamily("spark_control_node_memory_available_bytes", "MemAvailable", labels=["node"])
        gpu_util = GaugeMetricFamily("spark_control_node_gpu_utilization_percent", "GPU utilization",
                                     labels=["node", "gpu"])
        gpu_temp = GaugeMetricFamily("spark_control_node_gpu_temperature_celsius", "GPU temperature",
                                     labels=["node", "gpu"])
        gpu_power = GaugeMetricFamily("spark_control_node_gpu_power_watts", "GPU power draw", labels=["node", "gpu"])
        for node in self._latest():
            name = node["name"]
            up.add_metric([name], 1.0 if node.get("reachable") else 0.0)
            memory = node.get("memory") or {}
            if memory.get("total_bytes") is not None:
                mem_total.add_metric([name], memory["total_bytes"])
                mem_avail.add_metric([name], memory["available_bytes"])
            for gpu in node.get("gpus") or []:
                labels = [name, str(gpu.get("index", 0))]
                for family, key in ((gpu_util, "utilization_percent"), (gpu_temp, "temperature_c"),
                                    (gpu_power, "power_draw_w")):
                    if gpu.get(key) is not None:
                        family.add_metric(labels, gpu[key])
        yield from (up, mem_total, mem_avail, gpu_util, gpu_temp, gpu_power)


def create_metrics(latest_node_status: Callable[[], Iterable[dict[str, Any]]]) -> GatewayMetrics:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(latest_node_status))
    return GatewayMetrics(registry)


def build_router() -> APIRouter:
    router = APIRouter(tags=["metrics"])

    @router.get("/metrics", summary="Prometheus metrics (text exposition format)")
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
