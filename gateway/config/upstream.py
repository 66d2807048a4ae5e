"""A service's upstream settings: its targets (``url`` or ``urls``), balancing, retries, outlier detection.

Retries are off unless a service's ``GATEWAY_CONFIG`` entry sets ``retries``; a service with one
target is never balanced nor ejected, so the defaults change nothing for a one-``url`` service.
Errors are :class:`gateway.config.values.ConfigError` naming the setting
(``services.<name>.retries.budget.percent``...); ``gateway.config.file`` adds the file, line and column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from gateway.config.values import ConfigError, number, positive, service_url, unknown_key

UPSTREAM_KEYS = {"urls", "balance", "retries", "outlier_detection"}
RETRY_KEYS = {"attempts", "backoff", "budget"}
BACKOFF_KEYS = {"base", "max"}
BUDGET_KEYS = {"percent", "min_retries", "window"}
OUTLIER_KEYS = {"consecutive_failures", "ejection_time", "max_ejection_time"}
BALANCES = ("round_robin", "least_outstanding")
MAX_TARGETS = 64
MAX_ATTEMPTS = 10
OFF = {"off", "false", "no", "0"}
ON = {"on", "true", "yes", "1"}


@dataclass(frozen=True)
class BudgetSettings:
    """At most ``percent`` % of the requests of the last ``window`` seconds may be retries, or ``min_retries``."""

    percent: float = 20.0
    min_retries: int = 3
    window: float = 10.0


@dataclass(frozen=True)
class RetrySettings:
    """How one service's failed attempts are tried again: how often, how far apart, within what budget."""

    attempts: int = 2  # in all, the first one included
    backoff_base: float = 0.025  # seconds: the first retry waits up to this (full jitter), then doubling
    backoff_max: float = 0.25
    budget: BudgetSettings = field(default_factory=BudgetSettings)


@dataclass(frozen=True)
class OutlierSettings:
    """When a target is taken out of rotation (passive outlier detection) and for how long."""

    consecutive_failures: int = 5
    ejection_time: float = 30.0  # the first ejection; each repeated one doubles it
    max_ejection_time: float = 300.0


def service_targets(service: Any) -> tuple[str, ...]:
    """The URLs a service's requests may go to: its ``urls``, or its one ``url``."""
    return service.urls or (service.url,)


def _error(setting: str, message: str) -> ConfigError:
    return ConfigError(setting, message)


