"""The service listing (gateway/observe/inventory.py): every setting as it could be written back, no secret."""

from __future__ import annotations

from typing import Any

from gateway.config.settings import load_settings
from gateway.observe.health import HealthMonitor
from gateway.observe.inventory import (
    describe_cors,
    describe_rate_limit,
    describe_service,
    describe_services,
    redact_url,
)


def test_credentials_in_a_url_are_replaced() -> None:
    assert redact_url("redis://user:pw@cache:6379/0?x=1") == "redis://***@cache:6379/0"
    assert redact_url("redis://:pw@cache:6379") == "redis://***@cache:6379"
    assert redact_url("http://127.0.0.1:3002/base") == "http://127.0.0.1:3002/base"
    assert redact_url(None) is None and redact_url("") == ""


class Breaker:
    def __init__(self, state: str | None) -> None:
        self._state = state

    @property
    def state(self) -> str:
        if self._state is None:
            raise ConnectionError("the shared breaker cannot be read")
        return self._state

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state}


class Registry(dict[str, Breaker]):
    pass


def test_a_service_shows_its_breakers_state_or_none_when_unreadable() -> None:
    settings = load_settings({})
    orders = settings.services["order-service"]
    assert describe_service(orders, breakers=Registry({"order-service": Breaker("OPEN")}))["breaker"]["state"] == "OPEN"
    assert describe_service(orders, breakers=Registry({"order-service": Breaker(None)}))["breaker"]["state"] is None
    assert describe_service(orders)["breaker"]["state"] is None
    assert describe_service(orders)["upstream"] == orders.url and describe_service(orders)["name"] == "order-service"


def test_the_health_check_is_the_monitors_effective_one_or_the_configured_one() -> None:
    settings = load_settings({"HEALTH_CHECK_INTERVAL": "7"}, {"services": {"auth-service": {"health_check": "off"}}})
    monitor = HealthMonitor(settings)
    orders, auth = settings.services["order-service"], settings.services["auth-service"]
    assert describe_service(orders, health=monitor)["health_check"] == {
        "path": "/health", "interval_s": 7.0, "timeout_s": 2.0, "expected_status": ["2xx"]}
    assert describe_service(orders)["health_check"]["interval_s"] is None  # the gateway-wide default
    assert describe_service(auth, health=monitor)["health_check"] is None
    assert describe_service(auth)["health_check"] is None


def test_rate_limit_and_cors_read_back_as_configured_or_none() -> None:
    settings = load_settings({}, {"services": {"order-service": {
        "rate_limit": {"key": "header:X-Api-Key", "limits": ["10/s"], "paths": {"/orders/search": "2/s"}},
        "cors": {"origins": ["*", "https://*.example.org"], "methods": "*", "headers": "*", "credentials": False}}}})
    orders = settings.services["order-service"]
    assert describe_rate_limit(orders) == {"key": "header:X-Api-Key", "limits": ["10/s"],
                                           "paths": {"/orders/search": ["2/s"]}, "redis_down": "open"}
    cors = describe_cors(orders)
    assert cors is not None and cors["origins"] == ["*", "https://*.example.org"]
    assert cors["methods"][0] == "*" and cors["headers"] == ["*"]
    plain = settings.services["auth-service"]
    assert describe_rate_limit(plain) is None and describe_cors(plain) is None


def test_the_listing_keeps_configuration_order_and_redacts_the_redis_url() -> None:
    settings = load_settings({}, {"REDIS_URL": "redis://:secret@cache.example:6379/0"})
    listing = describe_services(settings)
    assert [s["name"] for s in listing["services"]] == list(settings.services)
    assert listing["gateway"]["redis"] == "redis://***@cache.example:6379/0"
    assert listing["gateway"]["max_body_bytes"] == settings.max_body_bytes
    assert "secret" not in str(listing)
