"""The ``rate_limit`` and ``cors`` settings of a service: their shapes and their validation.

Both are off unless a service's ``GATEWAY_CONFIG`` entry sets them. Errors are
:class:`~gateway.config.values.ConfigError` naming the setting (``services.<name>.rate_limit.limits``...);
``gateway.config.file`` adds the file, line and column.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from gateway.config.values import ConfigError, check_keys, number, switch

RATE_LIMIT_KEYS = {"key", "limits", "paths", "redis_down"}
CORS_KEYS = {"origins", "methods", "headers", "expose_headers", "credentials", "max_age"}
REDIS_DOWN = ("open", "closed", "local")
UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
         "d": 86400, "day": 86400}
WINDOW_NAMES = {1: "per-second", 60: "per-minute", 3600: "per-hour", 86400: "per-day"}
LIMIT = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*")
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP field name or method (RFC 9110 token)
ORIGIN = re.compile(r"(https?)://(\*\.)?([a-z0-9.-]+)(:\d{1,5})?")
SUBDOMAIN = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")  # what * may stand for
DEFAULT_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Limit:
    """``quota`` requests per ``window`` seconds, named for the RateLimit headers (``per-second``)."""

    quota: int
    window: int
    name: str

    @property
    def text(self) -> str:
        """As configured, in its largest whole unit: ``10/s``, ``1000/h``, ``100/300s``."""
        unit = {1: "s", 60: "m", 3600: "h", 86400: "d"}.get(self.window, f"{self.window}s")
        return f"{self.quota}/{unit}"


@dataclass(frozen=True)
class LimitRule:
    """The limits of the whole service (``path`` None) or of one path prefix; no limits: not limited."""

    path: str | None
    limits: tuple[Limit, ...]
    policy: str  # the RateLimit-Policy header value, made once
    # Per limit, made once: (seconds between two requests, window seconds).
    steps: tuple[tuple[float, int], ...] = ()
    # The Redis script's arguments: per limit, the interval and the window in microseconds.
    script_args: tuple[int, ...] = ()
    # Made once: the RateLimit-Policy header, and the RateLimit value's format (per limit remaining, reset).
    policy_header: tuple[str, str] = ("RateLimit-Policy", "")
    state_format: str = ""  # '"per-second";r=%d;t=%d, "per-hour";r=%d;t=%d'

    def __post_init__(self) -> None:
        steps = tuple((x.window / x.quota, x.window) for x in self.limits)
        args = tuple(n for x in self.limits for n in (x.window * 1_000_000 // x.quota, x.window * 1_000_000))
        state_format = ", ".join('"' + x.name.replace("%", "%%") + '";r=%d;t=%d' for x in self.limits)
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "script_args", args)
        object.__setattr__(self, "policy_header", ("RateLimit-Policy", self.policy))
        object.__setattr__(self, "state_format", state_format)


@dataclass(frozen=True)
class RateLimitSettings:
    """How one service's requests are limited: by what key, how much, and what to do without Redis."""

    key: str  # "ip", "credentials" or "header"
    header: str | None  # the header's name when key is "header"
    rule: LimitRule
    paths: tuple[LimitRule, ...]  # longest prefix first
    redis_down: str  # "open", "closed" or "local"

    def rule_for(self, path: str) -> LimitRule:
        """The rule of the longest configured path prefix ``path`` is under, else the service's.

        Matched after one percent-decode (``/menu`` and ``/%6Denu`` reach the same upstream path;
        encoded slashes and dot segments were refused before), so an escape cannot dodge a rule.
        """
        if not self.paths:
            return self.rule
        if "%" in path:
            path = unquote(path, errors="surrogateescape")
        for rule in self.paths:
            prefix = rule.path or ""
            if path == prefix or path.startswith(prefix + "/"):
                return rule
        return self.rule