def _mapping(setting: str, raw: Any, valid: set[str]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise _error(setting, f"expected a mapping of {', '.join(sorted(valid))}, got {raw!r}")
    bad = sorted(map(str, set(raw) - valid))
    if bad:
        raise unknown_key(f"{setting}.{bad[0]}", bad[0], valid)
    return raw


def _switch(raw: Any) -> bool | None:
    """True or False for on/off spellings (true, "off"...), None for anything else (a mapping)."""
    if isinstance(raw, bool) or raw is None:
        return bool(raw)
    if isinstance(raw, str) and raw.strip().lower() in OFF | ON:
        return raw.strip().lower() in ON
    return None


def _whole(setting: str, raw: Any, low: int, high: int) -> int:
    value = int(number(setting, raw, integer=True))
    if not low <= value <= high:
        raise _error(setting, f"expected {low}-{high}, got {raw!r}")
    return value


def parse_urls(setting: str, raw: Any) -> tuple[str, ...]:
    """``urls``: a list of one or more service URLs, each once."""
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise _error(setting, f"expected a list of URLs like [\"http://10.0.0.1:3002\", \"http://10.0.0.2:3002\"], "
                              f"got {raw!r}")
    if len(raw) > MAX_TARGETS:
        raise _error(setting, f"at most {MAX_TARGETS} URLs, got {len(raw)}")
    urls: list[str] = []
    for item in raw:
        url = service_url(setting, item)
        if url in urls:
            raise _error(setting, f"{url} is listed twice")
        urls.append(url)
    return tuple(urls)


def parse_retries(setting: str, raw: Any) -> RetrySettings | None:
    """``retries``: off (default), on (the defaults), or ``{attempts, backoff: {base, max}, budget: {...}}``."""
    switch = _switch(raw)
    if switch is not None:
        return RetrySettings() if switch else None
    raw = _mapping(setting, raw, RETRY_KEYS)
    default = RetrySettings()
    attempts = _whole(f"{setting}.attempts", raw.get("attempts", default.attempts), 2, MAX_ATTEMPTS)
    base, most = default.backoff_base, default.backoff_max
    if "backoff" in raw:
        backoff = _mapping(f"{setting}.backoff", raw["backoff"], BACKOFF_KEYS)
        base = number(f"{setting}.backoff.base", backoff.get("base", base))
        most = number(f"{setting}.backoff.max", backoff.get("max", max(most, base)))
        if most < base:
            raise _error(f"{setting}.backoff.max", f"must be at least the base ({base:g}), got {most:g}")
        if most > 10:
            raise _error(f"{setting}.backoff.max", f"at most 10 seconds, got {most:g}")
    budget = default.budget
    if "budget" in raw:
        braw = _mapping(f"{setting}.budget", raw["budget"], BUDGET_KEYS)
        percent = number(f"{setting}.budget.percent", braw.get("percent", budget.percent))
        if percent > 100:
            raise _error(f"{setting}.budget.percent", f"is a percentage of requests (0-100), got {percent:g}")
        window = number(f"{setting}.budget.window", braw.get("window", budget.window))
        if not 0 < window <= 3600:
            raise _error(f"{setting}.budget.window", f"seconds, more than 0 and at most 3600, got {window:g}")
        budget = BudgetSettings(percent=percent, window=window, min_retries=_whole(
            f"{setting}.budget.min_retries", braw.get("min_retries", budget.min_retries), 0, 1_000_000))
    return RetrySettings(attempts=attempts, backoff_base=base, backoff_max=most, budget=budget)


def parse_outlier(setting: str, raw: Any) -> OutlierSettings | None:
    """``outlier_detection``: on (the defaults), off (targets are never ejected), or a mapping."""
    switch = _switch(raw)
    if switch is not None:
        return OutlierSettings() if switch else None
    raw = _mapping(setting, raw, OUTLIER_KEYS)
    default = OutlierSettings()
    failures = _whole(f"{setting}.consecutive_failures", raw.get("consecutive_failures",
                                                                 default.consecutive_failures), 1, 1000)
    first = positive(f"{setting}.ejection_time", raw.get("ejection_time", default.ejection_time))
    most = positive(f"{setting}.max_ejection_time", raw.get("max_ejection_time",
                                                            max(default.max_ejection_time, first)))
    if most < first:
        raise _error(f"{setting}.max_ejection_time", f"must be at least the ejection_time ({first:g}), got {most:g}")
    return OutlierSettings(consecutive_failures=failures, ejection_time=first, max_ejection_time=most)


Service = TypeVar("Service")  # a ServiceConfig (defined above this module)


def apply_upstream(where: str, raw: Mapping[str, Any], service: Service) -> Service:
    """``service`` (a ServiceConfig) with the upstream keys of its ``GATEWAY_CONFIG`` entry ``raw`` applied."""
    if "urls" in raw and "url" in raw:
        raise _error(f"{where}.urls", "set either url (one target) or urls (several), not both")
    changes: dict[str, Any] = {}
    if "urls" in raw:
        urls = parse_urls(f"{where}.urls", raw["urls"])
        changes.update(urls=urls if len(urls) > 1 else (), url=urls[0])
    elif "url" in raw:
        changes["urls"] = ()  # a built-in's url replaced by one target
    if "balance" in raw:
        balance = str(raw["balance"]).strip().lower()
        if balance not in BALANCES:
            raise _error(f"{where}.balance", f"expected round_robin or least_outstanding, got {raw['balance']!r}")
        changes["balance"] = balance
    if "retries" in raw:
        changes["retries"] = parse_retries(f"{where}.retries", raw["retries"])
    if "outlier_detection" in raw:
        changes["outlier"] = parse_outlier(f"{where}.outlier_detection", raw["outlier_detection"])
    return replace(service, **changes) if changes else service  # type: ignore[type-var]
