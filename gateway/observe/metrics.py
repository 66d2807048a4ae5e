"""Prometheus metrics for ``GET /metrics``: per instance, summed over its workers.

Under gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` (set before the workers fork) switches prometheus_client
to its multiprocess mode: each worker writes its values to memory-mapped files and a scrape merges
them. Without it the values live in a private registry of this process. Label values are bounded:
configured service names (else ``other``), the seven forwarded methods (else ``OTHER``), status
codes (100-599, else ``other``) and classes, cache results and breaker outcomes.

What is known at scrape time is read then, never on the request path (:class:`ScrapeCollector`):
build info, the cache's entries and bytes, and the ``process_*`` metrics of every live worker,
labelled by ``pid`` (``metrics_processes``: read from ``/proc``, so one scrape covers the whole instance). The format
follows the scraper's ``Accept``: OpenMetrics when asked for, else the Prometheus text format.

A request's counters and histograms are not written as it ends: each worker adds them up in a plain
dict (histogram observations already sorted into their buckets) and writes the sums when the stats
flusher runs, every half second, and before it answers a scrape itself. In multiprocess mode every
value written is a locked write to a memory-mapped file, and the four of a request cost more than
the rest of a cache hit; a scrape may so miss the last half second of other workers' requests.
"""

from __future__ import annotations

import atexit
import bisect
import logging
import os
import platform
import threading
import weakref
from collections.abc import Iterator, Mapping
from typing import Any, TypedDict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector
from prometheus_client import values as prometheus_values
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from gateway import __version__
from gateway.config.settings import Settings
from gateway.observe.metrics_processes import process_families
from gateway.observe.sources import Breakers
from gateway.observe.stats_report import RATE_LIMIT_EVENTS
from gateway.observe.upstreams import UpstreamMetrics
from gateway.redis.link import RedisLink

log = logging.getLogger("gateway.metrics")

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CACHE_RESULTS = frozenset({"hit", "miss", "stale", "revalidated", "bypass"})
CACHE_EVENTS = CACHE_RESULTS | {"coalesced", "upstream_call"}
LOOKUPS = frozenset({"hit", "miss", "stale", "revalidated"})  # a BYPASS was never looked up
STATE_VALUE = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2}
OUTCOMES = ("success", "failure", "timeout", "reject")
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BUCKET_SLOTS = len(REQUEST_BUCKETS) + 1  # the last one is +Inf


class ServiceTotals(TypedDict):
    """One service's running totals over the instance's workers (see :meth:`Metrics.history_totals`)."""

    req: float
    err: float
    hit: float
    lookup: float
    le: dict[str, float]
    trans: dict[str, float]
    state: str


def _flush_at_exit(metrics: weakref.ref[Metrics]) -> None:
    alive = metrics()
    if alive is not None:
        alive.flush()