@dataclass(frozen=True)
class CorsSettings:
    """What browsers on other origins may do with one service."""

    origins: frozenset[str]  # exact origins, lowercased ("https://app.example.com")
    wildcards: tuple[tuple[str, str], ...]  # ("https://", ".example.com") for https://*.example.com
    any_origin: bool  # "*"
    methods: tuple[str, ...]
    any_method: bool
    headers: frozenset[str]  # lowercased
    any_header: bool
    expose_headers: tuple[str, ...]
    credentials: bool
    max_age: int | None

    def allows(self, origin: str) -> bool:
        """Whether ``origin`` (as the browser sent it) may read this service's answers."""
        if self.any_origin:
            return True
        lowered = origin.lower()
        if lowered in self.origins:
            return True
        for scheme, suffix in self.wildcards:
            if lowered.startswith(scheme) and lowered.endswith(suffix):
                host = lowered[len(scheme):-len(suffix)]
                if SUBDOMAIN.fullmatch(host):
                    return True
        return False


def parse_limit(setting: str, raw: Any) -> Limit:
    """``"10/s"``, ``"1000/h"``, ``"100/5m"``: a quota per window."""
    text = str(raw).strip().lower()
    match = LIMIT.fullmatch(text) if not isinstance(raw, bool) else None
    if match is None or match.group(3) not in UNITS:
        raise ConfigError(setting, f"a limit looks like 10/s, 1000/h or 100/5m (units s, m, h, d), got {raw!r}")
    quota = int(match.group(1))
    window = int(match.group(2) or 1) * UNITS[match.group(3)]
    if quota < 1 or window < 1:
        raise ConfigError(setting, f"a limit needs a quota and a window of at least 1, got {raw!r}")
    if window > 7 * 86400:
        raise ConfigError(setting, f"a window is at most 7 days, got {raw!r}")
    return Limit(quota=quota, window=window, name=WINDOW_NAMES.get(window, f"per-{window}s"))


def _rule(setting: str, raw: Any, path: str | None) -> LimitRule:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise ConfigError(setting, f"expected a list of limits like [\"10/s\", \"1000/h\"], got {raw!r}")
    limits: list[Limit] = []
    for item in raw:
        limit = parse_limit(setting, item)
        if any(other.window == limit.window for other in limits):
            raise ConfigError(setting, f"two limits with the same window ({limit.name}); keep the lower one")
        limits.append(limit)
    limits.sort(key=lambda limit: limit.window)
    policy = ", ".join(f'"{limit.name}";q={limit.quota};w={limit.window}' for limit in limits)
    return LimitRule(path=path, limits=tuple(limits), policy=policy)


def parse_rate_limit(setting: str, raw: Any, prefix: str) -> RateLimitSettings | None:
    """``rate_limit``: false/off, or ``{key, limits, paths, redis_down}`` (``limits`` required)."""
    if raw is None or raw is False or (isinstance(raw, str) and raw.strip().lower() in {"off", "false"}):
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError(setting, f"expected off or a mapping of {', '.join(sorted(RATE_LIMIT_KEYS))}, got {raw!r}")
    check_keys(setting, raw, RATE_LIMIT_KEYS)
    key_text = str(raw.get("key", "ip")).strip()
    header: str | None = None
    if key_text.lower() in {"ip", "credentials"}:
        key = key_text.lower()
    elif key_text.lower().startswith("header:") and TOKEN.fullmatch(key_text[7:].strip()):
        key, header = "header", key_text[7:].strip()
    else:
        raise ConfigError(f"{setting}.key", f"expected ip, credentials or header:<Name>, got {raw.get('key')!r}")
    if "limits" not in raw:
        raise ConfigError(f"{setting}.limits", "required: a list of limits like [\"10/s\", \"1000/h\"]")
    rule = _rule(f"{setting}.limits", raw["limits"], None)
    if not rule.limits:
        raise ConfigError(f"{setting}.limits", "at least one limit (or rate_limit: off)")
    paths: list[LimitRule] = []
    raw_paths = raw.get("paths") or {}
    if not isinstance(raw_paths, Mapping):
        raise ConfigError(f"{setting}.paths", f"expected a mapping of path prefix to limits, got {raw_paths!r}")
    for path, limits in raw_paths.items():
        text = str(path).strip()
        where = f"{setting}.paths.{text}"
        if not (text == prefix or text.startswith(prefix + "/")) or text.endswith("/") or "//" in text:
            raise ConfigError(where, f"a path prefix is the client's path under {prefix} (like {prefix}/search), "
                                f"got {path!r}")
        paths.append(_rule(where, limits, text))
    paths.sort(key=lambda rule: len(rule.path or ""), reverse=True)
    redis_down = str(raw.get("redis_down", "open")).strip().lower()
    if redis_down not in REDIS_DOWN:
        raise ConfigError(f"{setting}.redis_down", f"expected open, closed or local, got {raw.get('redis_down')!r}")
    return RateLimitSettings(key=key, header=header, rule=rule, paths=tuple(paths), redis_down=redis_down)


