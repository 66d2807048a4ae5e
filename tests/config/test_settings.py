"""Settings: defaults, environment, GATEWAY_CONFIG files, and one-line failures."""

from __future__ import annotations

import json

import pytest

from gateway.config.settings import ConfigError, load_settings


def test_defaults_match_the_spec() -> None:
    s = load_settings({})
    assert s.port == 3000 and s.web_concurrency == 1 and s.redis_url is None
    assert s.redis_key_prefix == "gw:"
    assert (s.cache_ttl, s.cache_stale_grace, s.cache_max_object_bytes) == (300, 300, 1_048_576)
    assert (s.cache_max_entries, s.cache_max_bytes) == (10_000, 67_108_864)
    assert (s.cb_timeout, s.cb_error_threshold, s.cb_rolling_window) == (10, 50, 10)
    assert (s.cb_volume_threshold, s.cb_reset_timeout, s.health_check_interval) == (3, 30, 10)
    assert s.max_body_bytes == 1_048_576 and s.forwarded_allow_ips == ("127.0.0.1", "::1")
    assert s.admin_token is None and s.ops_token is None
    assert s.bind == "0.0.0.0"
    assert (s.log_level, s.log_format) == ("INFO", "json")
    orders = s.services["order-service"]
    assert (orders.prefix, orders.url, orders.cache) == ("/orders", "http://127.0.0.1:3002", True)
    assert s.services["auth-service"].cache is False
    assert s.services["tracking-service"].cache is False
    assert list(s.services) == ["auth-service", "order-service", "restaurant-service", "delivery-service",
                                "tracking-service"]


def test_redis_url_raises_default_workers_to_two() -> None:
    s = load_settings({"REDIS_URL": "rediss://:secret@cache.example:6380/0?ssl_cert_reqs=none"})
    assert s.web_concurrency == 2
    assert load_settings({"REDIS_URL": "redis://x", "WEB_CONCURRENCY": "3"}).web_concurrency == 3


def test_fractions_and_zero_are_kept() -> None:
    s = load_settings({"CB_RESET_TIMEOUT": "1.5", "CACHE_STALE_GRACE": "0", "HEALTH_CHECK_INTERVAL": "0",
                       "CACHE_TTL": "0.25"})
    assert s.cb_reset_timeout == 1.5 and s.cache_stale_grace == 0 and s.health_check_interval == 0
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


def test_gateway_config_yaml_overrides_and_adds(tmp_path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "services:\n"
        "  order-service:\n    cache_ttl: 60\n"
        "  menu-service:\n    prefix: /menus\n    url: http://127.0.0.1:4000/\n    cache_ttl: 300\n"
        "    share_public_across_users: true\n    timeout: 2.5\n"
        "    breaker: {error_threshold: 25, volume_threshold: 5, reset_timeout: 1.5, rolling_window: 20}\n"
    )
    s = load_settings({"GATEWAY_CONFIG": str(path), "CB_TIMEOUT": "7"})
    assert s.services["order-service"].cache_ttl == 60
    assert s.services["order-service"].timeout == 7
    menu = s.services["menu-service"]
    assert (menu.prefix, menu.url, menu.strip_prefix, menu.cache) == ("/menus", "http://127.0.0.1:4000", True, True)
    assert menu.share_public_across_users and menu.timeout == 2.5
    assert (menu.breaker.error_threshold, menu.breaker.volume_threshold) == (25, 5)
    assert (menu.breaker.reset_timeout, menu.breaker.rolling_window) == (1.5, 20)
    assert s.service_for_prefix("/menus") is menu


def test_gateway_config_json(tmp_path) -> None:
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps({"services": {"auth-service": {"cache": True}}}))
    assert load_settings({"GATEWAY_CONFIG": str(path)}).services["auth-service"].cache is True