def add_observations(histogram: Histogram, total: float, counts: list[float]) -> None:
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
    """The gateway's Prometheus metrics, fed by the same hooks as :class:`gateway.observe.stats.GatewayStats`."""

    def __init__(self, settings: Settings, link: RedisLink | None = None) -> None:
        self.settings = settings
        self.multiprocess = multiprocess_enabled()
        self.registry = CollectorRegistry()
        self.breakers: Breakers | None = None  # read for states at scrape time (given once it exists)
        self.stats: Any = None  # gateway.observe.stats.GatewayStats: other workers' in-flight counts, cache size
        # label key -> (requests, request duration, its cache event or None, upstream duration, upstream calls)
        self._children: dict[tuple[str, str, str, str, str],
                             tuple[Counter, Histogram, Counter | None, Histogram, Counter]] = {}
        # label key -> [requests, upstream calls, request sum, upstream sum, *request buckets, *upstream buckets]
        self._pending: dict[tuple[str, str, str, str, str], list[float]] = {}
        self._pending_calls: dict[tuple[str, str], int] = {}  # (service, outcome) -> breaker calls
        self._pending_limits: dict[tuple[str, str], int] = {}  # (service, event) -> rate limit events
        self._pending_lock = threading.Lock()
        atexit.register(_flush_at_exit, weakref.ref(self))  # a stopping worker's last sums
        r = self.registry
        self.requests = Counter("gateway_requests", "Proxied requests answered, by status code and class.",
                                ["service", "method", "code", "status_class", "cache"], registry=r)
        self.in_flight = InFlight()  # read at scrape time, with the other workers' published counts
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
        self.breaker_calls = Counter("gateway_breaker_calls",
                                     "Calls through a circuit breaker by outcome: success, failure (5xx, refused, "
                                     "cut short; timeouts apart), timeout, reject (refused by an open circuit).",
                                     ["service", "outcome"], registry=r)
        self.service_up = Gauge("gateway_service_up", "Last active health check passed (1) or failed (0).",
                                ["service"], registry=r, multiprocess_mode="livemax")
        self.cache_events = Counter("gateway_cache_events", "Cache results and events.", ["event"], registry=r)
        self.rate_limit_events = Counter("gateway_rate_limit_events",
                                         "Rate limiting: requests refused over a limit (limited), and requests "
                                         "decided while Redis was unreachable (redis_down_allowed, _refused, _local).",
                                         ["service", "event"], registry=r)
        for name, service in settings.services.items():
            if service.rate_limit is not None:
                for event in RATE_LIMIT_EVENTS:
                    self.rate_limit_events.labels(name, event)
        for name in settings.services:
            self.breaker_rejects.labels(name)
            for outcome in OUTCOMES:
                self.breaker_calls.labels(name, outcome)
        self._outcomes: dict[tuple[str, str], Counter] = {}
        self.upstream = UpstreamMetrics(settings, r)  # retries, and attempts and ejections per target
        self.scrape = ScrapeCollector(self)
        if not self.multiprocess:
            self.registry.register(self.scrape)
        for event in CACHE_EVENTS:
            self.cache_events.labels(event)

    def _service(self, name: str) -> str:
        return name if name in self.settings.services else "other"

    def observe_request(self, service: str, method: str, status: int, cache: str | None,
                        duration_s: float, upstream_s: float | None) -> None:
        """Count one proxied request (written to the metric values by :meth:`flush`)."""
        result = cache.lower() if cache and cache.lower() in CACHE_RESULTS else "none"
        klass = status // 100
        valid = 1 <= klass <= 5
        key = (self._service(service), method if method in METHODS else "OTHER",
               str(status) if valid else "other", f"{klass}xx" if valid else "other", result)
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
        """Write what the request hooks added up since the last flush into the metric values."""
        with self._pending_lock:
            pending, self._pending = self._pending, {}
            calls, self._pending_calls = self._pending_calls, {}
            limits, self._pending_limits = self._pending_limits, {}
        self.upstream.flush()
        for (service, event), count in limits.items():
            self.rate_limit_events.labels(self._service(service), event if event in RATE_LIMIT_EVENTS
                                          else "other").inc(count)
        for key, sums in pending.items():
            children = self._children.get(key)
            if children is None:
                result = key[4]
                # labels() costs microseconds; the label sets are bounded, so their children are kept.
                children = self._children[key] = (
                    self.requests.labels(*key), self.request_duration.labels(key[0], result),
                    self.cache_events.labels(result) if result != "none" else None,
                    self.upstream_duration.labels(key[0]), self.cache_events.labels("upstream_call"),
                )
            requests, duration, result_event, upstream, upstream_event = children
            requests.inc(sums[0])
            add_observations(duration, sums[2], sums[4:4 + BUCKET_SLOTS])
            if result_event is not None:
                result_event.inc(sums[0])
            if sums[1]:
                add_observations(upstream, sums[3], sums[4 + BUCKET_SLOTS:])
                upstream_event.inc(sums[1])
        for (service, outcome), count in calls.items():
            if outcome == "reject":
                self.breaker_rejects.labels(self._service(service)).inc(count)
            child = self._outcomes.get((service, outcome))
            if child is None:
                child = self._outcomes[(service, outcome)] = self.breaker_calls.labels(
                    self._service(service), outcome if outcome in OUTCOMES else "failure")
            child.inc(count)

    def cache_event(self, event: str) -> None:
        """Count a cache event (``coalesced``, ``upstream_call``, ...)."""
        self.cache_events.labels(event if event in CACHE_EVENTS else "other").inc()

    def breaker_transition(self, service: str, old: str, new: str) -> None:
        """Count a state change and move the state gauge."""
        service = self._service(service)
        self.breaker_transitions.labels(service, old, new).inc()
        self.breaker_state.labels(service).set(STATE_VALUE.get(new, 0))

    def breaker_reject(self, service: str) -> None:
        """Count a call refused by an open circuit (written by :meth:`flush`)."""
        self.breaker_call(service, "reject")

    def breaker_call(self, service: str, outcome: str) -> None:
        """Count one call through a breaker by its outcome (``success``, ``failure``, ``timeout``, ``reject``)."""
        key = (service, outcome)
        with self._pending_lock:
            self._pending_calls[key] = self._pending_calls.get(key, 0) + 1

    def rate_limit_event(self, service: str, event: str) -> None:
        """Count a rate limiting event (written by :meth:`flush`)."""
        key = (service, event)
        with self._pending_lock:
            self._pending_limits[key] = self._pending_limits.get(key, 0) + 1

    def publish_breaker_states(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        """Set the state gauge from breaker snapshots (``{service: {"state": ...}}``)."""
        for name, snap in states.items():
            self.breaker_state.labels(self._service(name)).set(STATE_VALUE.get(str(snap.get("state")), 0))

    def set_service_up(self, service: str, up: bool) -> None:
        """Record the result of an active health check."""
        self.service_up.labels(self._service(service)).set(1 if up else 0)

    def refresh_breaker_states(self) -> None:
        """Set the state gauge from the breakers themselves.

        Transitions seen by other workers (or instances, with Redis), or an OPEN turning HALF_OPEN by
        time alone, fire no listener here: the state is read when it is wanted.
        """
        registry = self.breakers
        if registry is None:
            return
        states = {}
        for name in self.settings.services:
            if name in registry:
                try:
                    states[name] = {"state": registry[name].state}
                except Exception:  # a breaker that cannot be read must not fail the caller
                    continue
        self.publish_breaker_states(states)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition in the format ``accept`` asks for (OpenMetrics or Prometheus text) and its content type."""
        self.refresh_breaker_states()
        self.flush()
        encoder, content_type = choose_encoder(accept or "")
        if self.multiprocess:
            merged = CollectorRegistry()
            MultiProcessCollector(merged)  # type: ignore[no-untyped-call]  # prometheus_client leaves it untyped
            merged.register(self.scrape)
            return encoder(merged), content_type
        return encoder(self.registry), content_type

    def history_totals(self) -> dict[str, ServiceTotals]:
        """Per service, this instance's running totals (summed over its workers) that the stats history samples.

        ``req`` answered requests, ``err`` 5xx answers, ``hit`` cache hits, ``lookup`` cache lookups
        (HIT, MISS, STALE, REVALIDATED: the base of every hit rate), ``le`` the cumulative duration
        histogram by bucket bound, ``trans`` breaker transitions by ``"FROM>TO"``, ``state`` the
        breaker's state now.
        """
        self.refresh_breaker_states()
        self.flush()  # this worker's own sums; its siblings' are at most a flush interval behind
        wanted = (self.requests, self.request_duration, self.breaker_transitions, self.breaker_state)
        if self.multiprocess:
            families = list(MultiProcessCollector(None).collect())  # type: ignore[no-untyped-call]  # untyped
        else:
            families = [family for metric in wanted for family in metric.collect()]
        totals = {name: ServiceTotals(req=0.0, err=0.0, hit=0.0, lookup=0.0, le={}, trans={}, state="CLOSED")
                  for name in self.settings.services}
        states = {value: state for state, value in STATE_VALUE.items()}
        for family in families:
            for sample in family.samples:
                entry = totals.get(sample.labels.get("service", ""))
                if entry is None:
                    continue
                labels, value = sample.labels, sample.value
                if sample.name == "gateway_requests_total":
                    entry["req"] += value
                    if labels.get("status_class") == "5xx":
                        entry["err"] += value
                    if labels.get("cache") in LOOKUPS:
                        entry["lookup"] += value
                        if labels["cache"] == "hit":
                            entry["hit"] += value
                elif sample.name == "gateway_request_duration_seconds_bucket":
                    entry["le"][labels["le"]] = entry["le"].get(labels["le"], 0.0) + value
                elif sample.name == "gateway_breaker_transitions_total" and value:
                    key = f"{labels.get('from')}>{labels.get('to')}"
                    entry["trans"][key] = entry["trans"].get(key, 0.0) + value
                elif sample.name == "gateway_breaker_state":
                    entry["state"] = states.get(int(value), "CLOSED")
        return totals


class InFlight:
    """This worker's proxied requests being answered now: a plain counter, no lock, no file write.

    Under gevent a worker's greenlets share one thread, so ``+= 1`` is not interleaved. The stats
    flusher publishes the value with the worker's snapshot; a scrape adds the other workers' up.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        """A proxied request started."""
        self.value += 1

    def dec(self) -> None:
        """A proxied request's answer is done (or dropped)."""
        self.value -= 1


class ScrapeCollector:
    """Metrics read when scraped: build info, cache size, and each live worker's process metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.platform = PlatformCollector(registry=None)

    def collect(self) -> Iterator[Metric]:
        """Yield the scrape-time families (each part skipped if it cannot be read)."""
        info = GaugeMetricFamily("gateway_build_info", "The gateway's version and Python; always 1.",
                                 labels=["version", "python_version", "python_implementation"])
        info.add_metric([__version__, platform.python_version(), platform.python_implementation()], 1)
        yield info
        yield from self.platform.collect()
        stats = self.metrics.stats
        elsewhere = getattr(stats, "in_flight_elsewhere", None)
        others = elsewhere() if callable(elsewhere) else 0
        yield GaugeMetricFamily("gateway_requests_in_flight", "Proxied requests being answered now (other workers' "
                                "counts at most a second old).", value=self.metrics.in_flight.value + others)
        yield from self._cache_size()
        yield from process_families(self.metrics.multiprocess)

    def _cache_size(self) -> Iterator[Metric]:
        stats = self.metrics.stats
        size = getattr(stats, "cache_size", None)
        if not callable(size):
            return
        try:
            entries, used = size()
        except Exception:  # the cache's trouble must not fail the scrape
            log.exception("cache size unreadable at scrape")
            return
        if entries is not None:
            yield GaugeMetricFamily("gateway_cache_entries", "Responses stored in the cache now (this instance's "
                                    "workers, or the shared Redis store).", value=entries)
        if used is not None:
            yield GaugeMetricFamily("gateway_cache_bytes", "Bytes the cache holds now (memory store: entry sizes; "
                                    "Redis: the server's used_memory).", value=used)