def _names(setting: str, raw: Any, *, upper: bool) -> tuple[list[str], bool]:
    if isinstance(raw, str):
        raw = [part for part in raw.split(",") if part.strip()]
    if not isinstance(raw, list):
        raise ConfigError(setting, f"expected a list, got {raw!r}")
    names: list[str] = []
    wildcard = False
    for item in raw:
        text = str(item).strip()
        if text == "*":
            wildcard = True
            continue
        if isinstance(item, bool) or not TOKEN.fullmatch(text):
            raise ConfigError(setting, f"not a valid {'method' if upper else 'header name'}: {item!r}")
        names.append(text.upper() if upper else text)
    return names, wildcard


def parse_cors(setting: str, raw: Any) -> CorsSettings | None:
    """``cors``: false/off, or ``{origins, methods, headers, expose_headers, credentials, max_age}``."""
    if raw is None or raw is False or (isinstance(raw, str) and raw.strip().lower() in {"off", "false"}):
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError(setting, f"expected off or a mapping of {', '.join(sorted(CORS_KEYS))}, got {raw!r}")
    check_keys(setting, raw, CORS_KEYS)
    origins_raw = raw.get("origins")
    if isinstance(origins_raw, str):
        origins_raw = [origins_raw]
    if not isinstance(origins_raw, list) or not origins_raw:
        raise ConfigError(f"{setting}.origins", "required: a list like [\"https://app.example.com\", "
                                           "\"https://*.example.com\"] or [\"*\"]")
    exact: set[str] = set()
    wildcards: list[tuple[str, str]] = []
    any_origin = False
    for item in origins_raw:
        text = str(item).strip().lower()
        if text == "*":
            any_origin = True
            continue
        match = ORIGIN.fullmatch(text)
        if match is None or ".." in text or match.group(3).startswith(".") or match.group(3).endswith("."):
            raise ConfigError(f"{setting}.origins", f"an origin is scheme://host[:port] with no path, or "
                                               f"https://*.example.com, got {item!r}")
        if match.group(2):
            if "." not in match.group(3):
                raise ConfigError(f"{setting}.origins", f"a wildcard needs a domain with a dot after it, got {item!r}")
            wildcards.append((match.group(1) + "://", "." + match.group(3) + (match.group(4) or "")))
        else:
            exact.add(text)
    credentials = switch(f"{setting}.credentials", raw.get("credentials", False))
    if any_origin and credentials:
        raise ConfigError(f"{setting}.credentials", "browsers refuse credentials with origin \"*\"; list the origins")
    methods, any_method = _names(f"{setting}.methods", raw.get("methods", list(DEFAULT_METHODS)), upper=True)
    headers, any_header = _names(f"{setting}.headers", raw.get("headers", []), upper=False)
    exposed, any_exposed = _names(f"{setting}.expose_headers", raw.get("expose_headers", []), upper=False)
    if any_exposed:
        raise ConfigError(f"{setting}.expose_headers", "list the header names to expose (\"*\" is not accepted)")
    max_age: int | None = None
    if raw.get("max_age") is not None:
        max_age = int(number(f"{setting}.max_age", raw["max_age"], integer=True))
        if max_age > 86400:
            raise ConfigError(f"{setting}.max_age",
                              f"at most 86400 seconds (browsers cap it lower), got {raw['max_age']!r}")
    return CorsSettings(
        origins=frozenset(exact), wildcards=tuple(wildcards), any_origin=any_origin, methods=tuple(methods),
        any_method=any_method, headers=frozenset(h.lower() for h in headers), any_header=any_header,
        expose_headers=tuple(exposed), credentials=credentials, max_age=max_age,
    )
