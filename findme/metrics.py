"""Prometheus metrics and the one-line-per-request access log."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from findme.services import AppState

logger = logging.getLogger("findme.access")

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
JOB_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)


class Metrics:
    """One registry per app, so several apps (tests, workers) never share counters."""

    def __init__(self, *, scrape_token: str | None = None) -> None:
        # A bearer token that grants /metrics and nothing else, for Prometheus (None: admins only).
        self.scrape_token = scrape_token
        self.registry = CollectorRegistry()
        self.http_latency = Histogram(
            "findme_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "findme_job_duration_seconds",
            "Job run time by kind and outcome",
            ["kind", "outcome"],
            buckets=JOB_BUCKETS_S,
            registry=self.registry,
        )
        # Read from the database by the /metrics route just before rendering.
        self.scraped: dict[str, float] = {}

    def observe_job(self, kind: str, outcome: str, seconds: float) -> None:
        self.job_duration.labels(kind, outcome).observe(seconds)

    def watch_state(self, state: AppState) -> None:
        """Figures read at scrape time: queue depth, stored faces and matches, caches."""
        self.registry.register(_StateCollector(state, self))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, state: AppState, metrics: Metrics) -> None:
        self._state = state
        self._metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, value in self._metrics.scraped.items():
            yield GaugeMetricFamily(f"findme_{name}", name.replace("_", " "), value=value)
        ratio = GaugeMetricFamily(
            "findme_cache_hit_ratio", "Cache hit ratio by cache", labels=["cache"]
        )
        for cache, stats in self._state.caches.stats().items():
            ratio.add_metric([cache], stats["hit_rate"])
        yield ratio
        if self._state.pipeline is not None:
            yield GaugeMetricFamily(
                "findme_workers_active", "Jobs running in this process", self._state.pipeline.active
            )


class AccessLog:
    """ASGI middleware: latency histogram by route template and one log line per request."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            self.metrics.http_latency.labels(scope["method"], route, str(status)).observe(elapsed)
            principal = scope.get("state", {}).get("principal")
            logger.info(
                "%s %s %d %.1f ms",
                scope["method"],
                scope["path"],
                status,
                elapsed * 1000,
                extra={
                    "action": "http_request",
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "user_id": getattr(principal, "id", None),
                },
            )


def _route_template(scope: Scope) -> str:
    """The route's path template, so /api/photo/1 and /api/photo/2 share one series.

    The router records the route it chose in the scope: no second matching pass per request.
    """
    route = scope.get("route")
    return "unmatched" if route is None else str(getattr(route, "path", scope["path"]))
