"""Services: the built-in five, a service's entry over them (or over the gateway's defaults), its checks."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.config.services import (
    BUILTIN_SERVICES,
    SERVICE_KEYS,
    BreakerSettings,
    HealthCheck,
    ServiceConfig,
    read_health_check,
    read_service,
)
from gateway.config.settings import ConfigError, load_settings

TEMPLATE = ServiceConfig(name="", prefix="/", url="", cache_ttl=60.0, timeout=2.0,
                         breaker=BreakerSettings(reset_timeout=5.0))


def test_a_new_service_starts_from_the_gateways_defaults() -> None:
    menu = read_service("menu", {"prefix": "/menus", "url": "http://m:1/", "breaker": {"volume_threshold": 9}},
                        None, TEMPLATE)
    assert (menu.name, menu.prefix, menu.url, menu.cache_ttl, menu.timeout) == ("menu", "/menus", "http://m:1", 60, 2)
    assert menu.breaker == BreakerSettings(reset_timeout=5.0, volume_threshold=9)
    with pytest.raises(ConfigError, match="a new service needs 'prefix' and 'url'"):
        read_service("menu", {"prefix": "/menus"}, None, TEMPLATE)


def test_an_entry_over_a_builtin_keeps_what_it_does_not_set() -> None:
    base = replace(TEMPLATE, name="order-service", prefix="/orders", url="http://o:1")
    changed = read_service("order-service", {"cache": "off", "rate_limit": {"limits": ["10/s"]}}, base, TEMPLATE)
    assert (changed.cache, changed.prefix, changed.cache_ttl) == (False, "/orders", 60)
    assert changed.guarded and changed.rate_limit is not None


def test_the_keys_are_the_declared_fields() -> None:
    assert SERVICE_KEYS == {"prefix", "url", "strip_prefix", "cache", "cache_ttl", "share_public_across_users",
                            "timeout", "breaker", "health_check", "rewrite_redirects", "rate_limit", "cors",
                            "urls", "balance", "retries", "outlier_detection"}
    assert [name for name, *_ in BUILTIN_SERVICES] == ["auth-service", "order-service", "restaurant-service",
                                                       "delivery-service", "tracking-service"]


def test_health_check_forms() -> None:
    assert read_health_check("hc", "off") == HealthCheck(enabled=False)
    assert read_health_check("hc", True) == HealthCheck()
    assert read_health_check("hc", {"expected_status": 204}).expected_status == ("204",)


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
