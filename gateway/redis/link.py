"""The gateway's one connection to Redis: short timeouts, no retries, and a brief skip after a failure.

A Redis that is down, slow or out of memory must never fail a request. Every engine part calls
Redis through :meth:`RedisLink.run`, which raises :class:`StoreUnavailable` at once while the link
is in its skip period instead of waiting for a timeout on every request; after the skip period one
caller tries again, so the gateway reconnects by itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from gateway.config.settings import RedisSentinel

T = TypeVar("T")

SOCKET_TIMEOUT = 0.25
SKIP_SECONDS = 1.0


class StoreUnavailable(Exception):
    """Redis cannot be used right now; callers fall back (bypass the cache, local breaker)."""


class BlockingSentinelConnectionPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """redis-py's Sentinel pool (connections follow the master) on its blocking pool's queue.

    redis-py's ``SentinelConnectionPool`` is a plain ``ConnectionPool``: past ``max_connections`` it
    raises ``Too many connections`` at once, which under gevent (hundreds of greenlets wanting Redis in
    a burst) would mark the link down and bypass the cache for everyone. Putting
    ``BlockingConnectionPool`` next in the method order makes a greenlet wait (up to ``timeout``) for a
    free connection instead; everything Sentinel-specific (master discovery on connect, dropping
    connections to a demoted master) stays redis-py's.
    """


class RedisLink:
    """A redis-py client sized for gevent, wrapped so failures are fast and contained."""

    def __init__(self, url: str | None, prefix: str = "gw:", *, sentinel: RedisSentinel | None = None,
                 max_connections: int = 256, socket_timeout: float = SOCKET_TIMEOUT,
                 skip_seconds: float = SKIP_SECONDS, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.url = url if sentinel is None else sentinel.describe()
        self.prefix = prefix
        self.socket_timeout = socket_timeout  # the longest a caller waits for one answer
        self.skip_seconds = skip_seconds
        self._monotonic = monotonic
        self._down_until = 0.0
        self._lock = threading.Lock()
        if sentinel is not None:
            self.client = _sentinel_client(sentinel, max_connections, socket_timeout)
            return
        if url is None:
            raise ValueError("RedisLink needs a url or a sentinel")
        # A blocking pool: under gevent thousands of greenlets may want a connection at once, and
        # redis-py's default pool raises past its limit instead of waiting.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=socket_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self.client = redis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))

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

    def run(self, operation: Callable[[redis.Redis], T], *, always: bool = False) -> T:
        """Run ``operation(client)``; raise :class:`StoreUnavailable` if Redis is skipped or fails.

        ``always`` tries even during the skip period: for the rare command that must be sent if at all
        possible (a stalled Redis still receives it, and runs it when it wakes up).
        """
        if not always and not self.is_up:
            raise StoreUnavailable("redis skipped after a recent failure")
        try:
            return operation(self.client)
        except (redis.RedisError, OSError) as exc:
            self.mark_down()
            raise StoreUnavailable(str(exc)) from exc

    def ping(self) -> bool:
        """Try Redis now (ignoring the skip period); return whether it answered."""
        try:
            self.client.ping()
        except (redis.RedisError, OSError):
            self.mark_down()
            return False
        self._down_until = 0.0
        return True

    def close(self) -> None:
        """Drop pooled connections (after fork, or at shutdown)."""
        self.client.connection_pool.disconnect()


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
    return manager.master_for(
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
