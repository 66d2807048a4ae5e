"""Settings: environment first, then the optional ``GATEWAY_CONFIG`` file, validated once at start-up.

A bad value raises :class:`ConfigError` naming the setting, so ``gunicorn.conf.py`` can print one
line and exit before any worker forks.

:class:`Settings` is the environment table: each field names its variable, its default and its
reader, once. A service starts from the gateway-wide ones (``CACHE_TTL``, ``CB_TIMEOUT``, ``CB_*``)
and its ``GATEWAY_CONFIG`` entry overrides them (``gateway.config.services``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.config.environment import (
    addresses,
    bind_address,
    environment,
    existing_file,
    format_name,
    history_interval,
    level_name,
    redis_server_url,
    tcp_port,
    workers,
)
from gateway.config.file import Positions, locate, read_config_file
from gateway.config.redis import RedisClusterNodes, RedisSentinel, read_redis
from gateway.config.services import BUILTIN_SERVICES, BreakerSettings, HealthCheck, ServiceConfig, read_services
from gateway.config.values import ConfigError, count, number, option, positive, read_options, text, unknown_key, whole

__all__ = [
    "BUILTIN_SERVICES", "BreakerSettings", "ConfigError", "HealthCheck", "RedisClusterNodes", "RedisSentinel",
    "ServiceConfig",
    "Settings", "load_settings", "unknown_key",
]


@dataclass(frozen=True)
class Settings:
    """Every gateway setting, validated; each field is one environment variable, its default and its reader."""

    config_file: str | None = option(None, text, env="GATEWAY_CONFIG")
    redis_url: str | None = option(None, redis_server_url, env="REDIS_URL")
    redis_sentinel: RedisSentinel | None = None  # REDIS_SENTINELS and its companions (gateway.config.redis)
    redis_cluster: RedisClusterNodes | None = None  # REDIS_CLUSTER_NODES and its companions (gateway.config.redis)
    redis_key_prefix: str = option("gw:", text, env="REDIS_KEY_PREFIX")
    port: int = option(3000, tcp_port, env="PORT")
    bind: str = option("0.0.0.0", bind_address, env="BIND")  # all interfaces: containers and Procfile platforms
    web_concurrency: int = option(1, workers, env="WEB_CONCURRENCY")  # 2 when unset and Redis is used
    services: Mapping[str, ServiceConfig] = field(default_factory=dict)
    cache_ttl: float = option(ServiceConfig.cache_ttl, number, env="CACHE_TTL")  # every service's default
    cache_stale_grace: float = option(300.0, number, env="CACHE_STALE_GRACE")
    cache_max_object_bytes: int = option(1_048_576, whole, env="CACHE_MAX_OBJECT_BYTES")
    cache_max_entries: int = option(10_000, count, env="CACHE_MAX_ENTRIES")
    cache_max_bytes: int = option(67_108_864, count, env="CACHE_MAX_BYTES")
    cb_timeout: float = option(ServiceConfig.timeout, positive, env="CB_TIMEOUT")  # every service's default
    breaker: BreakerSettings = field(default_factory=BreakerSettings)  # CB_*: every service's default
    health_check_interval: float = option(10.0, number, env="HEALTH_CHECK_INTERVAL")
    stats_history_interval: float = option(10.0, history_interval, env="STATS_HISTORY_INTERVAL")
    max_body_bytes: int = option(1_048_576, whole, env="MAX_BODY_BYTES")
    forwarded_allow_ips: tuple[str, ...] = option(("127.0.0.1", "::1"), addresses, env="FORWARDED_ALLOW_IPS")
    admin_token: str | None = option(None, text, env="ADMIN_TOKEN")
    ops_token: str | None = option(None, text, env="OPS_TOKEN")
    upstream_ca_bundle: str | None = option(None, existing_file, env="UPSTREAM_CA_BUNDLE")
    log_level: str = option("INFO", level_name, env="LOG_LEVEL")
    log_format: str = option("json", format_name, env="LOG_FORMAT")
    # The instance's run directory, shared by its workers (stats, health election, metrics, the bus);
    # gunicorn.conf.py makes one when it is not set.
    run_dir: str | None = option(None, text, env="GATEWAY_RUN_DIR")

    def service_for_prefix(self, prefix: str) -> ServiceConfig | None:
        """Return the service mounted at ``prefix`` (e.g. ``/orders``), if any."""
        for service in self.services.values():
            if service.prefix == prefix:
                return service
        return None


def load_settings(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build validated :class:`Settings` from environment variables, then ``overrides`` (same names).

    ``overrides`` is the test mapping of ``create_app(test_config)``; its keys are the environment
    variable names (``CACHE_TTL``...) and values may be typed. A ``services`` key in it is treated like
    the ``services`` mapping of ``GATEWAY_CONFIG``.
    """
    env = environment(environ, overrides)
    settings = _gateway_wide(env)
    entries: dict[Any, Any] = {}
    positions: Positions = {}
    if settings.config_file is not None:
        entries, positions = read_config_file(settings.config_file)
    if overrides and "services" in overrides:
        entries.update(overrides["services"])
        positions = {k: v for k, v in positions.items() if len(k) < 2 or k[1] not in overrides["services"]}
    path = str(settings.config_file)
    template = ServiceConfig(name="", prefix="/", url="", cache_ttl=settings.cache_ttl, timeout=settings.cb_timeout,
                             breaker=settings.breaker)
    services = read_services(template, env, entries, lambda error, name: locate(error, name, positions, path))
    if settings.redis_cluster is not None:
        for name in services:
            if "{" in name or "}" in name:
                raise locate(ConfigError(f"GATEWAY_CONFIG services.{name}", "a service name has no { or } on a "
                                         "Redis Cluster (it is its breaker keys' hash tag)"), name, positions, path)
    return replace(settings, services=services)


def _gateway_wide(env: Mapping[str, Any]) -> Settings:
    """Every option of :class:`Settings` and of :class:`BreakerSettings` (``CB_*``) that ``env`` sets."""
    values = read_options(Settings, env)
    values["breaker"] = BreakerSettings(**read_options(BreakerSettings, env))
    values["redis_sentinel"], values["redis_cluster"] = read_redis(env)
    if "web_concurrency" not in values and (values.get("redis_url") or values["redis_sentinel"]
                                            or values["redis_cluster"]):
        values["web_concurrency"] = 2  # the workers share the cache and breakers through Redis
    return Settings(**values)
