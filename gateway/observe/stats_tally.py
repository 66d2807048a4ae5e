"""One worker's own counts: what the hooks add up (:class:`Tally`) and what the flusher keeps (:class:`Books`).

The tally is the only part of the stats on the request path: a request, a cache event, a breaker
call or reject, a rate-limit event each adds a few integers under one short lock. The flusher takes
it all at once (:meth:`Tally.take`) into the books: the worker's window of per-second buckets and
its cumulative counters (what its snapshot file publishes), and the deltas Redis has not taken yet.
The counter names are those :mod:`gateway.observe.stats_report` reads.
"""

from __future__ import annotations

import threading

from gateway.observe.stats_report import latency_bin
from gateway.observe.stats_share import Buckets, Counts, add_buckets, add_counts, drop_service

# A request's X-Cache result -> its counter; results outside these (none: not cacheable) are not counted.
CACHE_RESULTS = {"HIT": "hit", "MISS": "miss", "STALE": "stale", "REVALIDATED": "revalidated", "BYPASS": "bypass"}
CACHE_EVENTS = {"coalesced": "coalesced", "upstream_call": "upstream"}
TIMED_RESULTS = ("hit", "miss")  # results whose latency is summed (``hit_us``, ``miss_us``)


class Tally:
    """Per-second cache and breaker buckets, and cumulative counters, added to by the hot path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cache: Buckets = {}
        self.breaker: Buckets = {}
        self.cumulative: Counts = {}

    def request(self, second: int, cache: str | None, micros: int, upstream: bool) -> None:
        """One answered request: its cache result (an ``X-Cache`` value), latency, whether it went upstream."""
        result = CACHE_RESULTS.get(cache or "")
        with self._lock:
            counts = self.cache.get(second)
            if counts is None:
                counts = self.cache[second] = {}
            counts["req"] = counts.get("req", 0) + 1
            if result is not None:
                counts[result] = counts.get(result, 0) + 1
                if result in TIMED_RESULTS:
                    field = result + "_us"
                    counts[field] = counts.get(field, 0) + micros
            if upstream:
                counts["upstream"] = counts.get("upstream", 0) + 1

    def cache_event(self, second: int, event: str) -> bool:
        """A cache event (``coalesced``, ``upstream_call``); False for one the stats do not count."""
        field = CACHE_EVENTS.get(event)
        if field is None:
            return False
        with self._lock:
            counts = self.cache.setdefault(second, {})
            counts[field] = counts.get(field, 0) + 1
        return True

    def call(self, second: int, service: str, outcome: str, ms: float) -> None:
        """A call through ``service``'s breaker ended as ``outcome`` (``SUCCESS``, ``FAILURE``, ``TIMEOUT``...)."""
        result = "ok" if outcome == "SUCCESS" else "fail"
        cumulative = ("ok",) if outcome == "SUCCESS" else (("fail", "to") if outcome == "TIMEOUT" else ("fail",))
        with self._lock:
            window = self.breaker.setdefault(second, {})
            for field, value in ((result, 1), ("us", int(ms * 1000)), (f"h{latency_bin(ms)}", 1)):
                key = f"{service}|{field}"
                window[key] = window.get(key, 0) + value
            for field in cumulative:
                key = f"{service}|{field}"
                self.cumulative[key] = self.cumulative.get(key, 0) + 1

    def count(self, key: str) -> None:
        """Add one to the cumulative counter ``key`` (``<service>|rej``, ``rl/<service>|limited``...)."""
        with self._lock:
            self.cumulative[key] = self.cumulative.get(key, 0) + 1

    def take(self) -> tuple[Buckets, Buckets, Counts]:
        """Everything counted so far (cache buckets, breaker buckets, cumulative), leaving an empty tally."""
        with self._lock:
            taken = self.cache, self.breaker, self.cumulative
            self.cache, self.breaker, self.cumulative = {}, {}, {}
        return taken


class Books:
    """This worker's window (per-second buckets kept for their history) and cumulative counters, and the
    deltas not yet in Redis; kept by the flusher, under its lock."""

    def __init__(self, cache_history: int, breaker_history: int) -> None:
        self.cache_history = cache_history
        self.breaker_history = breaker_history
        self.cache: Buckets = {}
        self.breaker: Buckets = {}
        self.cumulative: Counts = {}
        self.unsent: tuple[Buckets, Buckets, Counts] = ({}, {}, {})

    def add(self, cache: Buckets, breaker: Buckets, cumulative: Counts, now: float) -> None:
        """Take in a tally, and drop the buckets past their history."""
        add_buckets(self.cache, cache)
        add_buckets(self.breaker, breaker)
        add_counts(self.cumulative, cumulative)
        self._prune(now, self.cache, self.breaker)

    def hold(self, cache: Buckets, breaker: Buckets, cumulative: Counts) -> bool:
        """Add a tally to what Redis has not taken yet; False when nothing at all is waiting."""
        unsent_cache, unsent_breaker, unsent_cumulative = self.unsent
        add_buckets(unsent_cache, cache)
        add_buckets(unsent_breaker, breaker)
        add_counts(unsent_cumulative, cumulative)
        return bool(unsent_cache or unsent_breaker or unsent_cumulative)

    def sent(self) -> None:
        """Redis took what was held."""
        self.unsent = ({}, {}, {})

    def expire_unsent(self, now: float) -> None:
        """Redis is unreachable: keep the deltas for when it is back, less the buckets past their history."""
        self._prune(now, self.unsent[0], self.unsent[1])

    def forget(self, service: str) -> None:
        """A breaker reset: drop ``service``'s cumulative counters and window, here and in what is held."""
        drop_service(self.cumulative, service)
        for counts in self.breaker.values():
            drop_service(counts, service)
        for counts in self.unsent[1].values():
            drop_service(counts, service)
        drop_service(self.unsent[2], service)

    def _prune(self, now: float, cache: Buckets, breaker: Buckets) -> None:
        for buckets, keep in ((cache, self.cache_history), (breaker, self.breaker_history)):
            for second in [s for s in buckets if s <= now - keep]:
                del buckets[second]
