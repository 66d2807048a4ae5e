"""Settings: environment first, then the optional ``GATEWAY_CONFIG`` file, validated once at start-up.

A bad value raises :class:`ConfigError` naming the setting, so ``gunicorn.conf.py`` can print one
line and exit before any worker forks.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from gateway.config.traffic import CorsSettings, RateLimitSettings, parse_cors, parse_rate_limit
from gateway.config.upstream import UPSTREAM_KEYS, OutlierSettings, RetrySettings, apply_upstream

RESERVED_PREFIXES = ("/health", "/ready", "/stats", "/metrics", "/dashboard", "/admin")


class ConfigError(ValueError):
    """A setting has a value the gateway cannot start with (``where``: file, line and column, if known)."""

    def __init__(self, setting: str, message: str, where: str | None = None) -> None:
        super().__init__(f"invalid setting {setting}: {message}" + (f" ({where})" if where else ""))
        self.setting = setting
        self.message = message
        self.where = where


def unknown_key(setting: str, key: Any, valid: set[str]) -> ConfigError:
    """An unknown key, with the nearest valid one suggested when there is a close one."""
    near = difflib.get_close_matches(str(key), sorted(valid), n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys: {', '.join(sorted(valid))}"
    return ConfigError(setting, f"unknown key {str(key)!r}{hint}")


@dataclass(frozen=True)
class HealthCheck:
    """How the gateway checks one service's health; ``interval``/``timeout`` None follow the gateway's."""

    enabled: bool = True
    path: str = "/health"
    interval: float | None = None
    timeout: float | None = None
    expected_status: tuple[str, ...] = ("2xx",)

    def passes(self, status: int) -> bool:
        """Whether an answer with ``status`` counts as healthy."""
        text = str(status)
        return any(text == want or (want.endswith("xx") and text[0] == want[0]) for want in self.expected_status)


@dataclass(frozen=True)
class BreakerSettings:
    """Thresholds of one service's circuit breaker."""

    error_threshold: float = 50.0
    volume_threshold: int = 3
    reset_timeout: float = 30.0
    rolling_window: float = 10.0


@dataclass(frozen=True)
class ServiceConfig:
    """One backend service: where it lives and how the gateway treats it."""

    name: str
    prefix: str
    url: str
    strip_prefix: bool = True
    cache: bool = True
    cache_ttl: float = 300.0
    share_public_across_users: bool = False
    timeout: float = 10.0
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    health_check: HealthCheck = field(default_factory=HealthCheck)
    rewrite_redirects: bool = True
    rate_limit: RateLimitSettings | None = None
    cors: CorsSettings | None = None
    urls: tuple[str, ...] = ()  # several targets (``url`` is the first); empty: ``url`` is the only one
    balance: str = "round_robin"  # or "least_outstanding"; with several targets
    retries: RetrySettings | None = None  # off unless configured
    outlier: OutlierSettings | None = field(default_factory=OutlierSettings)  # None: targets never ejected
    # Whether the request flow has anything to do before the cache lookup: one attribute read a request.
    guarded: bool = field(init=False, default=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "guarded", self.rate_limit is not None or self.cors is not None)


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
class Settings:
    """Every gateway setting, validated."""

    port: int = 3000
    bind: str = "0.0.0.0"  # the listen address (all interfaces: containers and Procfile platforms)
    web_concurrency: int = 1
    redis_url: str | None = None
    redis_sentinel: RedisSentinel | None = None
    redis_key_prefix: str = "gw:"
    services: Mapping[str, ServiceConfig] = field(default_factory=dict)
    cache_ttl: float = 300.0
    cache_stale_grace: float = 300.0
    cache_max_object_bytes: int = 1_048_576
    cache_max_entries: int = 10_000
    cache_max_bytes: int = 67_108_864
    cb_timeout: float = 10.0
    cb_error_threshold: float = 50.0
    cb_rolling_window: float = 10.0
    cb_volume_threshold: int = 3
    cb_reset_timeout: float = 30.0
    health_check_interval: float = 10.0
    stats_history_interval: float = 10.0
    max_body_bytes: int = 1_048_576
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1")
    admin_token: str | None = None
    ops_token: str | None = None
    upstream_ca_bundle: str | None = None
    log_level: str = "INFO"
    log_format: str = "json"

    def service_for_prefix(self, prefix: str) -> ServiceConfig | None:
        """Return the service mounted at ``prefix`` (e.g. ``/orders``), if any."""
        for service in self.services.values():
            if service.prefix == prefix:
                return service
        return None


