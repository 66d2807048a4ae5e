"""The services behind the gateway: their settings, the built-in five, and reading a ``GATEWAY_CONFIG`` entry.

Every key of a service's entry is an :func:`~gateway.config.values.option` field of
:class:`ServiceConfig` (or of its :class:`BreakerSettings`, :class:`HealthCheck`), declared once
with its default and its reader; only ``breaker`` (a group of options) and ``rate_limit`` (whose
paths depend on the prefix) are read by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.config.traffic import CorsSettings, RateLimitSettings, parse_cors, parse_rate_limit
from gateway.config.upstream import UPSTREAM_KEYS, OutlierSettings, RetrySettings, apply_upstream
from gateway.config.values import (
    REQUIRED,
    ConfigError,
    check_keys,
    number,
    option,
    option_names,
    percentage,
    positive,
    read_group,
    read_options,
    service_prefix,
    service_url,
    switch,
    whole,
)


def _path(setting: str, raw: Any) -> str:
    path = str(raw).strip()
    if not path.startswith("/") or any(c.isspace() or c == "#" for c in path):
        raise ConfigError(setting, f"a path looks like /health, got {raw!r}")
    return path


def _statuses(setting: str, raw: Any) -> tuple[str, ...]:
    """``200``, ``"2xx"`` or a list of them."""
    expected = [raw] if isinstance(raw, (str, int)) and not isinstance(raw, bool) else raw
    if not isinstance(expected, list) or not expected:
        raise ConfigError(setting, f"expected a status or a list of them, got {expected!r}")
    statuses = []
    for item in expected:
        status = str(item).strip().lower()
        if isinstance(item, bool) or not (
            (status.isdigit() and 100 <= int(status) <= 599)
            or (len(status) == 3 and status[0] in "12345" and status[1:] == "xx")
        ):
            raise ConfigError(setting, f"a status is 100-599 or a class like 2xx, got {item!r}")
        statuses.append(status)
    return tuple(statuses)


@dataclass(frozen=True)
class HealthCheck:
    """How the gateway checks one service's health; ``interval``/``timeout`` None follow the gateway's."""

    enabled: bool = True
    path: str = option("/health", _path)
    interval: float | None = option(None, positive)
    timeout: float | None = option(None, positive)
    expected_status: tuple[str, ...] = option(("2xx",), _statuses)

    def passes(self, status: int) -> bool:
        """Whether an answer with ``status`` counts as healthy."""
        text = str(status)
        return any(text == want or (want.endswith("xx") and text[0] == want[0]) for want in self.expected_status)


HEALTH_KEYS = option_names(HealthCheck)


def read_health_check(setting: str, raw: Any) -> HealthCheck:
    """``health_check``: false (off), true (the default check), or a mapping of path, interval, timeout..."""
    if isinstance(raw, bool) or (isinstance(raw, str) and raw.strip().lower() in {"off", "on", "false", "true"}):
        return HealthCheck() if switch(setting, raw) else HealthCheck(enabled=False)
    if not isinstance(raw, Mapping):
        raise ConfigError(setting, f"expected false or a mapping of {', '.join(sorted(HEALTH_KEYS))}, got {raw!r}")
    return HealthCheck(**read_group(setting, raw, HealthCheck))


@dataclass(frozen=True)
class BreakerSettings:
    """Thresholds of one service's circuit breaker: gateway-wide from ``CB_*``, per service from ``breaker``.

    One field per setting, nothing else to edit: its variable, its key, its check, its listing in
    ``/admin/services`` and its name in the Redis scripts (``ARGV.<name>``) all follow from it.
    """

    error_threshold: float = option(50.0, percentage, env="CB_ERROR_THRESHOLD")
    volume_threshold: int = option(3, whole, env="CB_VOLUME_THRESHOLD")
    reset_timeout: float = option(30.0, number, env="CB_RESET_TIMEOUT")
    rolling_window: float = option(10.0, positive, env="CB_ROLLING_WINDOW")
    # With Redis: how long a worker lets calls through on Redis's CLOSED answer without asking again
    # (their successes told in batches); 0 asks Redis before and after every call.
    closed_hold: float = option(0.5, number, env="CB_CLOSED_HOLD")


@dataclass(frozen=True)
class ServiceConfig:
    """One backend service: where it lives and how the gateway treats it."""

    name: str
    prefix: str = option(REQUIRED, service_prefix)
    url: str = option(REQUIRED, service_url)
    strip_prefix: bool = option(True, switch)
    cache: bool = option(True, switch)
    cache_ttl: float = option(300.0, number)  # CACHE_TTL sets it for every service
    share_public_across_users: bool = option(False, switch)
    timeout: float = option(10.0, positive)  # CB_TIMEOUT sets it for every service
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    health_check: HealthCheck = option(HealthCheck(), read_health_check)
    rewrite_redirects: bool = option(True, switch)
    rate_limit: RateLimitSettings | None = None
    cors: CorsSettings | None = option(None, parse_cors)
    # Read by gateway.config.upstream (``urls``, ``balance``, ``retries``, ``outlier_detection``):
    urls: tuple[str, ...] = ()  # several targets (``url`` is the first); empty: ``url`` is the only one
    balance: str = "round_robin"  # or "least_outstanding"; with several targets
    retries: RetrySettings | None = None  # off unless configured
    outlier: OutlierSettings | None = field(default_factory=OutlierSettings)  # None: targets never ejected
    # Whether the request flow has anything to do before the cache lookup: one attribute read a request.
    guarded: bool = field(init=False, default=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "guarded", self.rate_limit is not None or self.cors is not None)


SERVICE_KEYS = option_names(ServiceConfig) | {"breaker", "rate_limit"} | UPSTREAM_KEYS

BUILTIN_SERVICES = (
    # name, prefix, url variable, default url, cached by default
    ("auth-service", "/auth", "AUTH_SERVICE_URL", "http://127.0.0.1:3001", False),
    ("order-service", "/orders", "ORDER_SERVICE_URL", "http://127.0.0.1:3002", True),
    ("restaurant-service", "/restaurants", "RESTAURANT_SERVICE_URL", "http://127.0.0.1:3003", True),
    ("delivery-service", "/delivery", "DELIVERY_SERVICE_URL", "http://127.0.0.1:3004", True),
    ("tracking-service", "/tracking", "TRACKING_SERVICE_URL", "http://127.0.0.1:3005", False),
)


def read_service(name: str, raw: Any, base: ServiceConfig | None, template: ServiceConfig) -> ServiceConfig:
    """Service ``name``'s ``GATEWAY_CONFIG`` entry over ``base`` (None: a new service, from ``template``)."""
    where = f"GATEWAY_CONFIG services.{name}"
    if not isinstance(raw, Mapping):
        raise ConfigError(where, "must be a mapping")
    check_keys(where, raw, SERVICE_KEYS)
    if base is None:
        if "prefix" not in raw or ("url" not in raw and "urls" not in raw):
            raise ConfigError(where, "a new service needs 'prefix' and 'url' (or 'urls')")
        base = replace(template, name=name)
    changes = read_options(ServiceConfig, raw, where)
    if "breaker" in raw:
        changes["breaker"] = replace(base.breaker, **read_group(f"{where}.breaker", raw["breaker"], BreakerSettings))
    if "rate_limit" in raw:
        mounted_at = changes.get("prefix", base.prefix)
        changes["rate_limit"] = parse_rate_limit(f"{where}.rate_limit", raw["rate_limit"], mounted_at)
    return apply_upstream(where, raw, replace(base, **changes))


def read_services(template: ServiceConfig, env: Mapping[str, Any], entries: Mapping[Any, Any],
                  locate: Callable[[ConfigError, str], ConfigError]) -> dict[str, ServiceConfig]:
    """The built-in services (their URLs from ``env``), then ``entries`` over them; every prefix used once.

    ``template`` holds the gateway-wide defaults a service starts from; ``locate`` tells an error
    about a service's entry where in the file it is.
    """
    services = {
        name: replace(template, name=name, prefix=path, url=service_url(variable, env.get(variable, default)),
                      cache=cached)
        for name, path, variable, default, cached in BUILTIN_SERVICES
    }
    for name, raw in entries.items():
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise ConfigError("GATEWAY_CONFIG", f"bad service name {name!r}")
        try:
            services[name] = read_service(name, raw, services.get(name), template)
        except ConfigError as error:
            raise locate(error, name) from None
    owners: dict[str, str] = {}
    for service in services.values():
        if service.prefix in owners:
            raise locate(ConfigError(f"GATEWAY_CONFIG services.{service.name}.prefix",
                                     f"{service.prefix} is already used by {owners[service.prefix]}"), service.name)
        owners[service.prefix] = service.name
    return services
