"""load_settings: defaults, the test mapping over the environment, the file over both; a setting is one field."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from gateway.config import services as services_module
from gateway.config import settings as settings_module
from gateway.config.settings import BreakerSettings, ConfigError, Settings, load_settings
from gateway.config.values import count, option


def test_defaults_match_the_spec() -> None:
    s = load_settings({})
    assert s.port == 3000 and s.web_concurrency == 1 and s.redis_url is None
    assert s.redis_key_prefix == "gw:"
    assert (s.cache_ttl, s.cache_stale_grace, s.cache_max_object_bytes) == (300, 300, 1_048_576)
    assert (s.cache_max_entries, s.cache_max_bytes) == (10_000, 67_108_864)
    assert (s.cb_timeout, s.breaker.error_threshold, s.breaker.rolling_window) == (10, 50, 10)
    assert (s.breaker.volume_threshold, s.breaker.reset_timeout, s.health_check_interval) == (3, 30, 10)
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


def test_test_mapping_overrides_environment() -> None:
    s = load_settings({"CACHE_TTL": "10"}, {"CACHE_TTL": 20, "services": {"order-service": {"cache": False}}})
    assert s.cache_ttl == 20 and s.services["order-service"].cache is False


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


def test_every_setting_is_declared_once_or_read_by_hand() -> None:
    declared = {f.name: f.metadata.get("env") for f in dataclasses.fields(Settings)}
    by_hand = {name for name, env in declared.items() if env is None}
    assert by_hand == {"redis_sentinel", "redis_cluster", "services", "breaker"}
    names = [env for env in declared.values() if env]
    assert len(names) == len(set(names))
    assert load_settings({}) == dataclasses.replace(Settings(), services=load_settings({}).services)


def test_the_run_directory_is_a_setting() -> None:
    assert load_settings({}).run_dir is None
    assert load_settings({"GATEWAY_RUN_DIR": "/run/gateway"}).run_dir == "/run/gateway"


@dataclasses.dataclass(frozen=True)
class GrownBreakerSettings(BreakerSettings):
    """A breaker setting added the way a new one is: one field."""

    half_open_calls: int = option(1, count, env="CB_HALF_OPEN_CALLS")


def test_a_new_breaker_setting_is_one_field(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Its variable, its per-service key, its check and its error's place in the file all follow from the field."""
    for module in (settings_module, services_module):
        monkeypatch.setattr(module, "BreakerSettings", GrownBreakerSettings)
    path = tmp_path / "gateway.yaml"
    path.write_text("services:\n  order-service:\n    breaker: {half_open_calls: 3}\n")
    s = load_settings({"CB_HALF_OPEN_CALLS": "2", "GATEWAY_CONFIG": str(path)})
    calls: dict[str, Any] = {name: service.breaker.half_open_calls for name, service in s.services.items()}
    assert calls.pop("order-service") == 3 and set(calls.values()) == {2}
    assert s.services["order-service"].breaker.reset_timeout == 30  # its other thresholds stay the gateway's
    with pytest.raises(ConfigError) as caught:
        load_settings({"CB_HALF_OPEN_CALLS": "0"})
    assert str(caught.value) == "invalid setting CB_HALF_OPEN_CALLS: must be a number >= 1, got '0'"
    path.write_text("services:\n  order-service:\n    breaker: {half_open_cals: 3}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({"GATEWAY_CONFIG": str(path)})
    assert "did you mean 'half_open_calls'?" in str(caught.value) and caught.value.where.endswith(":3:15")
