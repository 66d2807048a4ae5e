"""The environment as read (blank is unset), the gateway-wide variables' readers, and their one-line errors."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config.environment import (
    addresses,
    bind_address,
    environment,
    format_name,
    history_interval,
    level_name,
    redis_server_url,
    tcp_port,
    workers,
)
from gateway.config.settings import ConfigError, load_settings


def test_overrides_win_and_blank_means_unset() -> None:
    env = environment({"PORT": "1", "BIND": "  ", "CACHE_TTL": "5"}, {"PORT": 2, "LOG_LEVEL": None, "services": {}})
    assert env == {"PORT": 2, "CACHE_TTL": "5"}


@pytest.mark.parametrize(("reader", "raw", "value"), [
    (tcp_port, "8080", 8080), (bind_address, "[::1]", "::1"), (bind_address, "Gateway.Internal", "gateway.internal"),
    (workers, "4", 4), (addresses, " 10.0.0.1, ,::1 ", ("10.0.0.1", "::1")), (level_name, "debug", "DEBUG"),
    (format_name, "TEXT", "text"), (history_interval, "60", 60.0),
    (redis_server_url, " rediss://:pw@cache:6380/0?ssl_cert_reqs=none ", "rediss://:pw@cache:6380/0?ssl_cert_reqs=none"),
])
def test_readers(reader: Any, raw: Any, value: Any) -> None:
    assert reader("X", raw) == value


def test_redis_url_raises_default_workers_to_two() -> None:
    s = load_settings({"REDIS_URL": "rediss://:secret@cache.example:6380/0?ssl_cert_reqs=none"})
    assert s.web_concurrency == 2
    assert load_settings({"REDIS_URL": "redis://x", "WEB_CONCURRENCY": "3"}).web_concurrency == 3


def test_fractions_and_zero_are_kept() -> None:
    s = load_settings({"CB_RESET_TIMEOUT": "1.5", "CACHE_STALE_GRACE": "0", "HEALTH_CHECK_INTERVAL": "0",
                       "CACHE_TTL": "0.25"})
    assert s.breaker.reset_timeout == 1.5 and s.cache_stale_grace == 0 and s.health_check_interval == 0
    assert s.services["order-service"].cache_ttl == 0.25


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"CACHE_TTL": "abc"}, "CACHE_TTL"),
        ({"CB_RESET_TIMEOUT": "-1"}, "CB_RESET_TIMEOUT"),
        ({"CB_TIMEOUT": "0"}, "CB_TIMEOUT"),
        ({"CB_TIMEOUT": "nan"}, "CB_TIMEOUT"),
        ({"ORDER_SERVICE_URL": "not a url"}, "ORDER_SERVICE_URL"),
        ({"ORDER_SERVICE_URL": "ftp://x"}, "ORDER_SERVICE_URL"),
        ({"ORDER_SERVICE_URL": "http://x:99999"}, "ORDER_SERVICE_URL"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"PORT": "70000"}, "PORT"),
        ({"BIND": "0.0.0.0:3000"}, "BIND"),
        ({"BIND": "every interface"}, "BIND"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY"),
        ({"CB_ERROR_THRESHOLD": "150"}, "CB_ERROR_THRESHOLD"),
        ({"CB_VOLUME_THRESHOLD": "2.5"}, "CB_VOLUME_THRESHOLD"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"UPSTREAM_CA_BUNDLE": "/nonexistent/ca.pem"}, "UPSTREAM_CA_BUNDLE"),
        ({"STATS_HISTORY_INTERVAL": "0.5"}, "STATS_HISTORY_INTERVAL"),
        ({"STATS_HISTORY_INTERVAL": "61"}, "STATS_HISTORY_INTERVAL"),
        ({"GATEWAY_CONFIG": "/nonexistent/gateway.yaml"}, "GATEWAY_CONFIG"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert caught.value.setting == setting
    assert setting in str(caught.value) and "\n" not in str(caught.value)
