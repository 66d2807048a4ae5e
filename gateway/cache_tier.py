"""A short-lived per-worker copy of hot Redis entries, dropped on every invalidation via Redis pub/sub.

Each hit on Redis costs a round trip, which halves throughput under gevent; a hot key read many
times a second can be served from the worker's memory instead. Correctness rests on two bounds:
a copy is never older than ``bound`` seconds (under 1 s, SPEC §4's limit for invalidations to reach
every worker), and every invalidation or purge is published so other workers and instances drop
their copies at once. The tier only answers while its subscription is live: messages could be
missed otherwise.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from gateway.cache_store import RedisStore
from gateway.redis_link import StoreUnavailable

log = logging.getLogger("gateway.cache")

RETRY_SECONDS = 0.5


class TieredStore:
    """``RedisStore`` with a bounded, sub-second, per-worker read-through copy in front of it."""

    source = "Redis"  # the copies are Redis's entries; the tier is only a shortcut to them

    def __init__(self, redis_store: RedisStore, bound: float = 0.5, max_entries: int = 1000,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.redis = redis_store
        self.link = redis_store.link
        self.bound = min(bound, 1.0)
        self.max_entries = max_entries
        self.channel = self.link.key("cache", "invalidate")
        self._monotonic = monotonic
        self._copies: OrderedDict[str, tuple[float, list[bytes]]] = OrderedDict()
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._listening = False
        self._stopped = False

    # -- the tier ----------------------------------------------------------------------------------

    def get_variants(self, key: str, direct: bool = False) -> list[bytes]:
        """Serve a recent copy when the subscription is live; otherwise read Redis (and keep a copy)."""
        self._ensure_listener()
        now = self._monotonic()
        if not direct and self._listening:
            with self._lock:
                copy = self._copies.get(key)
                if copy is not None and copy[0] > now:
                    self._copies.move_to_end(key)
                    return copy[1]
        values = self.redis.get_variants(key)
        if values and self._listening:  # misses are not copied: a new entry must be seen at once
            with self._lock:
                self._copies[key] = (now + self.bound, values)
                self._copies.move_to_end(key)
                while len(self._copies) > self.max_entries:
                    self._copies.popitem(last=False)
        return values

    def clear_copies(self) -> None:
        """Drop every copy held by this worker."""
        with self._lock:
            self._copies.clear()

    def put(self, key: str, group: str, variant: str, blob: bytes, ttl: float) -> bool:
        """Store in Redis and drop this worker's copy of the key."""
        with self._lock:
            self._copies.pop(key, None)
        return self.redis.put(key, group, variant, blob, ttl)

    def drop_groups(self, groups: list[str]) -> int:
        """Drop the paths in Redis, then tell every worker and instance to drop their copies."""
        try:
            return self.redis.drop_groups(groups)
        finally:
            self._announce()

    def purge(self, path: str | None = None, prefix: str | None = None) -> int:
        """Purge in Redis, then tell every worker and instance to drop their copies."""
        try:
            return self.redis.purge(path=path, prefix=prefix)
        finally:
            self._announce()

    def _announce(self) -> None:
        self.clear_copies()
        try:
            self.link.run(lambda c: c.publish(self.channel, b"drop"))
        except StoreUnavailable:
            pass  # other workers' listeners lose the connection too, and clear their copies themselves

    # -- coalescing and stats go straight to Redis ---------------------------------------------------

    def try_lock(self, name: str, lease: float) -> str | None:
        """The Redis coalescing lock."""
        return self.redis.try_lock(name, lease)

    def release(self, name: str, token: str) -> None:
        """Release the Redis coalescing lock."""
        self.redis.release(name, token)

    def is_locked(self, name: str) -> bool:
        """Whether another process holds the Redis coalescing lock."""
        return self.redis.is_locked(name)

    def snapshot(self) -> dict[str, int]:
        """Redis's figures (the copies are a fraction of a second of the same entries)."""
        return self.redis.snapshot()

    # -- the subscription --------------------------------------------------------------------------

    def _ensure_listener(self) -> None:
        """Start one listener per process (lazily: threads do not survive gunicorn's fork)."""
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._lock:
            if self._pid == pid:
                return
            self._pid = pid
            self._listening = False
            self._copies.clear()
        threading.Thread(target=self._listen, name="cache-invalidations", daemon=True).start()

    def _listen(self) -> None:
        while not self._stopped:
            pubsub: Any = None
            try:
                pubsub = self.link.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                self.clear_copies()
                self._listening = True
                while not self._stopped:
                    if pubsub.get_message(timeout=0.2) is not None:
                        self.clear_copies()
            except Exception:  # any failure: stop answering from copies until subscribed again
                log.debug("cache invalidation listener lost its connection", exc_info=True)
            finally:
                self._listening = False
                self.clear_copies()
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass
            if not self._stopped:
                time.sleep(RETRY_SECONDS)

    def stop(self) -> None:
        """Stop the listener (tests and shutdown)."""
        self._stopped = True

    @property
    def listening(self) -> bool:
        """True while invalidations are being received."""
        return self._listening
