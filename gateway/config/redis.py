"""Where the gateway's Redis is: one server, a Sentinel set or a Redis Cluster, validated once.

At most one form is set::

    REDIS_URL            redis://[user:password@]host:port/db  (rediss:// for TLS, unix:// for a socket)
    REDIS_SENTINELS      host:port,host:port,...  with REDIS_SENTINEL_MASTER (and REDIS_SENTINEL_PASSWORD)
    REDIS_CLUSTER_NODES  host:port,host:port,...  a few of the cluster's nodes, or its configuration endpoint

With the last two, ``REDIS_PASSWORD``, ``REDIS_USERNAME`` and ``REDIS_TLS`` say how to log in to the data
nodes, as the URL does for one server; ``REDIS_DB`` is Sentinel's alone (a cluster has database 0 only).
``REDIS_URL`` itself is an option of ``Settings`` (read with the other URLs); the rest is read here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config.values import ConfigError, number, switch

FORMS = ("REDIS_URL", "REDIS_SENTINELS", "REDIS_CLUSTER_NODES")
SENTINEL_ONLY = ("REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD", "REDIS_DB")
LOGIN = ("REDIS_PASSWORD", "REDIS_USERNAME", "REDIS_TLS")  # Sentinel's or a cluster's data nodes
SENTINEL_PORT = 26379
CLUSTER_PORT = 6379


@dataclass(frozen=True)
class RedisSentinel:
    """Where the gateway finds its Redis through Sentinel: the sentinels, the master's name, how to log in.

    ``password``, ``username``, ``db`` and ``tls`` are the master's (and so its replicas'), as in a
    ``REDIS_URL``; ``sentinel_password`` is the sentinels' own, when they require one.
    """

    addresses: tuple[tuple[str, int], ...]
    master: str
    password: str | None = None
    username: str | None = None
    db: int = 0
    tls: bool = False
    sentinel_password: str | None = None

    def describe(self) -> str:
        """A password-free line for listings and logs: ``redis+sentinel://h1:26379,h2:26379/mymaster/0``."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.addresses)
        return f"{'rediss' if self.tls else 'redis'}+sentinel://{hosts}/{self.master}/{self.db}"


@dataclass(frozen=True)
class RedisClusterNodes:
    """A Redis Cluster given by seed nodes; the client learns the rest (and every later change) from them."""

    nodes: tuple[tuple[str, int], ...]
    password: str | None = None
    username: str | None = None
    tls: bool = False

    def describe(self) -> str:
        """A password-free line for listings and logs: ``redis+cluster://h1:6379,h2:6379``."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.nodes)
        return f"{'rediss' if self.tls else 'redis'}+cluster://{hosts}"


def read_redis(env: Mapping[str, Any]) -> tuple[RedisSentinel | None, RedisClusterNodes | None]:
    """The Sentinel or the Cluster form of ``env``, if one is set (at most one of :data:`FORMS` is)."""
    chosen = [name for name in FORMS if env.get(name) is not None]
    if len(chosen) > 1:
        raise ConfigError(chosen[1], f"set one of {', '.join(FORMS)}, not {' and '.join(chosen)}")
    if not chosen or chosen[0] == "REDIS_URL":
        for name in (*SENTINEL_ONLY, *LOGIN):
            if env.get(name) is not None:
                raise ConfigError(name, "only used with REDIS_SENTINELS or REDIS_CLUSTER_NODES "
                                        "(with REDIS_URL, put it in the URL)")
        return None, None
    if chosen[0] == "REDIS_SENTINELS":
        return _sentinel(env), None
    return None, _cluster(env)


def _sentinel(env: Mapping[str, Any]) -> RedisSentinel:
    addresses = _addresses("REDIS_SENTINELS", env["REDIS_SENTINELS"], SENTINEL_PORT)
    master = env.get("REDIS_SENTINEL_MASTER")
    if master is None:
        raise ConfigError("REDIS_SENTINEL_MASTER", "required with REDIS_SENTINELS (the name the sentinels monitor, "
                                                   "e.g. mymaster)")
    master = str(master).strip()
    if any(c.isspace() for c in master):
        raise ConfigError("REDIS_SENTINEL_MASTER", f"a master name has no spaces, got {master!r}")
    db = int(number("REDIS_DB", env.get("REDIS_DB") or 0, integer=True))
    sentinel_password = env.get("REDIS_SENTINEL_PASSWORD")
    return RedisSentinel(addresses=addresses, master=master, db=db,
                         sentinel_password=None if sentinel_password is None else str(sentinel_password),
                         **_login(env))


def _cluster(env: Mapping[str, Any]) -> RedisClusterNodes:
    for name in SENTINEL_ONLY:
        if env.get(name) is not None:
            why = "a cluster has database 0 only" if name == "REDIS_DB" else "only used with REDIS_SENTINELS"
            raise ConfigError(name, f"{why}; REDIS_CLUSTER_NODES is set")
    prefix = str(env.get("REDIS_KEY_PREFIX") or "")
    if "{" in prefix or "}" in prefix:
        raise ConfigError("REDIS_KEY_PREFIX", f"no {{ or }} on a cluster (they would make one hash tag of every "
                                              f"key), got {prefix!r}")
    return RedisClusterNodes(nodes=_addresses("REDIS_CLUSTER_NODES", env["REDIS_CLUSTER_NODES"], CLUSTER_PORT),
                             **_login(env))


def _login(env: Mapping[str, Any]) -> dict[str, Any]:
    """``REDIS_PASSWORD``, ``REDIS_USERNAME`` and ``REDIS_TLS`` as keyword arguments of either form."""
    password = None if env.get("REDIS_PASSWORD") is None else str(env["REDIS_PASSWORD"])
    username = None if env.get("REDIS_USERNAME") is None else str(env["REDIS_USERNAME"])
    if username is not None and password is None:
        raise ConfigError("REDIS_USERNAME", "needs REDIS_PASSWORD too")
    return {"password": password, "username": username, "tls": switch("REDIS_TLS", env.get("REDIS_TLS") or False)}


def _addresses(setting: str, raw: Any, default_port: int) -> tuple[tuple[str, int], ...]:
    """``host:port,host,[v6 address]:port``: a list of nodes, a missing port being ``default_port``."""
    return tuple(_address(setting, item.strip(), raw, default_port) for item in str(raw).split(","))


def _address(setting: str, item: str, raw: Any, default_port: int) -> tuple[str, int]:
    """``host:port``, ``host`` (the default port) or ``[v6 address]:port``, one item of a list of nodes."""
    host, port_text = item, str(default_port)
    if item.startswith("[") and item.endswith("]"):
        host = item[1:-1]
    elif item.startswith("[") or item.count(":") == 1:
        host, _, port_text = item.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
    if not host or any(c.isspace() or c in "/@?#[]" for c in host) or not port_text.isdigit() \
            or not 0 < int(port_text) < 65536:
        raise ConfigError(setting, f"expected host:port[,host:port...], got {raw!r}")
    return host, int(port_text)
