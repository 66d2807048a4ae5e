"""The rate_limit and cors sections of a service's entry: what they accept, what they refuse, what they make."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config.traffic import parse_cors, parse_limit, parse_rate_limit
from gateway.config.values import ConfigError


@pytest.mark.parametrize(("raw", "quota", "window", "name"), [
    ("10/s", 10, 1, "per-second"), ("1000/h", 1000, 3600, "per-hour"), ("100/5m", 100, 300, "per-300s"),
    (" 7/D ", 7, 86400, "per-day"),
])
def test_a_limit_is_a_quota_per_window(raw: str, quota: int, window: int, name: str) -> None:
    limit = parse_limit("L", raw)
    assert (limit.quota, limit.window, limit.name) == (quota, window, name)


@pytest.mark.parametrize("raw", ["10", "10/y", "0/s", "10/0s", "5/8d", True, "ten/s"])
def test_a_bad_limit_is_named(raw: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_limit("services.x.rate_limit.limits", raw)
    assert caught.value.setting == "services.x.rate_limit.limits"


def test_a_rate_limit_makes_its_policy_header_and_script_arguments_once() -> None:
    settings = parse_rate_limit("R", {"limits": ["1000/h", "10/s"], "paths": {"/orders/search": "2/s"}}, "/orders")
    assert settings is not None
    assert settings.key == "ip" and settings.redis_down == "open"
    rule = settings.rule
    assert [x.window for x in rule.limits] == [1, 3600]  # shortest window first
    assert rule.policy == '"per-second";q=10;w=1, "per-hour";q=1000;w=3600'
    assert rule.script_args == (100_000, 1_000_000, 3_600_000, 3_600_000_000)
    assert settings.rule_for("/orders/search/x").path == "/orders/search"
    assert settings.rule_for("/orders/%73earch").path == "/orders/search"  # an escape does not dodge a rule
    assert settings.rule_for("/orders/searching") is rule


@pytest.mark.parametrize(("raw", "setting"), [
    ({"limits": ["1/s"], "key": "cookie"}, "R.key"),
    ({"key": "ip"}, "R.limits"),
    ({"limits": ["1/s", "2/s"]}, "R.limits"),
    ({"limits": ["1/s"], "paths": {"/other": "1/s"}}, "R.paths./other"),
    ({"limits": ["1/s"], "redis_down": "maybe"}, "R.redis_down"),
    ({"limits": ["1/s"], "limts": 1}, "R.limts"),
])
def test_a_bad_rate_limit_names_the_setting(raw: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rate_limit("R", raw, "/orders")
    assert caught.value.setting == setting


def test_off_means_no_section() -> None:
    assert parse_rate_limit("R", "off", "/orders") is None and parse_rate_limit("R", False, "/orders") is None
    assert parse_cors("C", "off") is None and parse_cors("C", None) is None


def test_header_keyed_limits_keep_the_header_name() -> None:
    settings = parse_rate_limit("R", {"limits": "5/s", "key": "header:X-Api-Key"}, "/orders")
    assert settings is not None and (settings.key, settings.header) == ("header", "X-Api-Key")


def test_cors_origins_exact_and_wildcard_subdomains() -> None:
    cors = parse_cors("C", {"origins": ["https://app.example.com", "https://*.example.org"], "methods": ["get"],
                            "credentials": True, "max_age": 600})
    assert cors is not None
    assert cors.allows("https://APP.example.com") and cors.allows("https://a.b.example.org")
    assert not cors.allows("https://example.org")  # a wildcard needs a subdomain
    assert not cors.allows("http://app.example.com") and not cors.allows("https://evil.com/.example.org")
    assert cors.methods == ("GET",) and cors.credentials and cors.max_age == 600


def test_a_bad_cors_section_names_the_setting() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_cors("C", {"methods": ["GET"]})
    assert caught.value.setting == "C.origins"