@pytest.mark.parametrize(
    ("text", "setting_part"),
    [
        ("services:\n  order-service:\n    cache_tll: 60\n", "cache_tll"),
        ("services:\n  x-service:\n    prefix: /x\n", "x-service"),
        ("services:\n  x-service:\n    prefix: /health\n    url: http://127.0.0.1:1\n", "prefix"),
        ("services:\n  x-service:\n    prefix: /orders\n    url: http://127.0.0.1:1\n", "prefix"),
        ("services:\n  order-service:\n    breaker: {thresold: 1}\n", "thresold"),
        ("services:\n  order-service:\n    timeout: -1\n", "timeout"),
        ("other: 1\n", "GATEWAY_CONFIG"),
        ("services: [\n", "GATEWAY_CONFIG"),
    ],
)
def test_bad_gateway_config_is_named(tmp_path, text: str, setting_part: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings({"GATEWAY_CONFIG": str(path)})
    assert setting_part in caught.value.setting


def test_test_mapping_overrides_environment() -> None:
    s = load_settings({"CACHE_TTL": "10"}, {"CACHE_TTL": 20, "services": {"order-service": {"cache": False}}})
    assert s.cache_ttl == 20 and s.services["order-service"].cache is False


def test_health_check_settings(tmp_path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "services:\n"
        "  order-service:\n    health_check: {path: /ping, interval: 5, timeout: 1, expected_status: [200, 3xx]}\n"
        "  auth-service:\n    health_check: off\n"
    )
    s = load_settings({"GATEWAY_CONFIG": str(path)})
    check = s.services["order-service"].health_check
    assert (check.enabled, check.path, check.interval, check.timeout) == (True, "/ping", 5, 1)
    assert check.passes(200) and check.passes(302) and not check.passes(204)
    assert s.services["auth-service"].health_check.enabled is False
    default = s.services["delivery-service"].health_check
    assert (default.enabled, default.path, default.interval, default.expected_status) == (True, "/health", None,
                                                                                          ("2xx",))


@pytest.mark.parametrize(
    "raw",
    [{"path": "health"}, {"interval": 0}, {"expected_status": [99]}, {"expected_status": "6xx"},
     {"expected_status": []}, {"timeout": "x"}, 7],
)
def test_bad_health_check_is_named(raw: object) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({}, {"services": {"order-service": {"health_check": raw}}})
    assert caught.value.setting.startswith("GATEWAY_CONFIG services.order-service.health_check")


@pytest.mark.parametrize(
    ("name", "text", "setting", "message", "where"),
    [
        ("gateway.yaml", "services:\n  order-service:\n    cache_tll: 60\n",
         "GATEWAY_CONFIG services.order-service.cache_tll", "did you mean 'cache_ttl'?", ":3:5"),
        ("gateway.yaml", "services:\n  order-service:\n    breaker:\n      reset_timout: 1\n",
         "GATEWAY_CONFIG services.order-service.breaker.reset_timout", "did you mean 'reset_timeout'?", ":4:7"),
        ("gateway.yaml", "services:\n  order-service:\n    health_check: {pth: /x}\n",
         "GATEWAY_CONFIG services.order-service.health_check.pth", "did you mean 'path'?", ":3:20"),
        ("gateway.yaml", "services:\n  order-service:\n    timeout: -1\n",
         "GATEWAY_CONFIG services.order-service.timeout", "must be", ":3:14"),
        ("gateway.yaml", "services:\n  x-service:\n    prefix: /orders\n    url: http://127.0.0.1:1\n",
         "GATEWAY_CONFIG services.x-service.prefix", "already used by order-service", ":3:13"),
        ("gateway.yaml", "service:\n  x: 1\n", "GATEWAY_CONFIG", "did you mean 'services'?", ":1:1"),
        ("gateway.yaml", "services:\n  a: [1,\n", "GATEWAY_CONFIG", "does not parse", ":3:1"),
        ("gateway.yaml", "services:\n\tx: 1\n", "GATEWAY_CONFIG", "does not parse", ":2:1"),
        ("gateway.json", '{"services": {"order-service": {"timeout": 0}}}',
         "GATEWAY_CONFIG services.order-service.timeout", "greater than 0", ":1:44"),
        ("gateway.json", '{"services": {"order-service": {"cach": true}}}',
         "GATEWAY_CONFIG services.order-service.cach", "did you mean 'cache'?", ":1:33"),
        ("gateway.json", '{"services": {"order-service": {"timeout": 1,}}}', "GATEWAY_CONFIG",
         "does not parse", ":1:46"),
    ],
)
def test_config_errors_point_at_file_line_and_column(tmp_path, name: str, text: str, setting: str,
                                                     message: str, where: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings({"GATEWAY_CONFIG": str(path)})
    error = caught.value
    assert error.setting == setting
    assert message in str(error) and "\n" not in str(error)
    assert error.where == f"at {path}{where}", str(error)


def test_unknown_key_far_from_any_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({}, {"services": {"order-service": {"zzz": 1}}})
    assert "valid keys: balance, breaker, cache," in str(caught.value)


def test_rewrite_redirects_switch() -> None:
    s = load_settings({}, {"services": {"order-service": {"rewrite_redirects": False}}})
    assert s.services["order-service"].rewrite_redirects is False
    assert s.services["restaurant-service"].rewrite_redirects is True
    with pytest.raises(ConfigError) as caught:
        load_settings({}, {"services": {"order-service": {"rewrite_redirects": "maybe"}}})
    assert caught.value.setting == "GATEWAY_CONFIG services.order-service.rewrite_redirects"
