"""The admin blueprint: bearer token, breaker control and cache purge, on a minimal Flask app."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from flask import Flask, Response

from blueprints.admin import admin
from gateway.breaker import BreakerRegistry
from gateway.clock import FakeClock
from gateway.config import load_settings
from gateway.errors import GatewayError, error_body
from tests.cache_support import SERVICE, Gateway, memory_cache

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def body(response: Any) -> Any:
    """The JSON body of a test response."""
    return response.get_json()


def make_app(admin_token: str | None = TOKEN) -> Flask:
    """A Flask app with only the admin blueprint, the engine parts it uses and the JSON error handler."""
    settings = load_settings({}, {"ADMIN_TOKEN": admin_token or ""})
    app = Flask(__name__)
    app.config["GATEWAY_SETTINGS"] = settings
    BreakerRegistry(settings, None, FakeClock()).init_app(app)
    app.extensions["gateway.cache"] = memory_cache(FakeClock())

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
    app.extensions["gateway.cache"] = gw.cache
    gw.request()
    for method, url in (("post", "/admin/circuit-breakers/order-service/open"), ("delete", "/admin/cache")):
        response = getattr(app.test_client(), method)(url, headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert body(response)["error"]["code"] == "unauthorized"
    assert gw.request().cache == "HIT"  # nothing was purged
    assert app.extensions["gateway.breakers"]["order-service"].state == "CLOSED"


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
    assert app.extensions["gateway.breakers"]["order-service"].state == "OPEN"
    assert body(client.post("/admin/circuit-breakers/order-service/close", headers=AUTH))["state"] == "CLOSED"
    assert body(client.post("/admin/circuit-breakers/order-service/reset", headers=AUTH))["fires"] == 0


def test_reset_also_clears_the_published_stats(app: Flask) -> None:
    resets: list[str] = []

    class FakeStats:
        def reset_breaker(self, service: str) -> None:
            resets.append(service)

    app.extensions["gateway.stats"] = FakeStats()
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
    app.extensions["gateway.cache"] = gw.cache
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
