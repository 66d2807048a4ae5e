"""The Redis Cluster client: redis-py's ``RedisCluster``, made on first use, with the link's timeouts.

redis-py does the cluster's work: it learns the slots from the seed nodes, routes each command to
the primary of its key's slot, follows ``MOVED`` and ``ASK`` redirections, and reloads the slot map
after a connection error or a ``CLUSTERDOWN`` (so the next call after a failover reaches the promoted
replica). Two things it does not do are done here:

* its constructor asks the seed nodes for the slots at once and raises when none answers
  (redis-py issue 3311), which would keep a gateway from starting while its cluster is unreachable;
  :class:`LazyCluster` stands in for the client until a seed answers, and failures to make it are
  connection errors like any other (the link skips Redis for a moment and tries again);
* each node's connections come from a blocking pool, as for one Redis: under gevent hundreds of
  greenlets may want a node at once, and redis-py's default pool raises past its size (the pool is
  ``gateway.redis.pool``'s, with its lighter lease).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import redis
from redis._parsers.encoders import Encoder
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from gateway.config.redis import RedisClusterNodes
from gateway.redis.pool import LeanBlockingPool


class LazyCluster:
    """A :class:`RedisCluster` made when first needed (and made again while making it fails).

    ``register_script`` needs only the encoder, so scripts are registered at start-up without a
    connection; every other attribute is the client's (``ConnectionError`` while no seed answers).
    """

    def __init__(self, make: Callable[[], RedisCluster]) -> None:
        self._make = make
        self._client: RedisCluster | None = None
        self._lock = threading.Lock()
        self._encoder = Encoder("utf-8", "strict", False)  # RedisCluster's own defaults

    @property
    def made(self) -> RedisCluster | None:
        """The client, if it has been made."""
        return self._client

    def connect(self) -> RedisCluster:
        """The client, made now if need be (raises ``redis.ConnectionError`` when no seed node answers)."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    try:
                        self._client = self._make()
                    except RedisClusterException as exc:
                        raise redis.ConnectionError(str(exc)) from exc
                client = self._client
        return client

    def register_script(self, script: str) -> Script:
        """A script object run later with ``client=`` (its SHA is worked out here, without Redis)."""
        return Script(self, script)  # type: ignore[arg-type]

    def get_encoder(self) -> Encoder:
        """The encoder ``Script`` hashes its text with."""
        return self._encoder

    def __getattr__(self, name: str) -> Any:
        return getattr(self.connect(), name)


def cluster_client(cluster: RedisClusterNodes, max_connections: int, socket_timeout: float) -> RedisCluster:
    """A ``RedisCluster`` of the seed nodes with short timeouts, no retries and a blocking pool per node.

    The first seed goes in as a URL: only then does redis-py make each node's pool with
    ``connection_pool_class`` (and ``rediss://`` turns TLS on for every node).
    """
    (host, port), *others = cluster.nodes
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return RedisCluster(
        url=f"{'rediss' if cluster.tls else 'redis'}://{netloc}",
        startup_nodes=[ClusterNode(h, p) for h, p in others],
        connection_pool_class=LeanBlockingPool,
        max_connections=max_connections,
        timeout=socket_timeout,  # the longest a greenlet waits for a free connection to a node
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
        username=cluster.username,
        password=cluster.password,
    )
