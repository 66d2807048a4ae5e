"""Prometheus metrics for ``GET /metrics``: per instance, summed over its workers.

Under gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` (set before the workers fork) switches prometheus_client
to its multiprocess mode: each worker writes its values to memory-mapped files and a scrape merges
them. Without it the values live in a private registry of this process. Label values are bounded:
configured service names (else ``other``), the seven forwarded methods (else ``OTHER``), status
classes and cache results.

A request's counters and histograms are not written as it ends: each worker adds them up in a plain
dict (histogram observations already sorted into their buckets) and writes the sums when the stats
flusher runs, every half second, and before it answers a scrape itself. In multiprocess mode every
value written is a locked write to a memory-mapped file, and the four of a request cost more than
the rest of a cache hit; a scrape may so miss the last half second of other workers' requests.
"""

from __future__ import annotations

import atexit
import bisect
import os
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as prometheus_values
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.config import Settings
from gateway.redis_link import RedisLink

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CACHE_RESULTS = frozenset({"hit", "miss", "stale", "revalidated", "bypass"})
CACHE_EVENTS = CACHE_RESULTS | {"coalesced", "upstream_call"}
STATE_VALUE = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2}
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BUCKET_SLOTS = len(REQUEST_BUCKETS) + 1  # the last one is +Inf


def _flush_at_exit(metrics: weakref.ref[Metrics]) -> None:
    alive = metrics()
    if alive is not None:
        alive.flush()


def add_observations(histogram: Any, total: float, counts: list[float]) -> None:
    """Add ``counts`` observations per bucket (``le`` order, +Inf last) summing to ``total`` to a histogram child.

    What ``Histogram.observe`` does for one value, done for many at once: prometheus_client keeps
    each bucket's own count (not cumulative) and the sum, in the bucket order of the histogram.
    """
    if not any(counts):
        return
    histogram._sum.inc(total)  # noqa: SLF001 - no public batch API; pinned version, covered by tests
    for index, count in enumerate(counts):
        if count:
            histogram._buckets[index].inc(count)  # noqa: SLF001


def multiprocess_enabled() -> bool:
    """Whether prometheus_client writes to ``PROMETHEUS_MULTIPROC_DIR`` in this process."""
    # The value class is chosen when prometheus_client is imported, so the variable must have been
    # set by then; checking both avoids reading empty files when it was set too late.
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")) and (
        prometheus_values.ValueClass is not prometheus_values.MutexValue
    )


