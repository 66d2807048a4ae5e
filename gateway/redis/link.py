"""The gateway's one connection to Redis: short timeouts, no retries, and a brief skip after a failure.

A Redis that is down, slow or out of memory must never fail a request. Every engine part calls
Redis through :meth:`RedisLink.run`, which raises :class:`StoreUnavailable` at once while the link
is in its skip period instead of waiting for a timeout on every request; after the skip period one
caller tries again, so the gateway reconnects by itself.

Scripts and the cache's plain reads go through :meth:`RedisLink.evalsha` and :meth:`RedisLink.command`:
under gevent they are multiplexed (``gateway.redis.mux``: every greenlet's commands to one node written
together on one connection), elsewhere, and for everything else, they use redis-py's pooled client.

The link is one Redis (``REDIS_URL``), the master a Sentinel set names, or a Redis Cluster. The few
things that differ on a cluster are here, so the engine parts read the same on all three: a SCAN
visits every primary (:meth:`RedisLink.scan`), keys for one script call are grouped by slot
(:meth:`RedisLink.by_slot`), memory is summed over the primaries, and a pub/sub listener may use any
node (a cluster broadcasts every PUBLISH to all of them).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, NoScriptError, ReadOnlyError, RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from gateway.config.redis import RedisClusterNodes, RedisSentinel
from gateway.config.settings import Settings
from gateway.redis import mux
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
        self._muxes: dict[str | None, mux.Multiplexer] = {}  # by cluster node (None: the one Redis)
        self._by_slot: dict[int, mux.Multiplexer] = {}  # a cluster's slots looked up so far, until they move
        self._mux_pid: int | None = None
        self._mux_here = False  # whether this process multiplexes (under gevent)
        self._slots_stale = False  # a cluster node failed: the slots are learnt again before the next call
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

    def evalsha(self, script: Script, keys: Sequence[str], args: Sequence[Any], *, always: bool = False) -> Any:
        """Run ``script`` (registered on :attr:`client`) with ``keys`` and ``args``, as :meth:`run` runs an operation.

        Multiplexed where it can be: a script Redis has forgotten (``NOSCRIPT``) and a command a cluster
        redirects (``MOVED``, ``ASK``) go again through redis-py's client, which loads the script or
        follows the redirection (and reloads its slot map).
        """
        def operation(client: Any) -> Any:
            channel = self._multiplexer(keys[0] if keys else None)
            if channel is not None:
                try:
                    return self._on(channel, "EVALSHA", script.sha, len(keys), *keys, *args)
                except NoScriptError:
                    pass
                except (MovedError, AskError):
                    self._by_slot = {}  # redis-py follows it and learns where the slot went
            return script(keys=list(keys), args=list(args), client=client)

        return self.run(operation, always=always)

    def command(self, *args: str | bytes | int | float, key: str) -> Any:
        """One command about ``key`` (which routes it on a cluster); its raw reply (bytes, ints, lists)."""
        def operation(client: Any) -> Any:
            channel = self._multiplexer(key)
            if channel is not None:
                try:
                    return self._on(channel, *args)
                except (MovedError, AskError):
                    self._by_slot = {}
            return client.execute_command(*args)

        return self.run(operation)

    def _on(self, channel: mux.Multiplexer, *args: str | bytes | int | float) -> Any:
        try:
            return channel.call(*args)
        except ReadOnlyError:
            channel.close()  # a master demoted to a replica: the next connection asks the sentinels again
            raise
        except (redis.ConnectionError, redis.TimeoutError):
            self._slots_stale = self.cluster
            raise

    def _multiplexer(self, key: str | None) -> mux.Multiplexer | None:
        """The multiplexer for ``key``'s node, made on first use; None where commands are not multiplexed."""
        pid = os.getpid()
        if self._mux_pid != pid:  # first use, or forked: the parent's connections are not ours
            self._mux_pid, self._muxes, self._by_slot, self._mux_here = pid, {}, {}, mux.available()
        if not self._mux_here:
            return None
        name: str | None = None
        pool: Any = None
        if self.cluster:
            made = self.client.made
            if made is None or key is None:
                return None  # redis-py makes the client (and learns the slots) on its first call
            if self._slots_stale:  # as redis-py does after a node fails: learn the slots again first
                self._slots_stale = False
                self._by_slot = {}
                made.nodes_manager.initialize()
            slot = key_slot(key.encode())
            known = self._by_slot.get(slot)
            if known is not None:
                return known if known.usable else None
            node = made.nodes_manager.get_node_from_slot(slot)
            name = node.name
            if node.redis_connection is not None:
                pool = node.redis_connection.connection_pool
        else:
            pool = self.client.connection_pool
        channel = self._muxes.get(name)
        if channel is None:
            if pool is None or issubclass(pool.connection_class, redis.SSLConnection):
                return None  # TLS records are not read off the OS socket: redis-py's client serves
            channel = mux.Multiplexer(lambda: pool.connection_class(**pool.connection_kwargs), self.socket_timeout)
            self._muxes[name] = channel
        if self.cluster:
            self._by_slot[slot] = channel
        return channel if channel.usable else None

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
        """Drop pooled and multiplexed connections (after fork, or at shutdown)."""
        if self._mux_pid == os.getpid():
            for channel in list(self._muxes.values()):
                channel.close()
        self._muxes, self._by_slot = {}, {}
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