BUILTIN_SERVICES = (
    # name, prefix, url variable, default url, cached by default
    ("auth-service", "/auth", "AUTH_SERVICE_URL", "http://127.0.0.1:3001", False),
    ("order-service", "/orders", "ORDER_SERVICE_URL", "http://127.0.0.1:3002", True),
    ("restaurant-service", "/restaurants", "RESTAURANT_SERVICE_URL", "http://127.0.0.1:3003", True),
    ("delivery-service", "/delivery", "DELIVERY_SERVICE_URL", "http://127.0.0.1:3004", True),
    ("tracking-service", "/tracking", "TRACKING_SERVICE_URL", "http://127.0.0.1:3005", False),
)

SERVICE_KEYS = {
    "prefix", "url", "strip_prefix", "cache", "cache_ttl", "share_public_across_users", "timeout", "breaker",
    "health_check", "rewrite_redirects", "rate_limit", "cors",
} | UPSTREAM_KEYS
BREAKER_KEYS = {"error_threshold", "volume_threshold", "reset_timeout", "rolling_window"}
HEALTH_KEYS = {"path", "interval", "timeout", "expected_status"}
SENTINEL_ONLY = ("REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD", "REDIS_PASSWORD", "REDIS_USERNAME",
                 "REDIS_DB", "REDIS_TLS")
LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*")


def _number(setting: str, raw: Any, *, minimum: float = 0.0, integer: bool = False) -> float:
    if isinstance(raw, bool):
        raise ConfigError(setting, f"expected a number, got {raw!r}")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(setting, f"expected a number, got {raw!r}") from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(setting, f"must be a number >= {minimum:g}, got {raw!r}")
    if integer and value != int(value):
        raise ConfigError(setting, f"expected a whole number, got {raw!r}")
    return int(value) if integer else value


