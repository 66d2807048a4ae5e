"""Redis through Sentinel: where the sentinels are, the master's name, how to log in (``REDIS_SENTINELS``...)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config.values import ConfigError, number, switch

# Settings that only mean something with REDIS_SENTINELS (with REDIS_URL they belong in the URL).
SENTINEL_ONLY = ("REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD", "REDIS_PASSWORD", "REDIS_USERNAME",
                 "REDIS_DB", "REDIS_TLS")
DEFAULT_PORT = 26379


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


def _address(item: str, raw: Any) -> tuple[str, int]:
    """``host:port``, ``host`` (port 26379) or ``[v6 address]:port``, one item of ``REDIS_SENTINELS``."""
    host, port_text = item, str(DEFAULT_PORT)
    if item.startswith("[") and item.endswith("]"):
        host = item[1:-1]
    elif item.startswith("[") or item.count(":") == 1:
        host, _, port_text = item.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
    if not host or any(c.isspace() or c in "/@?#[]" for c in host) or not port_text.isdigit() \
            or not 0 < int(port_text) < 65536:
        raise ConfigError("REDIS_SENTINELS", f"expected host:port[,host:port...], got {raw!r}")
    return host, int(port_text)


def read_sentinel(env: Mapping[str, Any]) -> RedisSentinel | None:
    """The Sentinel form (``REDIS_SENTINELS`` and its companions) of ``env``, or None when it is not used."""
    raw = env.get("REDIS_SENTINELS")
    if raw is None:
        for name in SENTINEL_ONLY:
            if env.get(name) is not None:
                raise ConfigError(name, "only used with REDIS_SENTINELS (with REDIS_URL, put it in the URL)")
        return None
    if env.get("REDIS_URL") is not None:
        raise ConfigError("REDIS_SENTINELS", "set either REDIS_URL (one Redis) or REDIS_SENTINELS (Sentinel), not both")
    addresses = tuple(_address(item.strip(), raw) for item in str(raw).split(","))
    master = env.get("REDIS_SENTINEL_MASTER")
    if master is None:
        raise ConfigError("REDIS_SENTINEL_MASTER", "required with REDIS_SENTINELS (the name the sentinels monitor, "
                                                   "e.g. mymaster)")
    master = str(master).strip()
    if any(c.isspace() for c in master):
        raise ConfigError("REDIS_SENTINEL_MASTER", f"a master name has no spaces, got {master!r}")
    db = int(number("REDIS_DB", env.get("REDIS_DB") or 0, integer=True))
    tls = switch("REDIS_TLS", env.get("REDIS_TLS") or False)
    secret = {name: None if env.get(name) is None else str(env.get(name))
              for name in ("REDIS_PASSWORD", "REDIS_USERNAME", "REDIS_SENTINEL_PASSWORD")}
    if secret["REDIS_USERNAME"] is not None and secret["REDIS_PASSWORD"] is None:
        raise ConfigError("REDIS_USERNAME", "needs REDIS_PASSWORD too")
    return RedisSentinel(addresses=addresses, master=master, password=secret["REDIS_PASSWORD"],
                         username=secret["REDIS_USERNAME"], db=db, tls=tls,
                         sentinel_password=secret["REDIS_SENTINEL_PASSWORD"])
