"""The admin blueprint: bearer token, breaker control and cache purge, on a minimal Flask app."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from flask import Flask, Response

from blueprints.admin import admin
from blueprints.envelope import EXTENSION, gateway_of
from gateway.build import build_gateway
from gateway.clock import FakeClock
from gateway.config.settings import load_settings
from gateway.errors import GatewayError, error_body
from tests.support.cache import SERVICE, Gateway, memory_cache

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def body(response: Any) -> Any:
    """The JSON body of a test response."""
    return response.get_json()


def make_app(admin_token: str | None = TOKEN) -> Flask:
    """A Flask app with only the admin blueprint, the engine parts it uses and the JSON error handler."""
    app = Flask(__name__)
    settings = load_settings({}, {"ADMIN_TOKEN": admin_token or ""})
    app.extensions[EXTENSION] = build_gateway(settings, clock=FakeClock())

    @app.errorhandler(GatewayError)
    def render(error: GatewayError) -> Response:
        response = Response(error_body(error, None), status=error.status, mimetype="application/json")
        for name, value in error.headers:
            response.headers[name] = value
        return response

    app.register_blueprint(admin)
    return app


@pytest.fixture
def app() -> Flask:
    return make_app()


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"},
    {"Authorization": "Bearer s3cret-tokén"},
])
def test_missing_or_wrong_token_is_401(app: Flask, headers: dict[str, str]) -> None:
    clock = FakeClock()
    gw = Gateway(memory_cache(clock), clock)
    gateway_of(app).cache = gw.cache
    gw.request()
    for method, url in (("post", "/admin/circuit-breakers/order-service/open"), ("delete", "/admin/cache")):
        response = getattr(app.test_client(), method)(url, headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert body(response)["error"]["code"] == "unauthorized"
    assert gw.request().cache == "HIT"  # nothing was purged
    assert gateway_of(app).breakers["order-service"].state == "CLOSED"


def test_services_listing_needs_the_token(app: Flask) -> None:
    assert app.test_client().get("/admin/services").status_code == 401
    assert make_app(None).test_client().get("/admin/services", headers=AUTH).status_code == 403


def test_services_listing(app: Flask) -> None:
    answer = app.test_client().get("/admin/services", headers=AUTH)
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    listing = body(answer)
    names = [s["name"] for s in listing["services"]]
    assert names == list(gateway_of(app).settings.services)
    orders = listing["services"][names.index("order-service")]
    assert orders == {
        "name": "order-service", "prefix": "/orders", "upstream": "http://127.0.0.1:3002", "strip_prefix": True,
        "rewrite_redirects": True, "timeout_s": 10.0,
        "cache": {"enabled": True, "ttl_s": 300.0, "share_public_across_users": False},
        "breaker": {"error_threshold": 50.0, "volume_threshold": 3, "reset_timeout": 30.0, "rolling_window": 10.0,
                    "closed_hold": 0.5,
                    "state": "CLOSED"},
        "health_check": {"path": "/health", "interval_s": 10.0, "timeout_s": 2.0, "expected_status": ["2xx"]},
        "rate_limit": None, "cors": None,
    }
    assert listing["gateway"]["redis"] is None


def test_services_listing_shows_rate_limit_and_cors() -> None:
    from gateway.observe.inventory import describe_services

    settings = load_settings({}, {"services": {"order-service": {
        "rate_limit": {"key": "header:X-Api-Key", "limits": ["1000/h", "10/s"], "paths": {"/orders/search": "2/s"},
                       "redis_down": "closed"},
        "cors": {"origins": ["https://app.example.com", "https://*.example.org"], "max_age": 60}}}})
    orders = next(s for s in describe_services(settings)["services"] if s["name"] == "order-service")
    assert orders["rate_limit"] == {"key": "header:X-Api-Key", "limits": ["10/s", "1000/h"],
                                    "paths": {"/orders/search": ["2/s"]}, "redis_down": "closed"}
    assert orders["cors"] == {"origins": ["https://app.example.com", "https://*.example.org"],
                              "methods": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"], "headers": [],
                              "expose_headers": [], "credentials": False, "max_age": 60}


def test_services_listing_redacts_secrets() -> None:
    from gateway.observe.inventory import describe_services

    settings = load_settings({}, {"ADMIN_TOKEN": TOKEN, "OPS_TOKEN": "ops-secret",
                                  "REDIS_URL": "rediss://user:hunter2@cache.example:6380/0?ssl_cert_reqs=none"})
    text = str(describe_services(settings))
    assert "hunter2" not in text and TOKEN not in text and "ops-secret" not in text and "user:" not in text
    assert describe_services(settings)["gateway"]["redis"] == "rediss://***@cache.example:6380/0"


def test_unset_token_is_403() -> None:
    response = make_app(None).test_client().delete("/admin/cache", headers=AUTH)
    assert response.status_code == 403
    assert body(response)["error"]["code"] == "forbidden"


def test_force_breaker_open_close_reset(app: Flask) -> None:
    client = app.test_client()
    response = client.post("/admin/circuit-breakers/order-service/open", headers=AUTH)
    assert response.status_code == 200
    snap = body(response)
    assert (snap["service"], snap["action"], snap["state"], snap["forced"]) == ("order-service", "open", "OPEN", True)
    assert {"fires", "failures", "failure_rate", "latency_ms", "next_attempt_at"} <= set(snap)
    assert gateway_of(app).breakers["order-service"].state == "OPEN"
    assert body(client.post("/admin/circuit-breakers/order-service/close", headers=AUTH))["state"] == "CLOSED"
    assert body(client.post("/admin/circuit-breakers/order-service/reset", headers=AUTH))["fires"] == 0


def test_reset_also_clears_the_published_stats(app: Flask) -> None:
    resets: list[str] = []

    class FakeStats:
        def reset_breaker(self, service: str) -> None:
            resets.append(service)

    gateway_of(app).stats = FakeStats()  # type: ignore[assignment]
    client = app.test_client()
    client.post("/admin/circuit-breakers/order-service/open", headers=AUTH)
    assert resets == []
    client.post("/admin/circuit-breakers/order-service/reset", headers=AUTH)
    assert resets == ["order-service"]


def test_unknown_service_or_action_is_404(app: Flask) -> None:
    client = app.test_client()
    response = client.post("/admin/circuit-breakers/nope/open", headers=AUTH)
    assert response.status_code == 404
    assert body(response)["error"] == {"status": 404, "code": "not_found", "message": "No service named 'nope'.",
                                      "service": "nope", "request_id": None}
    response = client.post("/admin/circuit-breakers/order-service/explode", headers=AUTH)
    assert response.status_code == 404
    assert body(response)["error"]["code"] == "not_found"


@pytest.mark.parametrize(("query", "answer", "left"), [
    ("", {"purged": 3}, []),
    ("?path=/orders/123", {"purged": 1, "path": "/orders/123"}, ["/orders/7", "/restaurants/1"]),
    ("?prefix=/orders/", {"purged": 2, "prefix": "/orders/"}, ["/restaurants/1"]),
])
def test_purge_cache(app: Flask, query: str, answer: dict[str, Any], left: list[str]) -> None:
    clock = FakeClock()
    gw = Gateway(memory_cache(clock), clock)  # a real cache, filled through the request flow
    gateway_of(app).cache = gw.cache
    restaurants = replace(SERVICE, name="restaurant-service", prefix="/restaurants")
    gw.request("/orders/123")
    gw.request("/orders/7")
    gw.request("/restaurants/1", service=restaurants)
    response = app.test_client().delete(f"/admin/cache{query}", headers=AUTH)
    assert response.status_code == 200
    assert body(response) == {**answer, "store": "memory"}
    kept = [path for path in ("/orders/123", "/orders/7")
            if gw.request(path).cache == "HIT"] + (["/restaurants/1"] if gw.request(
                "/restaurants/1", service=restaurants).cache == "HIT" else [])
    assert kept == left