def _bool(setting: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(setting, f"expected true or false, got {raw!r}")


def _url(setting: str, raw: Any, schemes: tuple[str, ...] = ("http", "https")) -> str:
    text = str(raw).strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ConfigError(setting, f"malformed URL {raw!r}") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(setting, f"expected a {'/'.join(schemes)} URL, got {raw!r}")
    if port == 0 or parts.fragment:
        raise ConfigError(setting, f"malformed URL {raw!r}")
    if setting != "REDIS_URL" and (parts.query or parts.username):
        raise ConfigError(setting, f"a service URL takes no query or credentials, got {raw!r}")
    return text.rstrip("/") if setting != "REDIS_URL" else text


def _sentinel_address(text: str, raw: Any) -> tuple[str, int]:
    """``host:port``, ``host`` (port 26379) or ``[v6 address]:port``, one item of ``REDIS_SENTINELS``."""
    host, port_text = text, "26379"
    if text.startswith("[") and text.endswith("]"):
        host = text[1:-1]
    elif text.startswith("[") or text.count(":") == 1:
        host, _, port_text = text.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
    if not host or any(c.isspace() or c in "/@?#[]" for c in host) or not port_text.isdigit() \
            or not 0 < int(port_text) < 65536:
        raise ConfigError("REDIS_SENTINELS", f"expected host:port[,host:port...], got {raw!r}")
    return host, int(port_text)


def _sentinel(get: Any) -> RedisSentinel | None:
    """The Sentinel form (``REDIS_SENTINELS`` and its companions), or None when it is not used."""
    raw = get("REDIS_SENTINELS")
    if raw is None:
        for name in SENTINEL_ONLY:
            if get(name) is not None:
                raise ConfigError(name, "only used with REDIS_SENTINELS (with REDIS_URL, put it in the URL)")
        return None
    if get("REDIS_URL") is not None:
        raise ConfigError("REDIS_SENTINELS", "set either REDIS_URL (one Redis) or REDIS_SENTINELS (Sentinel), not both")
    addresses = tuple(_sentinel_address(item.strip(), raw) for item in str(raw).split(","))
    master = get("REDIS_SENTINEL_MASTER")
    if master is None:
        raise ConfigError("REDIS_SENTINEL_MASTER", "required with REDIS_SENTINELS (the name the sentinels monitor, "
                                                   "e.g. mymaster)")
    master = str(master).strip()
    if any(c.isspace() for c in master):
        raise ConfigError("REDIS_SENTINEL_MASTER", f"a master name has no spaces, got {master!r}")
    db = int(_number("REDIS_DB", get("REDIS_DB") or 0, integer=True))
    tls = _bool("REDIS_TLS", get("REDIS_TLS") or False)
    secret = {name: None if get(name) is None else str(get(name))
              for name in ("REDIS_PASSWORD", "REDIS_USERNAME", "REDIS_SENTINEL_PASSWORD")}
    if secret["REDIS_USERNAME"] is not None and secret["REDIS_PASSWORD"] is None:
        raise ConfigError("REDIS_USERNAME", "needs REDIS_PASSWORD too")
    return RedisSentinel(addresses=addresses, master=master, password=secret["REDIS_PASSWORD"],
                         username=secret["REDIS_USERNAME"], db=db, tls=tls,
                         sentinel_password=secret["REDIS_SENTINEL_PASSWORD"])


def _prefix(setting: str, raw: Any) -> str:
    text = str(raw).strip()
    if not text.startswith("/") or text == "/" or text.endswith("/") or "//" in text:
        raise ConfigError(setting, f"a prefix looks like /name, got {raw!r}")
    if any(not (c.isalnum() or c in "-._~/") for c in text):
        raise ConfigError(setting, f"a prefix may use letters, digits and -._~/ only, got {raw!r}")
    for reserved in RESERVED_PREFIXES:
        if text == reserved or text.startswith(reserved + "/"):
            raise ConfigError(setting, f"{reserved} is the gateway's own path")
    return text


Positions = dict[tuple[str, ...], tuple[int, int]]


def _positions(text: str) -> Positions:
    """Line and column (1-based) of every key and value in a YAML (or JSON) text, by key path.

    A key's own position is stored under its path plus ``"<key>"``. JSON is read through the YAML
    composer too: it only serves to point at places, the values come from ``json``.
    """
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    found: Positions = {}

    def walk(node: Any, path: tuple[str, ...]) -> None:
        found.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                here = (*path, str(key.value))
                found[(*here, "<key>")] = (key.start_mark.line + 1, key.start_mark.column + 1)
                walk(value, here)

    if root is not None:
        walk(root, ())
    return found


def _read_file(path: str) -> tuple[dict[str, Any], Positions]:
    """The ``services`` mapping of a GATEWAY_CONFIG file and where each of its keys and values is."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError("GATEWAY_CONFIG", f"cannot read {path}: {reason}") from None
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError("GATEWAY_CONFIG", f"{path} does not parse: {exc.msg}",
                              f"at {path}:{exc.lineno}:{exc.colno}") from None
    else:
        import yaml  # only needed when a YAML file is used

        try:
            data = yaml.safe_load(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            where = f"at {path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else None
            problem = " ".join(str(part) for part in (exc.context, exc.problem) if part)
            raise ConfigError("GATEWAY_CONFIG", f"{path} does not parse: {problem}", where) from None
        except yaml.YAMLError as exc:
            raise ConfigError("GATEWAY_CONFIG", f"{path} does not parse: {exc}".splitlines()[0]) from None
    positions = _positions(text)

    def at(*keys: str) -> str | None:
        spot = positions.get(keys)
        return f"at {path}:{spot[0]}:{spot[1]}" if spot else None

    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("GATEWAY_CONFIG", "the file is a mapping with one key, 'services'", at())
    extra = sorted(map(str, set(data) - {"services"}))
    if extra:
        error = unknown_key("GATEWAY_CONFIG", extra[0], {"services"})
        raise ConfigError("GATEWAY_CONFIG", error.message, at(extra[0], "<key>"))
    services = data.get("services") or {}
    if not isinstance(services, dict):
        raise ConfigError("GATEWAY_CONFIG", "'services' must be a mapping of name to settings", at("services"))
    return services, positions


def _locate(error: ConfigError, name: str, positions: Positions, path: str) -> ConfigError:
    """The same error, told where in the GATEWAY_CONFIG file the offending key or value is."""
    head = f"GATEWAY_CONFIG services.{name}"
    if error.where or not error.setting.startswith(head):
        return error
    rest = [part for part in error.setting[len(head):].split(".") if part]
    keys: tuple[str, ...] = ("services", name, *rest)
    if error.message.startswith("unknown key"):
        keys = (*keys, "<key>")
    while keys and keys not in positions:
        keys = keys[:-1]
    spot = positions.get(keys)
    if spot is None:
        return error
    return ConfigError(error.setting, error.message, f"at {path}:{spot[0]}:{spot[1]}")


def _service(name: str, raw: Mapping[str, Any], base: ServiceConfig | None, defaults: Settings) -> ServiceConfig:
    where = f"GATEWAY_CONFIG services.{name}"
    if not isinstance(raw, Mapping):
        raise ConfigError(where, "must be a mapping")
    unknown = sorted(map(str, set(raw) - SERVICE_KEYS))
    if unknown:
        raise unknown_key(f"{where}.{unknown[0]}", unknown[0], SERVICE_KEYS)
    if base is None:
        if "prefix" not in raw or ("url" not in raw and "urls" not in raw):
            raise ConfigError(where, "a new service needs 'prefix' and 'url' (or 'urls')")
        base = ServiceConfig(
            name=name, prefix="/x", url="http://x", cache_ttl=defaults.cache_ttl, timeout=defaults.cb_timeout,
            breaker=_default_breaker(defaults),
        )
    breaker = base.breaker
    if "breaker" in raw:
        braw = raw["breaker"]
        if not isinstance(braw, Mapping):
            raise ConfigError(f"{where}.breaker", "must be a mapping")
        bad = sorted(map(str, set(braw) - BREAKER_KEYS))
        if bad:
            raise unknown_key(f"{where}.breaker.{bad[0]}", bad[0], BREAKER_KEYS)
        breaker = BreakerSettings(
            error_threshold=_number(f"{where}.breaker.error_threshold",
                                    braw.get("error_threshold", breaker.error_threshold)),
            volume_threshold=int(_number(f"{where}.breaker.volume_threshold",
                                         braw.get("volume_threshold", breaker.volume_threshold), integer=True)),
            reset_timeout=_number(f"{where}.breaker.reset_timeout", braw.get("reset_timeout", breaker.reset_timeout)),
            rolling_window=_positive(f"{where}.breaker.rolling_window",
                                     braw.get("rolling_window", breaker.rolling_window)),
        )
        _check_threshold(f"{where}.breaker.error_threshold", breaker.error_threshold)
    prefix = _prefix(f"{where}.prefix", raw["prefix"]) if "prefix" in raw else base.prefix
    return apply_upstream(where, raw, replace(
        base,
        prefix=prefix,
        url=_url(f"{where}.url", raw["url"]) if "url" in raw else base.url,
        strip_prefix=_bool(f"{where}.strip_prefix", raw.get("strip_prefix", base.strip_prefix)),
        cache=_bool(f"{where}.cache", raw.get("cache", base.cache)),
        cache_ttl=_number(f"{where}.cache_ttl", raw.get("cache_ttl", base.cache_ttl)),
        share_public_across_users=_bool(
            f"{where}.share_public_across_users", raw.get("share_public_across_users", base.share_public_across_users)
        ),
        timeout=_positive(f"{where}.timeout", raw.get("timeout", base.timeout)),
        breaker=breaker,
        health_check=_health_check(f"{where}.health_check", raw["health_check"]) if "health_check" in raw
        else base.health_check,
        rewrite_redirects=_bool(f"{where}.rewrite_redirects", raw.get("rewrite_redirects", base.rewrite_redirects)),
        rate_limit=parse_rate_limit(f"{where}.rate_limit", raw["rate_limit"], prefix) if "rate_limit" in raw
        else base.rate_limit,
        cors=parse_cors(f"{where}.cors", raw["cors"]) if "cors" in raw else base.cors,
    ))


def _health_check(where: str, raw: Any) -> HealthCheck:
    """``health_check``: false (off), true (the default check), or a mapping of path, interval, timeout..."""
    if isinstance(raw, bool) or (isinstance(raw, str) and raw.strip().lower() in {"off", "on", "false", "true"}):
        return HealthCheck() if _bool(where, raw) else HealthCheck(enabled=False)
    if not isinstance(raw, Mapping):
        raise ConfigError(where, f"expected false or a mapping of {', '.join(sorted(HEALTH_KEYS))}, got {raw!r}")
    bad = sorted(map(str, set(raw) - HEALTH_KEYS))
    if bad:
        raise unknown_key(f"{where}.{bad[0]}", bad[0], HEALTH_KEYS)
    path = str(raw.get("path", "/health")).strip()
    if not path.startswith("/") or any(c.isspace() or c == "#" for c in path):
        raise ConfigError(f"{where}.path", f"a path looks like /health, got {raw.get('path')!r}")
    expected = raw.get("expected_status", ["2xx"])
    if isinstance(expected, (str, int)) and not isinstance(expected, bool):
        expected = [expected]
    if not isinstance(expected, list) or not expected:
        raise ConfigError(f"{where}.expected_status", f"expected a status or a list of them, got {expected!r}")
    statuses = []
    for item in expected:
        text = str(item).strip().lower()
        if isinstance(item, bool) or not (
            (text.isdigit() and 100 <= int(text) <= 599) or (len(text) == 3 and text[0] in "12345" and text[1:] == "xx")
        ):
            raise ConfigError(f"{where}.expected_status", f"a status is 100-599 or a class like 2xx, got {item!r}")
        statuses.append(text)
    interval = _positive(f"{where}.interval", raw["interval"]) if "interval" in raw else None
    timeout = _positive(f"{where}.timeout", raw["timeout"]) if "timeout" in raw else None
    return HealthCheck(path=path, interval=interval, timeout=timeout, expected_status=tuple(statuses))


def _positive(setting: str, raw: Any) -> float:
    value = _number(setting, raw)
    if value <= 0:
        raise ConfigError(setting, f"must be greater than 0, got {raw!r}")
    return value


def _check_threshold(setting: str, value: float) -> None:
    if value > 100:
        raise ConfigError(setting, f"is a percentage (0-100), got {value:g}")


def _default_breaker(s: Settings) -> BreakerSettings:
    return BreakerSettings(
        error_threshold=s.cb_error_threshold,
        volume_threshold=s.cb_volume_threshold,
        reset_timeout=s.cb_reset_timeout,
        rolling_window=s.cb_rolling_window,
    )


def _bind_address(value: str) -> str:
    """``BIND``: an IPv4 or IPv6 address (``[::1]`` too) or a host name to listen on, without the port."""
    address = value.strip()
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    if _HOST_NAME.fullmatch(address):
        return address.lower()
    raise ConfigError("BIND", f"expected an IP address or host name to listen on (the port is PORT), got {value!r}")


def load_settings(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build validated :class:`Settings` from environment variables, then ``overrides`` (same names).

    ``overrides`` is the test mapping of ``create_app(test_config)``; its keys are the environment
    variable names (``CACHE_TTL``...) and values may be typed. A ``services`` key in it is treated like
    the ``services`` mapping of ``GATEWAY_CONFIG``.
    """
    env: dict[str, Any] = dict(os.environ if environ is None else environ)
    file_services: dict[str, Any] = {}
    positions: Positions = {}
    if overrides:
        env.update({k: v for k, v in overrides.items() if k != "services"})
    if env.get("GATEWAY_CONFIG"):
        from_file, positions = _read_file(str(env["GATEWAY_CONFIG"]))
        file_services.update(from_file)
    if overrides and "services" in overrides:
        file_services.update(overrides["services"])
        positions = {k: v for k, v in positions.items() if len(k) < 2 or k[1] not in overrides["services"]}

    def get(name: str) -> Any:
        value = env.get(name)
        return None if value is None or (isinstance(value, str) and value.strip() == "") else value

    def val(name: str, default: Any) -> Any:
        value = get(name)
        return default if value is None else value

    redis_url = get("REDIS_URL")
    if redis_url is not None:
        redis_url = _url("REDIS_URL", redis_url, schemes=("redis", "rediss", "unix"))
    redis_sentinel = _sentinel(get)
    log_level = str(get("LOG_LEVEL") or "INFO").upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError("LOG_LEVEL", f"expected one of {', '.join(sorted(LOG_LEVELS))}, got {get('LOG_LEVEL')!r}")
    log_format = str(get("LOG_FORMAT") or "json").lower()
    if log_format not in {"json", "text"}:
        raise ConfigError("LOG_FORMAT", f"expected json or text, got {get('LOG_FORMAT')!r}")
    ca_bundle = get("UPSTREAM_CA_BUNDLE")
    if ca_bundle is not None and not os.path.isfile(str(ca_bundle)):
        raise ConfigError("UPSTREAM_CA_BUNDLE", f"no such file {ca_bundle!r}")
    port = int(_number("PORT", val("PORT", 3000), integer=True))
    if not 0 < port < 65536:
        raise ConfigError("PORT", f"expected 1-65535, got {get('PORT')!r}")
    bind = _bind_address(str(get("BIND") or "0.0.0.0"))
    default_workers = 2 if redis_url or redis_sentinel else 1
    workers = int(_number("WEB_CONCURRENCY", get("WEB_CONCURRENCY") or default_workers, integer=True))
    if workers < 1:
        raise ConfigError("WEB_CONCURRENCY", "must be at least 1")
    allow_ips = tuple(
        ip.strip() for ip in str(get("FORWARDED_ALLOW_IPS") or "127.0.0.1,::1").split(",") if ip.strip()
    )
    settings = Settings(
        port=port,
        bind=bind,
        web_concurrency=workers,
        redis_url=redis_url,
        redis_sentinel=redis_sentinel,
        redis_key_prefix=str(get("REDIS_KEY_PREFIX") or "gw:"),
        cache_ttl=_number("CACHE_TTL", val("CACHE_TTL", 300)),
        cache_stale_grace=_number("CACHE_STALE_GRACE", val("CACHE_STALE_GRACE", 300)),
        cache_max_object_bytes=int(_number("CACHE_MAX_OBJECT_BYTES", val("CACHE_MAX_OBJECT_BYTES", 1_048_576),
                                           integer=True)),
        cache_max_entries=int(_number("CACHE_MAX_ENTRIES", val("CACHE_MAX_ENTRIES", 10_000), minimum=1, integer=True)),
        cache_max_bytes=int(_number("CACHE_MAX_BYTES", val("CACHE_MAX_BYTES", 67_108_864), minimum=1, integer=True)),
        cb_timeout=_positive("CB_TIMEOUT", val("CB_TIMEOUT", 10)),
        cb_error_threshold=_number("CB_ERROR_THRESHOLD", val("CB_ERROR_THRESHOLD", 50)),
        cb_rolling_window=_positive("CB_ROLLING_WINDOW", val("CB_ROLLING_WINDOW", 10)),
        cb_volume_threshold=int(_number("CB_VOLUME_THRESHOLD", val("CB_VOLUME_THRESHOLD", 3), integer=True)),
        cb_reset_timeout=_number("CB_RESET_TIMEOUT", val("CB_RESET_TIMEOUT", 30)),
        health_check_interval=_number("HEALTH_CHECK_INTERVAL", val("HEALTH_CHECK_INTERVAL", 10)),
        stats_history_interval=_number("STATS_HISTORY_INTERVAL", val("STATS_HISTORY_INTERVAL", 10), minimum=1),
        max_body_bytes=int(_number("MAX_BODY_BYTES", val("MAX_BODY_BYTES", 1_048_576), integer=True)),
        forwarded_allow_ips=allow_ips,
        admin_token=get("ADMIN_TOKEN"),
        ops_token=get("OPS_TOKEN"),
        upstream_ca_bundle=ca_bundle,
        log_level=log_level,
        log_format=log_format,
    )
    _check_threshold("CB_ERROR_THRESHOLD", settings.cb_error_threshold)
    if settings.stats_history_interval > 60:
        raise ConfigError("STATS_HISTORY_INTERVAL", f"at most 60 seconds, got {get('STATS_HISTORY_INTERVAL')!r}")

    services: dict[str, ServiceConfig] = {}
    for name, prefix, variable, default_url, cached in BUILTIN_SERVICES:
        services[name] = ServiceConfig(
            name=name,
            prefix=prefix,
            url=_url(variable, get(variable) or default_url),
            cache=cached,
            cache_ttl=settings.cache_ttl,
            timeout=settings.cb_timeout,
            breaker=_default_breaker(settings),
        )
    for name, raw in file_services.items():
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise ConfigError("GATEWAY_CONFIG", f"bad service name {name!r}")
        try:
            services[name] = _service(name, raw, services.get(name), settings)
        except ConfigError as error:
            raise _locate(error, name, positions, str(env.get("GATEWAY_CONFIG"))) from None
    prefixes: dict[str, str] = {}
    for service in services.values():
        if service.prefix in prefixes:
            clash = ConfigError(f"GATEWAY_CONFIG services.{service.name}.prefix",
                                f"{service.prefix} is already used by {prefixes[service.prefix]}")
            raise _locate(clash, service.name, positions, str(env.get("GATEWAY_CONFIG")))
        prefixes[service.prefix] = service.name
    return replace(settings, services=services)
