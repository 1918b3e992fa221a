"""Prometheus metrics (`serve --metrics`, `create_app(..., metrics=True)`): prometheus-client,
imported only when metrics are on.

Three families, every label from a small fixed set (event names, error codes, route
templates, service names), never a user or a value a client chose:

- `accounts_events_total{event, service, code}`: the server's events (logins by service and
  outcome, refreshes, reuse detections, two-factor and passkey changes, ...), counted by a
  listener; resume events are left out (they are every authenticated request, which the
  request metrics count without a listener on the hot path).
- `accounts_errors_total{route, code}`: every error answer by its stable code (rate-limit
  refusals are `RateLimited`, store outages `StoreUnavailable`).
- `accounts_request_duration_seconds{route, method, status}`: latency by route.

With several worker processes, prometheus-client's multiprocess mode keeps the values in
files under `PROMETHEUS_MULTIPROC_DIR` (set by `serve --workers` before the workers start), and
a scrape of any worker adds up all of them.
"""

from __future__ import annotations

import os
from typing import get_args

from starlette.requests import Request
from starlette.responses import Response

from ..hooks import EventName, HookEvent
from ..server import AccountsServer
from .observe import ROUTE_KEY, RequestRecord

__all__ = ["MULTIPROCESS_ENV", "Metrics"]

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Not counted: resume events are every authenticated request (the request metrics count
#: those), and `validate_login` listeners decide a login (one that answers nothing vetoes).
_NOT_COUNTED = frozenset({"resume_session_success", "resume_session_error", "validate_login"})
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The metrics of one app, in a registry of its own (no process-wide state)."""

    def __init__(self, server: AccountsServer) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self._registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "accounts_events",
            "Server events: logins by service and outcome, refreshes, reuse, MFA changes.",
            ["event", "service", "code"],
            registry=self._registry,
        )
        self.errors = Counter(
            "accounts_errors",
            "Error answers by stable code.",
            ["route", "code"],
            registry=self._registry,
        )
        self.latency = Histogram(
            "accounts_request_duration_seconds",
            "Time to answer a request, by route template.",
            ["route", "method", "status"],
            buckets=_BUCKETS,
            registry=self._registry,
        )
        for name in get_args(EventName):
            if name not in _NOT_COUNTED:
                server.on(name, self._count)

    def _count(self, event: HookEvent) -> None:
        code = event.error.code if event.error is not None else ""
        self.events.labels(event.name, event.service or "", code).inc()

    def observe(self, record: RequestRecord) -> None:
        self.latency.labels(record.route, record.method, str(record.status)).observe(record.seconds)
        if record.error_code:
            self.errors.labels(record.route, record.error_code).inc()

    async def endpoint(self, request: Request) -> Response:
        """The Prometheus text format; with workers, the sum over every process."""
        request.scope[ROUTE_KEY] = "/metrics"
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = self._registry
        if os.environ.get(MULTIPROCESS_ENV):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
