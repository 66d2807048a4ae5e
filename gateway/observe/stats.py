"""Gateway-wide request, cache and breaker statistics for ``/stats/*``.

The hot path only adds to in-process counters under a short lock. A background flusher (a daemon
thread; a greenlet under gevent) publishes them every half second — to the worker's snapshot file in
the instance's run directory and, with Redis, as deltas into per-second hashes — so whichever worker
answers ``/stats/*`` reads figures for every worker (and every instance) at most a second old.

Decisions:

* Files of workers that died are still read: their requests happened, so their window buckets count
  until they age out and their cumulative counters keep counting (a worker restart loses no history);
  only their breaker *state* is ignored once their file is a few seconds old.
* Without Redis every worker has its own breaker; the state reported is the worst one among live
  workers (OPEN > HALF_OPEN > CLOSED), with that worker's ``opened_at``/``next_attempt_at``.
* Redis unreachable: readers fall back to this instance's files and writers keep their deltas; a read never fails.

Here: the hooks, the flusher and the ``/stats/*`` answers. What a worker counts and keeps is
``stats_tally``, where snapshots go ``stats_share``, how a reader folds other workers' files
``stats_merge``, and the figures ``stats_report``.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from gateway.clock import Clock, system_clock
from gateway.config.settings import Settings
from gateway.observe import stats_merge as merge
from gateway.observe.instance import private_run_dir, reset_after_fork
from gateway.observe.inventory import describe_rate_limit
from gateway.observe.metrics import Metrics
from gateway.observe.sources import Breakers, CallOutcome
from gateway.observe.stats_history import StatsHistory
from gateway.observe.stats_report import (
    breaker_report,
    breaker_state_fields,
    cache_report,
    rate_limit_counts,
    window_fields,
    with_state,
)
from gateway.observe.stats_share import (
    BreakerFields,
    Buckets,
    Counts,
    FileShare,
    RedisShare,
    Snapshot,
    StoreSize,
    add_counts,
    encode_snapshot,
    service_fields,
    sum_window,
)
from gateway.observe.stats_tally import Books, Tally
from gateway.observe.upstreams import target_states, upstream_report
from gateway.redis.link import RedisLink, StoreUnavailable

log = logging.getLogger("gateway.stats")

CACHE_WINDOW = 300  # seconds of /stats/cache history
FLUSH_INTERVAL = 0.5
RATE_LIMIT_FAMILY = "rl/"  # cumulative counters "rl/<service>|<event>": a breaker reset leaves them alone


class GatewayStats:
    """Counts requests, cache results and breaker calls, and answers for the whole gateway."""

    def __init__(self, settings: Settings, link: RedisLink | None = None, clock: Clock = system_clock,
                 run_dir: str | None = None, *, flush_interval: float = FLUSH_INTERVAL, metrics: Any = None,
                 history: Any = None) -> None:
        self.settings = settings
        self.link = link
        self.clock = clock
        self.flush_interval = flush_interval
        self.metrics: Metrics | None = metrics  # told every event
        self.history: StatsHistory | None = history  # sampled after each flush
        self.breakers: Breakers | None = None  # read for states and held rejects (given once it exists)
        self.cache: Any = None  # the response cache, read for its size (given once it exists)
        self.upstream: Any = None  # the upstream client, read for its targets' states (given once it exists)
        self.run_dir = run_dir or settings.run_dir or private_run_dir()
        windows = [s.breaker.rolling_window for s in settings.services.values()] or [settings.breaker.rolling_window]
        self.breaker_history = int(max(windows)) + 2
        self._states: dict[str, str] = {}
        self._new_worker()
        reset_after_fork(self, GatewayStats._new_worker)  # a child must not publish as its parent

    def _new_worker(self) -> None:
        """Start with empty books under a fresh worker identity (at construction and after a fork)."""
        self.worker_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()  # guards starting the flusher
        self._flush_lock = threading.Lock()  # one flush at a time (flusher thread or a reader)
        self._files = FileShare(self.run_dir, self.worker_id)
        self._redis = RedisShare(self.link, CACHE_WINDOW, self.breaker_history) if self.link else None
        self._tally = Tally()  # what the hooks added since the last flush (the hot path)
        self._books = Books(CACHE_WINDOW, self.breaker_history)  # what the flusher keeps and publishes
        self._resets_seen = self._files.resets()  # a new worker has nothing from before any reset
        self._last_write = 0.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- hot path ---------------------------------------------------------------------------------

    def record_request(self, service: str, method: str, status: int, cache: str | None,
                       duration_s: float, upstream_s: float | None) -> None:
        """Count one fully answered proxied request."""
        self._tally.request(int(self.clock()), cache, int(duration_s * 1_000_000), upstream_s is not None)
        if self.metrics is not None:
            self.metrics.observe_request(service, method, status, cache, duration_s, upstream_s)

    def record_cache(self, event: str) -> None:
        """Count a cache event: ``coalesced`` (a waiter took a leader's response) or ``upstream_call``.

        ``upstream_call`` is for calls no recorded request accounts for (a background refresh);
        a request's own upstream call is counted by :meth:`record_request` (``upstream_s``).
        """
        self._tally.cache_event(int(self.clock()), event)
        if self.metrics is not None:
            self.metrics.cache_event(event)

    def record_rate_limit(self, service: str, event: str) -> None:
        """Count a rate limiting event: ``limited`` (a 429) or ``redis_down_allowed``/``_refused``/``_local``."""
        self._tally.count(f"{RATE_LIMIT_FAMILY}{service}|{event}")
        if self.metrics is not None:
            self.metrics.rate_limit_event(service, event)

    def count(self, key: str) -> None:
        """Add one to the cumulative counter ``key`` (kept since start, summed over workers and instances)."""
        self._tally.count(key)

    def on_call(self, service: str, outcome: CallOutcome, latency_s: float) -> None:
        """Breaker listener: a protected call completed."""
        name = outcome.name
        self._tally.call(int(self.clock()), service, name, latency_s * 1000)
        if self.metrics is not None:
            self.metrics.breaker_call(service, name.lower())

    def on_reject(self, service: str) -> None:
        """Breaker listener: a call was refused by an open circuit."""
        self._tally.count(f"{service}|rej")
        if self.metrics is not None:
            self.metrics.breaker_reject(service)

    def on_state_change(self, service: str, old: str, new: str) -> None:
        """Breaker listener: a breaker changed state."""
        self._states[service] = new
        if self.metrics is not None:
            self.metrics.breaker_transition(service, old, new)

    # -- publishing -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background flusher (the gateway starts it in the serving worker, never at import)."""
        if self._thread is not None or self.flush_interval <= 0 or self._stop.is_set():
            return
        with self._lock:
            if self._thread is not None:
                return
            self._thread = thread = threading.Thread(target=self._run, name="gateway-stats", daemon=True)
        thread.start()

    def _run(self) -> None:
        stop = self._stop
        while not stop.wait(self.flush_interval):
            try:
                self.flush()
            except Exception:  # the flusher must outlive any one bad flush
                log.exception("stats flush failed")

    def close(self) -> None:
        """Stop the flusher after a last flush (tests, shutdown)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)
        self.flush()

    def flush(self) -> None:
        """Publish what was counted since the last flush (file always, Redis when configured)."""
        if self.metrics is not None:
            self.metrics.flush()  # before the snapshot: once the stats show a request, so do the metrics
        with self._flush_lock:
            cache, breaker, cum = self._tally.take()
            now = self.clock()
            self._apply_resets()
            self._books.add(cache, breaker, cum, now)
            # Embedded mode: every worker has its own breakers, so each publishes their states.
            states = self._breaker_states() if self.link is None else {}
            targets = target_states(self.upstream)
            changed = bool(cache or breaker or cum)
            if changed or now - self._last_write >= 1.0 or now < self._last_write:
                self._files.write(self._encode(now, states, targets))
                self._last_write = now
            if self._redis is not None:
                self._push(cache, breaker, cum, now)
            if self.metrics is not None and states:
                self.metrics.publish_breaker_states(states)
            if self.metrics is not None and targets:
                self.metrics.upstream.publish(targets)
        if self.history is not None:
            try:
                self.history.maybe_sample()
            except Exception:  # the history is for the charts; it must never fail a flush or a read
                log.exception("stats history sample failed")
        if self.link is not None:
            self._push_held_rejects()

    def _push_held_rejects(self) -> None:
        """Rejects this worker answered itself (holding an OPEN answer) reach the shared breaker's counters."""
        registry = self.breakers
        if registry is None:
            return
        for name in self.settings.services:
            push = getattr(registry[name], "push_held", None) if name in registry else None
            if push is not None:
                try:
                    push()
                except Exception:  # counters must never break the flusher
                    log.exception("pushing held rejects of %s failed", name)

    def _push(self, cache: Buckets, breaker: Buckets, cum: Counts, now: float) -> None:
        assert self._redis is not None
        if not self._books.hold(cache, breaker, cum):
            return
        try:
            self._redis.push(*self._books.unsent)
        except StoreUnavailable:
            self._books.expire_unsent(now)
            return
        self._books.sent()

    def _apply_resets(self) -> None:
        """Apply breaker resets made by other workers of this instance."""
        for service, generation in self._files.resets().items():
            if generation > self._resets_seen.get(service, 0):
                self._books.forget(service)
                self._resets_seen[service] = generation

    def _encode(self, now: float, states: Mapping[str, BreakerFields],
                targets: Mapping[str, Any] | None = None) -> dict[str, Any]:
        # Embedded mode: each worker's cache is its own, so each publishes its size to be summed.
        store = self._store_size() if self.link is None else None
        in_flight = self.metrics.in_flight.value if self.metrics is not None else 0
        books = self._books
        if targets is None:
            targets = target_states(self.upstream)
        return encode_snapshot(pid=os.getpid(), written_at=now, cache=books.cache, breaker=books.breaker,
                               cumulative=books.cumulative, resets_seen=self._resets_seen, breakers=states,
                               store=store, in_flight=in_flight, targets=targets)

    def _breaker_states(self) -> dict[str, BreakerFields]:
        """This worker's breaker states (its own in embedded mode)."""
        registry = self.breakers
        states: dict[str, BreakerFields] = {}
        for name in self.settings.services:
            if registry is not None and name in registry:
                snap = registry[name].snapshot()
                states[name] = {k: snap.get(k) for k in ("state", "opened_at", "next_attempt_at")}
            elif name in self._states:
                states[name] = {"state": self._states[name], "opened_at": None, "next_attempt_at": None}
        return states

    def reset_breaker(self, service: str) -> None:
        """Admin reset: clear ``service``'s cumulative counters and window, gateway-wide."""
        self.flush()
        with self._flush_lock:
            self._resets_seen[service] = self._files.bump_reset(service)
            self._books.forget(service)
            self._files.write(self._encode(self.clock(), self._breaker_states() if self.link is None else {}))
        if self._redis is not None:
            now = int(self.clock())
            try:
                self._redis.reset(service, window_fields(service), now - self.breaker_history, now + 1)
            except StoreUnavailable:
                log.warning("breaker stats reset of %s not applied in Redis (unreachable)", service)

    # -- reading ----------------------------------------------------------------------------------

    def _gathered(self, family: str, first: int, last: int) -> tuple[Buckets, list[Snapshot], bool]:
        """Buckets of ``family`` for the whole gateway, the worker snapshots read, and whether from Redis."""
        self.flush()
        if self._redis is not None:
            try:
                return self._redis.read(family, first, last), [], True
            except StoreUnavailable:
                pass
        others = self._files.others()
        own = self._books.cache if family == "c" else self._books.breaker
        return merge.window_buckets(own, others, self._files.resets(), family, first, last), others, False

    def cache_stats(self) -> dict[str, Any]:
        """``/stats/cache``: the last five minutes, rolling, plus the store's size now."""
        now = int(self.clock())
        buckets, others, _ = self._gathered("c", now - CACHE_WINDOW + 1, now)
        c = sum_window(buckets, now - CACHE_WINDOW + 1, now)
        out = cache_report(c, CACHE_WINDOW)
        size = self._store_size()
        if size is not None:
            out["keys"], out["memory_used_bytes"] = self._instance_size(size, others)
        return out

    def cache_size(self) -> tuple[int | None, int | None]:
        """Entries and bytes of the cache now: the shared store's, or the sum of this instance's workers'."""
        size = self._store_size()
        if size is None:
            return None, None
        return self._instance_size(size, self._files.others() if self.link is None else [])

    def in_flight_elsewhere(self) -> int:
        """Proxied requests the other live workers of this instance are answering (as last published)."""
        return merge.in_flight(self._files.others(), self.clock())

    def _instance_size(self, size: StoreSize, others: list[Snapshot]) -> tuple[int | None, int | None]:
        """The shared store's size (with Redis), or the sum of every live worker's embedded cache."""
        if self.link is not None:
            return size.get("keys"), size.get("memory_used_bytes")
        return merge.instance_size(size, others, self.clock())

    def _store_size(self) -> StoreSize | None:
        """``keys`` and ``memory_used_bytes`` of this worker's cache (shared with Redis), if there is one."""
        snapshot = getattr(self.cache, "snapshot", None)
        if not callable(snapshot):
            return None
        try:
            size = snapshot() or {}
        except Exception:  # the cache's own trouble must not break the stats page
            log.exception("cache snapshot failed")
            return None
        return {"keys": size.get("keys"), "memory_used_bytes": size.get("memory_used_bytes")}

    def breaker_stats(self, registry: Breakers | None = None) -> dict[str, Any]:
        """``/stats/circuit-breakers`` for every configured service."""
        registry = registry if registry is not None else self.breakers
        now = self.clock()
        last = int(now)
        buckets, others, from_redis = self._gathered("b", last - self.breaker_history + 1, last)
        cumulative = self._cumulative(others, from_redis)
        services: dict[str, Any] = {}
        for name, service in self.settings.services.items():
            window = service.breaker.rolling_window
            first = min(last, int(now - window) + 1)
            w = service_fields(sum_window(buckets, first, last), name)
            entry = breaker_report(w, service_fields(cumulative, name), window)
            services[name] = with_state(entry, self._state_of(name, registry, others, now), self.link is not None)
        return {"services": services}

    def rate_limit_stats(self) -> dict[str, Any]:
        """``/stats/rate-limits``: each rate-limited service's settings and its events since start."""
        self.flush()
        others = self._files.others() if self._redis is None else []
        cumulative = self._cumulative(others, self._redis is not None)
        store = "redis" if self.link is not None else "memory (per worker)"
        services: dict[str, Any] = {}
        for name, service in self.settings.services.items():
            described = describe_rate_limit(service)  # None: not rate limited
            if described is not None:
                counts = service_fields(cumulative, RATE_LIMIT_FAMILY + name)
                services[name] = {**described, "store": store, **rate_limit_counts(counts)}
        return {"services": services}

    def upstream_stats(self) -> dict[str, Any]:
        """``/stats/upstreams``: retries gateway-wide, and each target as this instance's live workers see it."""
        self.flush()
        others = self._files.others()
        cumulative = self._cumulative([] if self._redis is not None else others, self._redis is not None)
        views = [target_states(self.upstream)]
        views += [o["targets"] for o in others if merge.is_live(o, self.clock()) and o["targets"]]
        return upstream_report(self.settings, cumulative, views)

    def _cumulative(self, others: list[Snapshot], from_redis: bool) -> Counts:
        """The gateway's cumulative counters: Redis's plus ours not yet sent, or every file of the instance."""
        if from_redis and self._redis is not None:
            try:
                total = self._redis.cumulative()
                add_counts(total, self._books.unsent[2])  # ours, not yet in Redis
                return total
            except StoreUnavailable:
                others = self._files.others()
        return merge.cumulative_counts(self._books.cumulative, others, self._files.resets())

    def _state_of(self, name: str, registry: Breakers | None, others: list[Snapshot],
                  now: float) -> dict[str, Any]:
        """State fields of one breaker: the registry's, or the worst live worker's in embedded mode."""
        best: dict[str, Any] = {}
        if registry is not None and name in registry:
            try:
                snap = registry[name].snapshot()
            except Exception:
                log.exception("breaker snapshot failed")
                snap = {}
            best = breaker_state_fields(snap)
        elif name in self._states:
            best = {"state": self._states[name]}
        return merge.worst_state(name, best, others, now) if self.link is None else best

