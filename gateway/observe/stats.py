"""Gateway-wide request, cache and breaker statistics for ``/stats/*``.

The hot path only adds to in-process counters under a short lock. A background flusher (a daemon
thread; a greenlet under gevent) publishes them every half second — to the worker's snapshot file in
the instance's run directory and, with Redis, as deltas into per-second hashes — so whichever worker
answers ``/stats/*`` reads figures for every worker (and every instance) at most a second old.

Decisions:

* Files of workers that died are still read: their requests happened, so their window buckets count
  until they age out and their cumulative breaker counters keep counting (a gunicorn worker restart
  does not lose history). Only their breaker *state* is ignored once their file is a few seconds old.
* Without Redis every worker has its own breaker; the state reported is the worst one among live
  workers (OPEN > HALF_OPEN > CLOSED), with that worker's ``opened_at``/``next_attempt_at``.
* Redis unreachable: readers fall back to this instance's files and writers keep their deltas until
  Redis is back; a read never fails.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
import weakref
from collections.abc import Mapping
from typing import Any

from gateway.clock import Clock, system_clock
from gateway.config.settings import Settings
from gateway.observe.stats_report import LATENCY_BOUNDS_MS, breaker_report, cache_report, latency_bin
from gateway.observe.stats_share import (
    FRESH_SECONDS,
    Buckets,
    Counts,
    FileShare,
    RedisShare,
    add_buckets,
    add_counts,
    drop_service,
    encode_snapshot,
    private_run_dir,
    service_fields,
    sum_window,
)
from gateway.redis.link import RedisLink, StoreUnavailable

log = logging.getLogger("gateway.stats")

CACHE_WINDOW = 300  # seconds of /stats/cache history
FLUSH_INTERVAL = 0.5
CACHE_RESULTS = {"HIT": "hit", "MISS": "miss", "STALE": "stale", "REVALIDATED": "revalidated", "BYPASS": "bypass"}
CACHE_EVENTS = {"coalesced": "coalesced", "upstream_call": "upstream"}
STATE_RANK = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2}
RATE_LIMIT_FAMILY = "rl/"  # cumulative counters "rl/<service>|<event>": a breaker reset leaves them alone
# The breaker's own figures shown next to its state (latency stays with the stats' histograms).
COUNTED = ("fires", "successes", "failures", "timeouts", "rejects", "failure_rate")


class GatewayStats:
    """Counts requests, cache results and breaker calls, and answers for the whole gateway."""

    def __init__(self, settings: Settings, link: RedisLink | None = None, clock: Clock = system_clock,
                 run_dir: str | None = None, *, flush_interval: float = FLUSH_INTERVAL, metrics: Any = None,
                 history: Any = None) -> None:
        self.settings = settings
        self.link = link
        self.clock = clock
        self.flush_interval = flush_interval
        self.metrics: Any = metrics  # gateway.observe.metrics.Metrics, told every event
        self.history: Any = history  # gateway.observe.stats_history.StatsHistory, sampled after each flush
        self.breakers: Any = None  # the breaker registry, read for states and held rejects (given once it exists)
        self.cache: Any = None  # the response cache, read for its size (given once it exists)
        self.run_dir = run_dir or os.environ.get("GATEWAY_RUN_DIR") or private_run_dir()
        windows = [s.breaker.rolling_window for s in settings.services.values()] or [settings.cb_rolling_window]
        self.breaker_history = int(max(windows)) + 2
        self._states: dict[str, str] = {}
        self._new_worker()
        _track_forks(self)

    def _new_worker(self) -> None:
        """Start with empty books under a fresh worker identity (at construction and after a fork)."""
        self.worker_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()  # guards the pending maps (hot path)
        self._flush_lock = threading.Lock()  # one flush at a time (flusher thread or a reader)
        self._files = FileShare(self.run_dir, self.worker_id)
        self._redis = RedisShare(self.link, CACHE_WINDOW, self.breaker_history) if self.link else None
        self._pending_c: Buckets = {}
        self._pending_b: Buckets = {}
        self._pending_cum: Counts = {}
        self._cache: Buckets = {}
        self._breaker: Buckets = {}
        self._cum: Counts = {}
        self._unsent: tuple[Buckets, Buckets, Counts] = ({}, {}, {})
        self._resets_seen = self._files.resets()  # a new worker has nothing from before any reset
        self._last_write = 0.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- hot path ---------------------------------------------------------------------------------

    def record_request(self, service: str, method: str, status: int, cache: str | None,
                       duration_s: float, upstream_s: float | None) -> None:
        """Count one fully answered proxied request."""
        second = int(self.clock())
        result = CACHE_RESULTS.get(cache or "")
        micros = int(duration_s * 1_000_000)
        with self._lock:
            counts = self._pending_c.get(second)
            if counts is None:
                counts = self._pending_c[second] = {}
            counts["req"] = counts.get("req", 0) + 1
            if result is not None:
                counts[result] = counts.get(result, 0) + 1
                if result in ("hit", "miss"):
                    field = result + "_us"
                    counts[field] = counts.get(field, 0) + micros
            if upstream_s is not None:
                counts["upstream"] = counts.get("upstream", 0) + 1
        if self.metrics is not None:
            self.metrics.observe_request(service, method, status, cache, duration_s, upstream_s)

    def record_cache(self, event: str) -> None:
        """Count a cache event: ``coalesced`` (a waiter took a leader's response) or ``upstream_call``.

        ``upstream_call`` is for calls no recorded request accounts for (a background refresh);
        a request's own upstream call is counted by :meth:`record_request` (``upstream_s``).
        """
        field = CACHE_EVENTS.get(event)
        if field is not None:
            second = int(self.clock())
            with self._lock:
                counts = self._pending_c.setdefault(second, {})
                counts[field] = counts.get(field, 0) + 1
        if self.metrics is not None:
            self.metrics.cache_event(event)

    def record_rate_limit(self, service: str, event: str) -> None:
        """Count a rate limiting event: ``limited`` (a 429) or ``redis_down_allowed``/``_refused``/``_local``."""
        key = f"{RATE_LIMIT_FAMILY}{service}|{event}"
        with self._lock:
            self._pending_cum[key] = self._pending_cum.get(key, 0) + 1
        if self.metrics is not None:
            self.metrics.rate_limit_event(service, event)

    def on_call(self, service: str, outcome: Any, latency_s: float) -> None:
        """Breaker listener: a protected call completed."""
        name = getattr(outcome, "name", str(outcome))
        ms = latency_s * 1000
        second = int(self.clock())
        with self._lock:
            window = self._pending_b.setdefault(second, {})
            result = "ok" if name == "SUCCESS" else "fail"
            for field, value in ((result, 1), ("us", int(ms * 1000)), (f"h{latency_bin(ms)}", 1)):
                key = f"{service}|{field}"
                window[key] = window.get(key, 0) + value
            for field in ("ok",) if name == "SUCCESS" else (("fail", "to") if name == "TIMEOUT" else ("fail",)):
                key = f"{service}|{field}"
                self._pending_cum[key] = self._pending_cum.get(key, 0) + 1
        if self.metrics is not None:
            self.metrics.breaker_call(service, name.lower())

    def on_reject(self, service: str) -> None:
        """Breaker listener: a call was refused by an open circuit."""
        key = f"{service}|rej"
        with self._lock:
            self._pending_cum[key] = self._pending_cum.get(key, 0) + 1
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
            with self._lock:
                cache, breaker, cum = self._pending_c, self._pending_b, self._pending_cum
                self._pending_c, self._pending_b, self._pending_cum = {}, {}, {}
            now = self.clock()
            self._apply_resets()
            add_buckets(self._cache, cache)
            add_buckets(self._breaker, breaker)
            add_counts(self._cum, cum)
            self._prune(now)
            # Embedded mode: every worker has its own breakers, so each publishes their states.
            states = self._breaker_states() if self.link is None else {}
            changed = bool(cache or breaker or cum)
            if changed or now - self._last_write >= 1.0 or now < self._last_write:
                self._files.write(self._encode(now, states))
                self._last_write = now
            if self._redis is not None:
                self._push(cache, breaker, cum, now)
            if self.metrics is not None and states:
                self.metrics.publish_breaker_states(states)
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
        unsent_c, unsent_b, unsent_cum = self._unsent
        add_buckets(unsent_c, cache)
        add_buckets(unsent_b, breaker)
        add_counts(unsent_cum, cum)
        if not (unsent_c or unsent_b or unsent_cum):
            return
        try:
            self._redis.push(unsent_c, unsent_b, unsent_cum)
        except StoreUnavailable:
            # Keep the deltas for when Redis is back; buckets past their history are dropped.
            for buckets, keep in ((unsent_c, CACHE_WINDOW), (unsent_b, self.breaker_history)):
                for second in [s for s in buckets if s <= now - keep]:
                    del buckets[second]
            return
        self._unsent = ({}, {}, {})

    def _prune(self, now: float) -> None:
        for buckets, keep in ((self._cache, CACHE_WINDOW), (self._breaker, self.breaker_history)):
            for second in [s for s in buckets if s <= now - keep]:
                del buckets[second]

    def _apply_resets(self) -> None:
        """Apply breaker resets made by other workers of this instance."""
        for service, generation in self._files.resets().items():
            if generation > self._resets_seen.get(service, 0):
                self._forget(service)
                self._resets_seen[service] = generation

    def _forget(self, service: str) -> None:
        drop_service(self._cum, service)
        for counts in self._breaker.values():
            drop_service(counts, service)
        for counts in self._unsent[1].values():
            drop_service(counts, service)
        drop_service(self._unsent[2], service)

    def _encode(self, now: float, states: Mapping[str, Any]) -> dict[str, Any]:
        # Embedded mode: each worker's cache is its own, so each publishes its size to be summed.
        store = self._store_size() if self.link is None else None
        in_flight = self.metrics.in_flight.value if self.metrics is not None else 0
        return encode_snapshot(pid=os.getpid(), written_at=now, cache=self._cache, breaker=self._breaker,
                               cumulative=self._cum, resets_seen=self._resets_seen, breakers=states, store=store,
                               in_flight=in_flight)

    def _breaker_states(self) -> dict[str, dict[str, Any]]:
        """This worker's breaker states (its own in embedded mode)."""
        registry = self.breakers
        states: dict[str, dict[str, Any]] = {}
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
            self._forget(service)
            self._files.write(self._encode(self.clock(), self._breaker_states() if self.link is None else {}))
        if self._redis is not None:
            now = int(self.clock())
            fields = [f"{service}|{f}" for f in ("ok", "fail", "us")]
            fields += [f"{service}|h{i}" for i in range(len(LATENCY_BOUNDS_MS) + 1)]
            try:
                self._redis.reset(service, fields, now - self.breaker_history, now + 1)
            except StoreUnavailable:
                log.warning("breaker stats reset of %s not applied in Redis (unreachable)", service)

    # -- reading ----------------------------------------------------------------------------------

    def _gathered(self, family: str, first: int, last: int) -> tuple[Buckets, list[dict[str, Any]], bool]:
        """Buckets of ``family`` for the whole gateway, the worker snapshots read, and whether from Redis."""
        self.flush()
        if self._redis is not None:
            try:
                return self._redis.read(family, first, last), [], True
            except StoreUnavailable:
                pass
        merged: Buckets = {}
        others = self._files.others()
        resets = self._files.resets()
        own = self._cache if family == "c" else self._breaker
        add_buckets(merged, {s: c for s, c in own.items() if first <= s <= last})
        for other in others:
            buckets = other[family]
            if family == "b":
                buckets = {s: dict(c) for s, c in buckets.items()}
                for service, generation in resets.items():
                    if int(other["resets_seen"].get(service, 0)) < generation:
                        for counts in buckets.values():
                            drop_service(counts, service)
            add_buckets(merged, {s: c for s, c in buckets.items() if first <= s <= last})
        return merged, others, False

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
        return sum(int(other.get("in_flight") or 0) for other in self._files.others()
                   if self.clock() - other["written_at"] <= FRESH_SECONDS)

    def _instance_size(self, size: dict[str, Any], others: list[dict[str, Any]]) -> tuple[int | None, int | None]:
        keys, used = size.get("keys"), size.get("memory_used_bytes")
        if self.link is None:
            for other in others:  # the embedded caches of the other live workers
                theirs = other["store"]
                if self.clock() - other["written_at"] <= FRESH_SECONDS and theirs:
                    keys = (keys or 0) + int(theirs.get("keys") or 0)
                    used = (used or 0) + int(theirs.get("memory_used_bytes") or 0)
        return keys, used

    def _store_size(self) -> dict[str, Any] | None:
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

    def breaker_stats(self, registry: Any = None) -> dict[str, Any]:
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
            state = self._state_of(name, registry, others, now)
            counts = state.pop("counts", None)
            if counts is not None:
                entry.update(counts)  # read with the state, by the same Redis script
            # With Redis, counts from the workers' flushes may trail the state by up to a second
            # (Redis unreachable, or no breaker to read). Without it, each worker's state and counts
            # are published together.
            entry["counts_lagging"] = counts is None and self.link is not None
            entry.update(state)
            services[name] = entry
        return {"services": services}

    def rate_limit_stats(self) -> dict[str, Any]:
        """``/stats/rate-limits``: each rate-limited service's settings and its events since start."""
        self.flush()
        others = self._files.others() if self._redis is None else []
        cumulative = self._cumulative(others, self._redis is not None)
        services: dict[str, Any] = {}
        for name, service in self.settings.services.items():
            limit = service.rate_limit
            if limit is None:
                continue
            counts = service_fields(cumulative, RATE_LIMIT_FAMILY + name)
            services[name] = {
                "key": f"header:{limit.header}" if limit.key == "header" else limit.key,
                "limits": [x.text for x in limit.rule.limits],
                "paths": {rule.path: [x.text for x in rule.limits] for rule in limit.paths},
                "store": "redis" if self.link is not None else "memory (per worker)",
                "redis_down": limit.redis_down,
                "limited": counts.get("limited", 0),
                "redis_down_allowed": counts.get("redis_down_allowed", 0),
                "redis_down_refused": counts.get("redis_down_refused", 0),
                "redis_down_local": counts.get("redis_down_local", 0),
            }
        return {"services": services}

    def _cumulative(self, others: list[dict[str, Any]], from_redis: bool) -> Counts:
        if from_redis and self._redis is not None:
            try:
                total = self._redis.cumulative()
                add_counts(total, self._unsent[2])  # ours, not yet in Redis
                return total
            except StoreUnavailable:
                others = self._files.others()
        total = dict(self._cum)
        resets = self._files.resets()
        for other in others:
            counts = dict(other["cum"])
            for service, generation in resets.items():
                if int(other["resets_seen"].get(service, 0)) < generation:
                    drop_service(counts, service)  # that worker has not applied the reset yet
            add_counts(total, counts)
        return total

    def _state_of(self, name: str, registry: Any, others: list[dict[str, Any]], now: float) -> dict[str, Any]:
        """State fields of one breaker: the registry's, or the worst live worker's in embedded mode."""
        best: dict[str, Any] = {}
        if registry is not None and name in registry:
            try:
                snap = registry[name].snapshot()
            except Exception:
                log.exception("breaker snapshot failed")
                snap = {}
            best = {k: snap[k] for k in ("state", "opened_at", "next_attempt_at", "forced") if k in snap}
            if snap.get("store") == "redis":  # the shared breaker: its counters came with its state
                best["counts"] = {k: snap[k] for k in COUNTED}
                best["counts"]["window_calls"] = snap["window"]["calls"]
        elif name in self._states:
            best = {"state": self._states[name]}
        if self.link is None:
            for other in others:
                if now - other["written_at"] > FRESH_SECONDS:
                    continue  # a dead (or stuck) worker's breaker no longer guards anything
                theirs = other["breakers"].get(name)
                if theirs and STATE_RANK.get(str(theirs.get("state")), 0) > STATE_RANK.get(str(best.get("state")), 0):
                    best = {**best, **theirs}
        return best


def _track_forks(stats: GatewayStats) -> None:
    """After a fork the child must not publish under its parent's identity or files."""
    ref = weakref.ref(stats)

    def after_fork() -> None:
        target = ref()
        if target is not None:
            target._new_worker()

    os.register_at_fork(after_in_child=after_fork)
