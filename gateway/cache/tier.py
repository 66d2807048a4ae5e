"""A short-lived per-worker copy of hot Redis entries (and misses), dropped on every change via Redis pub/sub.

Each hit on Redis costs a round trip, which halves throughput under gevent; a hot key read many
times a second can be served from the worker's memory instead. Correctness rests on two bounds:
a copy is never older than ``bound`` seconds (under 1 s, the limit for invalidations to reach
every worker), and every change is published so other workers and instances drop their copies at
once: invalidations and purges drop every copy, a store drops the copies of its key (a remembered
miss included). The tier only answers while its subscription is live: messages could be missed
otherwise.

A store of a key that had no entry, by the leader of its miss, is announced only if a worker noted
that it keeps a copy of the miss (``put.lua``): on a stream of new keys every worker would otherwise
wake for each store to drop nothing (42 µs of CPU per message and worker, measured).

A store's announcement names the worker that made it: that worker dropped its own copy when it
stored, and the copy it reads back afterwards is already the new entry, so it ignores the echo
(which may arrive late, after that fresh copy was taken).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable

from gateway.cache.store import RedisStore
from gateway.redis.link import StoreUnavailable
from gateway.redis.subscription import Subscription

log = logging.getLogger("gateway.cache")

STORED = b"s:"  # s:<origin>:<key>, a store by the worker <origin> (ORIGIN_LENGTH characters)
ORIGIN_LENGTH = 32
LEGACY_STORED = b"k:"  # k:<key>, a store announced without its origin
DEFAULT_BOUND = 0.5  # seconds a worker may answer from its copy (invalidations must reach every worker within 1 s)


class TieredStore:
    """``RedisStore`` with a bounded, sub-second, per-worker read-through copy in front of it."""

    source = "Redis"  # the copies are Redis's entries; the tier is only a shortcut to them

    def __init__(self, redis_store: RedisStore, bound: float = 0.5, max_entries: int = 1000,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.redis = redis_store
        self.link = redis_store.link
        self.bound = min(bound, 1.0)
        self.max_entries = max_entries
        self.channel = redis_store.names.channel
        self._monotonic = monotonic
        self._copies: OrderedDict[str, tuple[float, list[bytes]]] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0  # bumped by every drop, so a read that raced one is not kept
        self._origin_pid: int | None = None
        self._origin = b""
        self.subscription = Subscription(self.link, self.channel, on_message=self._on_message,
                                         on_reset=self.clear_copies)

    # -- the tier ----------------------------------------------------------------------------------

    def get_variants(self, key: str, direct: bool = False) -> list[bytes]:
        """Serve a recent copy when the subscription is live; otherwise read Redis (and keep a copy)."""
        listening = self.subscription.ensure()
        now = self._monotonic()
        if not direct and listening:
            with self._lock:
                copy = self._copies.get(key)
                if copy is not None and copy[0] > now:
                    self._copies.move_to_end(key)
                    return copy[1]
        generation = self._generation
        values = self.redis.get_variants(key, copied_for=self.bound if listening else 0.0)
        self._keep(key, values, now, generation)
        return values

    def read_or_lock(self, key: str, lease: float) -> tuple[list[bytes], str | None]:
        """A recent copy that holds variants; otherwise Redis's read-or-lock (and a copy of what it read)."""
        listening = self.subscription.ensure()
        now = self._monotonic()
        if listening:
            with self._lock:
                copy = self._copies.get(key)
                if copy is not None and copy[0] > now and copy[1]:
                    self._copies.move_to_end(key)
                    return copy[1], None
        generation = self._generation
        values, token = self.redis.read_or_lock(key, lease)
        if values:  # a miss read here is not kept: only a read that noted it may be (see get_variants)
            self._keep(key, values, now, generation)
        return values, token

    def _keep(self, key: str, values: list[bytes], now: float, generation: int) -> None:
        """Keep a copy of what Redis answered for ``key``.

        Misses are copied too (an open circuit then costs no round trip), only by ``get_variants``, whose
        read notes the miss in Redis for as long as the copy lives: a store of the key then announces
        it, so the copy goes as soon as the entry exists. A read that a drop overtook on its way back
        from Redis is not kept.
        """
        if self.subscription.live and generation == self._generation:
            with self._lock:
                self._copies[key] = (now + self.bound, values)
                self._copies.move_to_end(key)
                while len(self._copies) > self.max_entries:
                    self._copies.popitem(last=False)

    @property
    def origin(self) -> bytes:
        """This worker's id in its announcements (new after a fork: workers forked from one parent differ)."""
        pid = os.getpid()
        if self._origin_pid != pid:
            self._origin_pid = pid
            self._origin = uuid.uuid4().hex.encode()
        return self._origin

    def _on_message(self, data: bytes) -> None:
        """``s:<origin>:<key>`` or ``k:<key>``: that key was stored (drop its copy); anything else: drop every copy."""
        if data.startswith(STORED) and data[len(STORED) + ORIGIN_LENGTH:][:1] == b":":
            if data[len(STORED):len(STORED) + ORIGIN_LENGTH] == self.origin:
                return  # our own store: its copy went when we stored, and what we read since is newer
            key = data[len(STORED) + ORIGIN_LENGTH + 1:]
        elif data.startswith(LEGACY_STORED):
            key = data[len(LEGACY_STORED):]
        else:
            self.clear_copies()
            return
        self._drop_copy(key.decode(errors="replace"))

    def clear_copies(self) -> None:
        """Drop every copy held by this worker."""
        with self._lock:
            self._generation += 1
            self._copies.clear()

    def put(self, key: str, group: str, variant: str, blob: bytes, ttl: float,
            release: tuple[str, str] | None = None) -> bool:
        """Store in Redis and drop every worker's copy of the key (announced by the store script).

        This worker's copy goes before and after the store: a read that Redis answered in between
        may have the old entry, and the echo of the announcement, which would have dropped it, is ignored.
        """
        self._drop_copy(key)
        message = STORED + self.origin + b":" + key.encode()
        try:
            return self.redis.put(key, group, variant, blob, ttl, announce=(self.channel, message), release=release)
        finally:
            self._drop_copy(key)

    def _drop_copy(self, key: str) -> None:
        with self._lock:
            self._generation += 1
            self._copies.pop(key, None)

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
            self.subscription.publish(b"drop")
        except StoreUnavailable:
            pass  # other workers' listeners lose the connection too, and clear their copies themselves

    # -- coalescing and stats go straight to Redis ---------------------------------------------------

    def try_lock(self, name: str, lease: float) -> str | None:
        """The Redis coalescing lock."""
        return self.redis.try_lock(name, lease)

    def lock_and_read(self, name: str, lease: float) -> tuple[str | None, list[bytes] | None]:
        """The Redis coalescing lock, with the entry read past the tier in the same call."""
        return self.redis.lock_and_read(name, lease)

    def release(self, name: str, token: str) -> None:
        """Release the Redis coalescing lock."""
        self.redis.release(name, token)

    def is_locked(self, name: str) -> bool:
        """Whether another process holds the Redis coalescing lock."""
        return self.redis.is_locked(name)

    def snapshot(self) -> dict[str, int]:
        """Redis's figures (the copies are a fraction of a second of the same entries)."""
        return self.redis.snapshot()

    def stop(self) -> None:
        """Stop the listener (tests and shutdown)."""
        self.subscription.stop()

    @property
    def listening(self) -> bool:
        """True while invalidations are being received."""
        return self.subscription.live