class Metrics:
    """The gateway's Prometheus metrics, fed by the same hooks as :class:`gateway.stats.GatewayStats`."""

    def __init__(self, settings: Settings, link: RedisLink | None = None) -> None:
        self.settings = settings
        self.multiprocess = multiprocess_enabled()
        self.registry = CollectorRegistry()
        self._extensions: Mapping[str, Any] = {}
        self._children: dict[tuple[str, str, str, str], tuple[Any, ...]] = {}
        # label key -> [requests, upstream calls, request sum, upstream sum, *request buckets, *upstream buckets]
        self._pending: dict[tuple[str, str, str, str], list[float]] = {}
        self._pending_lock = threading.Lock()
        atexit.register(_flush_at_exit, weakref.ref(self))  # a stopping worker's last sums
        r = self.registry
        self.requests = Counter("gateway_requests", "Proxied requests answered.",
                                ["service", "method", "status_class", "cache"], registry=r)
        self.request_duration = Histogram("gateway_request_duration_seconds", "Time to answer a proxied request.",
                                          ["service", "cache"], buckets=REQUEST_BUCKETS, registry=r)
        self.upstream_duration = Histogram("gateway_upstream_duration_seconds",
                                           "Time to the upstream's response headers.", ["service"],
                                           buckets=REQUEST_BUCKETS, registry=r)
        # Embedded mode: each worker has its own breaker, the worst one counts ("max"). With Redis the
        # breaker is shared and the most recent reading of any worker is the truth.
        self.breaker_state = Gauge("gateway_breaker_state", "Circuit state: 0 closed, 1 half-open, 2 open.",
                                   ["service"], registry=r,
                                   multiprocess_mode="livemax" if link is None else "livemostrecent")
        self.breaker_transitions = Counter("gateway_breaker_transitions", "Circuit state changes.",
                                           ["service", "from", "to"], registry=r)
        self.breaker_rejects = Counter("gateway_breaker_rejects", "Calls refused by an open circuit.",
                                       ["service"], registry=r)
        self.service_up = Gauge("gateway_service_up", "Last active health check passed (1) or failed (0).",
                                ["service"], registry=r, multiprocess_mode="livemax")
        self.cache_events = Counter("gateway_cache_events", "Cache results and events.", ["event"], registry=r)
        for name in settings.services:
            self.breaker_rejects.labels(name)
        for event in CACHE_EVENTS:
            self.cache_events.labels(event)

    def init_app(self, app: Any) -> None:
        """Register as ``app.extensions["gateway.metrics"]`` (and feed from the stats, if present)."""
        app.extensions["gateway.metrics"] = self
        self._extensions = app.extensions
        stats = app.extensions.get("gateway.stats")
        if stats is not None and getattr(stats, "metrics", None) is None:
            stats.metrics = self

    def _service(self, name: str) -> str:
        return name if name in self.settings.services else "other"

    def observe_request(self, service: str, method: str, status: int, cache: str | None,
                        duration_s: float, upstream_s: float | None) -> None:
        """Count one proxied request (written to the metric values by :meth:`flush`)."""
        result = cache.lower() if cache and cache.lower() in CACHE_RESULTS else "none"
        klass = status // 100
        key = (self._service(service), method if method in METHODS else "OTHER",
               f"{klass}xx" if 1 <= klass <= 5 else "other", result)
        with self._pending_lock:
            sums = self._pending.get(key)
            if sums is None:
                sums = self._pending[key] = [0.0] * (4 + 2 * BUCKET_SLOTS)
            sums[0] += 1
            sums[2] += duration_s
            sums[4 + bisect.bisect_left(REQUEST_BUCKETS, duration_s)] += 1
            if upstream_s is not None:
                sums[1] += 1
                sums[3] += upstream_s
                sums[4 + BUCKET_SLOTS + bisect.bisect_left(REQUEST_BUCKETS, upstream_s)] += 1

    def flush(self) -> None:
        """Write what :meth:`observe_request` added up since the last flush into the metric values."""
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        for key, sums in pending.items():
            children = self._children.get(key)
            if children is None:
                result = key[3]
                # labels() costs microseconds; the label sets are bounded, so their children are kept.
                children = self._children[key] = (
                    self.requests.labels(*key), self.request_duration.labels(key[0], result),
                    self.cache_events.labels(result) if result != "none" else None,
                    self.upstream_duration.labels(key[0]), self.cache_events.labels("upstream_call"),
                )
            requests, duration, event, upstream, upstream_event = children
            requests.inc(sums[0])
            add_observations(duration, sums[2], sums[4:4 + BUCKET_SLOTS])
            if event is not None:
                event.inc(sums[0])
            if sums[1]:
                add_observations(upstream, sums[3], sums[4 + BUCKET_SLOTS:])
                upstream_event.inc(sums[1])

    def cache_event(self, event: str) -> None:
        """Count a cache event (``coalesced``, ``upstream_call``, ...)."""
        self.cache_events.labels(event if event in CACHE_EVENTS else "other").inc()

    def breaker_transition(self, service: str, old: str, new: str) -> None:
        """Count a state change and move the state gauge."""
        service = self._service(service)
        self.breaker_transitions.labels(service, old, new).inc()
        self.breaker_state.labels(service).set(STATE_VALUE.get(new, 0))

    def breaker_reject(self, service: str) -> None:
        """Count a call refused by an open circuit."""
        self.breaker_rejects.labels(self._service(service)).inc()

    def publish_breaker_states(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        """Set the state gauge from breaker snapshots (``{service: {"state": ...}}``)."""
        for name, snap in states.items():
            self.breaker_state.labels(self._service(name)).set(STATE_VALUE.get(str(snap.get("state")), 0))

    def set_service_up(self, service: str, up: bool) -> None:
        """Record the result of an active health check."""
        self.service_up.labels(self._service(service)).set(1 if up else 0)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        registry = self._extensions.get("gateway.breakers")
        if registry is not None:
            # Read the breakers at scrape time: transitions seen by other workers (or instances, with
            # Redis) or an OPEN turning HALF_OPEN by time alone fire no listener here.
            states = {}
            for name in self.settings.services:
                if name in registry:
                    try:
                        states[name] = {"state": registry[name].state}
                    except Exception:  # a breaker that cannot be read must not fail the scrape
                        continue
            self.publish_breaker_states(states)
        self.flush()
        if self.multiprocess:
            merged = CollectorRegistry()
            MultiProcessCollector(merged)
            return generate_latest(merged), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
