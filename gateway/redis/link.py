"""The gateway's one connection to Redis: short timeouts, no retries, and a brief skip after a failure.

A Redis that is down, slow or out of memory must never fail a request. Every engine part calls
Redis through :meth:`RedisLink.run`, which raises :class:`StoreUnavailable` at once while the link
is in its skip period instead of waiting for a timeout on every request; after the skip period one
caller tries again, so the gateway reconnects by itself.

The link is one Redis (``REDIS_URL``), the master a Sentinel set names, or a Redis Cluster. The few
things that differ on a cluster are here, so the engine parts read the same on all three: a SCAN
visits every primary (:meth:`RedisLink.scan`), keys for one script call are grouped by slot
(:meth:`RedisLink.by_slot`), memory is summed over the primaries, and a pub/sub listener may use any
node (a cluster broadcasts every PUBLISH to all of them).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from gateway.config.redis import RedisClusterNodes, RedisSentinel
from gateway.config.settings import Settings
from gateway.redis.cluster import LazyCluster, cluster_client
from gateway.redis.pool import LeanBlockingPool

T = TypeVar("T")

SOCKET_TIMEOUT = 0.25
SKIP_SECONDS = 1.0
SCAN_COUNT = 500
# Errors of a call to Redis: redis-py's cluster client also raises RedisClusterException (not a
# RedisError) when it cannot route a command, e.g. while its slot map is being reloaded.
REDIS_ERRORS = (redis.RedisError, OSError, RedisClusterException)


class StoreUnavailable(Exception):
    """Redis cannot be used right now; callers fall back (bypass the cache, local breaker)."""


class BlockingSentinelConnectionPool(SentinelConnectionPool, LeanBlockingPool):
    """redis-py's Sentinel pool (connections follow the master) on its blocking pool's queue.

    redis-py's ``SentinelConnectionPool`` is a plain ``ConnectionPool``: past ``max_connections`` it
    raises ``Too many connections`` at once, which under gevent (hundreds of greenlets wanting Redis in
    a burst) would mark the link down and bypass the cache for everyone. Putting the blocking pool
    (the lighter lease of ``gateway.redis.pool``) next in the method order makes a greenlet wait (up to
    ``timeout``) for a free connection instead; everything Sentinel-specific (master discovery on
    connect, dropping connections to a demoted master) stays redis-py's.
    """


class RedisLink:
    """A redis-py client sized for gevent, wrapped so failures are fast and contained."""

    def __init__(self, url: str | None, prefix: str = "gw:", *, sentinel: RedisSentinel | None = None,
                 cluster: RedisClusterNodes | None = None, max_connections: int = 256,
                 socket_timeout: float = SOCKET_TIMEOUT, skip_seconds: float = SKIP_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        form = sentinel or cluster
        self.url = url if form is None else form.describe()
        self.cluster = cluster is not None
        self.prefix = prefix
        self.socket_timeout = socket_timeout  # the longest a caller waits for one answer
        self.skip_seconds = skip_seconds
        self._monotonic = monotonic
        self._down_until = 0.0
        self._lock = threading.Lock()
        self.client: Any
        if cluster is not None:
            self.client = LazyCluster(lambda: cluster_client(cluster, max_connections, socket_timeout))
            return
        if sentinel is not None:
            self.client = _sentinel_client(sentinel, max_connections, socket_timeout)
            return
        if url is None:
            raise ValueError("RedisLink needs a url, a sentinel or a cluster")
        # A blocking pool: under gevent thousands of greenlets may want a connection at once, and
        # redis-py's default pool raises past its limit instead of waiting.
        pool = LeanBlockingPool.from_url(
            url,
            max_connections=max_connections,
            timeout=socket_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self.client = redis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisLink | None:
        """The link the settings describe (one Redis, Sentinel or a cluster), or None without Redis."""
        if not (settings.redis_url or settings.redis_sentinel or settings.redis_cluster):
            return None
        return cls(settings.redis_url, settings.redis_key_prefix, sentinel=settings.redis_sentinel,
                   cluster=settings.redis_cluster)

    def key(self, *parts: str) -> str:
        """Return a key under the gateway's prefix."""
        return self.prefix + ":".join(parts)

    @property
    def is_up(self) -> bool:
        """False while the link is skipping Redis after a failure."""
        return self._monotonic() >= self._down_until

    @property
    def status(self) -> str:
        """``up`` or ``down``, as reported by ``/health``."""
        return "up" if self.is_up else "down"

    def mark_down(self) -> None:
        """Skip Redis for a short while."""
        self._down_until = self._monotonic() + self.skip_seconds

    def run(self, operation: Callable[[Any], T], *, always: bool = False) -> T:
        """Run ``operation(client)``; raise :class:`StoreUnavailable` if Redis is skipped or fails.

        ``always`` tries even during the skip period: for the rare command that must be sent if at all
        possible (a stalled Redis still receives it, and runs it when it wakes up).
        """
        if not always and not self.is_up:
            raise StoreUnavailable("redis skipped after a recent failure")
        try:
            return operation(self.client)
        except REDIS_ERRORS as exc:
            self.mark_down()
            raise StoreUnavailable(str(exc) or type(exc).__name__) from exc

    def ping(self) -> bool:
        """Try Redis now (ignoring the skip period); return whether it answered (every primary, on a cluster)."""
        try:
            if self.cluster:
                self.client.ping(target_nodes=RedisCluster.PRIMARIES)
            else:
                self.client.ping()
        except REDIS_ERRORS:
            self.mark_down()
            return False
        self._down_until = 0.0
        return True

    def close(self) -> None:
        """Drop pooled connections (after fork, or at shutdown)."""
        if isinstance(self.client, LazyCluster):
            if self.client.made is not None:
                self.client.made.disconnect_connection_pools()
            return
        self.client.connection_pool.disconnect()

    # -- what differs on a cluster ---------------------------------------------------------------

    def scan(self, pattern: str, count: int = SCAN_COUNT) -> Iterator[list[str]]:
        """Batches of keys matching ``pattern``, on every primary of a cluster: one SCAN step per call, never KEYS.

        Each step goes through :meth:`run`, so a Redis that fails halfway raises StoreUnavailable.
        """
        if not self.cluster:
            yield from self._scan_node(pattern, count, None)
            return
        for node in self.run(lambda client: client.get_primaries()):
            yield from self._scan_node(pattern, count, node)

    def _scan_node(self, pattern: str, count: int, node: Any) -> Iterator[list[str]]:
        target = {} if node is None else {"target_nodes": node}
        cursor = 0
        while True:
            at = cursor
            step: Any = self.run(lambda client: client.scan(at, match=pattern, count=count, **target))  # noqa: B023
            found = step[1]
            cursor = int(step[0] if node is None else next(iter(step[0].values()), 0))
            if found:
                yield [k.decode() if isinstance(k, bytes) else str(k) for k in found]
            if cursor == 0:
                return

    def by_slot(self, keys: list[str]) -> list[list[str]]:
        """``keys`` in groups one script call may take: all at once off a cluster, one group per slot on it."""
        if not self.cluster:
            return [keys] if keys else []
        groups: dict[int, list[str]] = {}
        for key in keys:
            groups.setdefault(key_slot(key.encode()), []).append(key)
        return list(groups.values())

    def used_memory(self) -> int:
        """Bytes the Redis server uses (summed over the primaries of a cluster); raises StoreUnavailable."""
        if not self.cluster:
            return int(self.run(lambda client: client.info("memory")).get("used_memory", 0))
        infos = self.run(lambda client: client.info("memory", target_nodes=RedisCluster.PRIMARIES))
        if "used_memory" in infos:  # a cluster of one primary answers for itself
            return int(infos["used_memory"])
        return sum(int(info.get("used_memory", 0)) for info in infos.values())

    def pubsub(self) -> Any:
        """A new pub/sub connection; on a cluster, to any node, since every node hears every PUBLISH.

        A node picked at random also keeps a dead primary from holding every listener back until the
        slot map is reloaded: the next attempt most likely goes elsewhere.
        """
        if not self.cluster:
            return self.client.pubsub()
        client = self.client.connect()
        return client.pubsub(node=random.choice(client.get_nodes()))


def _sentinel_client(sentinel: RedisSentinel, max_connections: int, socket_timeout: float) -> redis.Redis:
    """A client of the master the sentinels name now, with the same timeouts and no retries.

    Each new connection asks the sentinels for the master's address, so after a failover the link's
    next attempt (past its skip period) reaches the promoted replica by itself.
    """
    short = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_timeout,
             "retry": Retry(NoBackoff(), 0), "health_check_interval": 0}
    manager = Sentinel(
        list(sentinel.addresses),
        sentinel_kwargs={**short, "password": sentinel.sentinel_password, "ssl": sentinel.tls},
    )
    master: redis.Redis = manager.master_for(
        sentinel.master,
        redis_class=redis.Redis,
        connection_pool_class=BlockingSentinelConnectionPool,
        max_connections=max_connections,
        timeout=socket_timeout,
        db=sentinel.db,
        username=sentinel.username,
        password=sentinel.password,
        ssl=sentinel.tls,
        **short,
    )
    return master
