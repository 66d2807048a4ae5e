"""The ops blueprint: /health, /health/services, /stats/*, /metrics, /dashboard and OPS_TOKEN."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response, g
from prometheus_client.parser import text_string_to_metric_families

from blueprints.envelope import EXTENSION, gateway_of
from blueprints.ops import OPEN_PATHS, guard, ops
from gateway import __version__
from gateway.breaker.core import Outcome
from gateway.build import build_gateway
from gateway.clock import FakeClock
from gateway.config.settings import load_settings
from gateway.errors import Forbidden, GatewayError, error_body

TOKEN = "s3cret-ops"


class Lifecycle:
    started_at = 0.0
    draining = False


class Link:
    def __init__(self, up: bool) -> None:
        self.up = up

    @property
    def is_up(self) -> bool:
        return self.up

    def ping(self) -> bool:
        return self.up


def make_app(tmp_path: Path, **env: Any) -> Flask:
    app = Flask(__name__)
    gateway = app.extensions[EXTENSION] = build_gateway(load_settings({}, env), clock=FakeClock(),
                                                         run_dir=str(tmp_path))
    gateway.lifecycle = Lifecycle()  # type: ignore[assignment]
    app.register_blueprint(ops)

    @app.errorhandler(GatewayError)
    def gateway_error(error: GatewayError) -> Response:
        response = Response(error_body(error, g.get("request_id")), status=error.status,
                            mimetype="application/json")
        for name, value in error.headers:
            response.headers.add(name, value)
        return response

    app.testing = True
    return app


def test_health(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    client = app.test_client()
    answer = client.get("/health")
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["status"] == "ok" and body["redis"] == "disabled" and body["version"] == __version__
    assert body["uptime_s"] > 0
    gateway_of(app).link = Link(up=False)
    assert client.get("/health").get_json()["redis"] == "down"
    gateway_of(app).link = Link(up=True)
    assert client.get("/health").get_json()["redis"] == "up"
    gateway_of(app).lifecycle.draining = True
    answer = client.get("/health")
    assert answer.status_code == 503 and answer.get_json() == {"status": "draining"}


def test_ready_says_redis_but_never_fails_on_it(tmp_path: Path) -> None:
    app = make_app(tmp_path, OPS_TOKEN=TOKEN)  # open like /health: load balancers carry no token
    client = app.test_client()
    answer = client.get("/ready")
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    body = answer.get_json()
    assert (body["status"], body["ready"], body["redis"]) == ("ready", True, "disabled")
    gateway_of(app).link = Link(up=False)
    answer = client.get("/ready")
    assert answer.status_code == 200 and answer.get_json()["redis"] == "down"
    gateway_of(app).link = Link(up=True)
    assert client.get("/ready").get_json()["redis"] == "up"
    gateway_of(app).lifecycle.draining = True
    answer = client.get("/ready")
    assert answer.status_code == 503 and answer.get_json() == {"status": "draining", "ready": False}


def test_stats_endpoints(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    stats = gateway_of(app).stats
    stats.record_request("order-service", "GET", 200, "HIT", 0.001, None)
    stats.record_request("order-service", "GET", 200, "MISS", 0.02, 0.015)
    stats.on_call("order-service", Outcome.SUCCESS, 0.015)
    client = app.test_client()
    cache = client.get("/stats/cache").get_json()
    assert (cache["requests"], cache["hits"], cache["misses"], cache["hit_rate"]) == (2, 1, 1, 50.0)
    breakers = client.get("/stats/circuit-breakers").get_json()["services"]
    assert set(breakers) == set(gateway_of(app).settings.services)
    assert breakers["order-service"]["fires"] == 1 and breakers["order-service"]["state"] == "CLOSED"
    for field in ("successes", "failures", "timeouts", "rejects", "failure_rate", "latency_ms", "opened_at",
                  "next_attempt_at"):
        assert field in breakers["order-service"]
    services = client.get("/health/services").get_json()["services"]
    assert services["order-service"]["status"] == "unknown"
    answer = client.get("/metrics")
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    names = {f.name for f in text_string_to_metric_families(answer.get_data(as_text=True))}
    assert {"gateway_requests", "gateway_breaker_state", "gateway_cache_events"} <= names


def test_stats_history_endpoint(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    assert app.test_client().get("/stats/history").get_json()["t"] == []  # nothing sampled yet: empty, not an error
    stats = gateway_of(app).stats
    clock = stats.clock
    stats.flush()
    stats.record_request("order-service", "GET", 200, "HIT", 0.001, None)
    clock.advance(10)
    stats.flush()
    answer = app.test_client().get("/stats/history")
    assert answer.headers["Cache-Control"] == "no-store"
    body = answer.get_json()
    assert len(body["t"]) == 1 and body["services"]["order-service"]["cache_hit_pct"] == [100.0]
    assert set(body["services"]) == set(gateway_of(app).settings.services)


def test_dashboard_is_self_contained(tmp_path: Path) -> None:
    answer = make_app(tmp_path).test_client().get("/dashboard")
    assert answer.status_code == 200 and answer.mimetype == "text/html"
    page = answer.get_data(as_text=True)
    assert "Circuit breakers" in page and "/stats/cache" in page and "/health/services" in page
    assert "http://" not in page and "https://" not in page  # no external assets
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]


PROTECTED = ("/health/services", "/stats/circuit-breakers", "/stats/cache", "/stats/history", "/stats/rate-limits",
             "/metrics", "/dashboard")


@pytest.mark.parametrize("path", PROTECTED)
def test_ops_token_required(tmp_path: Path, path: str) -> None:
    client = make_app(tmp_path, OPS_TOKEN=TOKEN).test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic !!!"},
                    {"Authorization": "Basic " + base64.b64encode(b"ops:wrong").decode()},
                    {"Authorization": "Bearer " + TOKEN + "x"}, {"Authorization": "Bearer \u00e9t\u00e9"}):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 401, headers
        assert answer.get_json()["error"]["code"] == "unauthorized"
        assert answer.headers["WWW-Authenticate"] == 'Basic realm="gateway", charset="UTF-8"'
    assert client.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    assert client.get(path, headers={"Authorization": f"Basic {basic}"}).status_code == 200


def test_health_stays_open_with_a_token(tmp_path: Path) -> None:
    assert make_app(tmp_path, OPS_TOKEN=TOKEN).test_client().get("/health").status_code == 200


LOOPBACK = ("127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "::ffff:127.0.0.1")
REMOTE = ("203.0.113.7", "10.0.0.5", "192.168.1.20", "::ffff:203.0.113.7", "2001:db8::1", "0.0.0.0", "")


@pytest.mark.parametrize("path", PROTECTED)
def test_without_a_token_only_this_host_is_answered(tmp_path: Path, path: str) -> None:
    client = make_app(tmp_path).test_client()
    for peer in LOOPBACK:
        assert client.get(path, environ_base={"REMOTE_ADDR": peer}).status_code == 200, peer
    for peer in REMOTE:
        answer = client.get(path, environ_base={"REMOTE_ADDR": peer})
        assert answer.status_code == 403, peer
        error = answer.get_json()["error"]
        assert error["code"] == "forbidden" and "OPS_TOKEN" in error["message"], error
        # a token is no way around it: without OPS_TOKEN there is none to match
        assert client.get(path, environ_base={"REMOTE_ADDR": peer},
                          headers={"Authorization": "Bearer guess"}).status_code == 403


@pytest.mark.parametrize(("peer", "forwarded_for", "status"), [
    ("127.0.0.1", "203.0.113.7", 403),             # a proxy on this host, forwarding a remote client
    ("127.0.0.1", "127.0.0.1, 203.0.113.7", 403),  # the remote client is the rightmost untrusted hop
    ("127.0.0.1", "203.0.113.7, 127.0.0.1", 403),  # ... wherever trusted hops come after it
    ("127.0.0.1", "127.0.0.1", 200),               # the proxy says: a client on this host
    ("127.0.0.1", "", 200),
    ("203.0.113.7", "127.0.0.1", 403),             # not a trusted proxy: its X-Forwarded-For is ignored
    ("127.0.0.2", "203.0.113.7", 200),             # loopback but not in FORWARDED_ALLOW_IPS: the peer counts
])
def test_the_client_is_found_by_the_trusted_proxy_rule(tmp_path: Path, peer: str, forwarded_for: str,
                                                       status: int) -> None:
    client = make_app(tmp_path).test_client()
    answer = client.get("/metrics", environ_base={"REMOTE_ADDR": peer}, headers={"X-Forwarded-For": forwarded_for})
    assert answer.status_code == status


def test_health_and_ready_stay_open_to_everyone(tmp_path: Path) -> None:
    for env in ({}, {"OPS_TOKEN": TOKEN}):
        client = make_app(tmp_path, **env).test_client()
        assert client.get("/health", environ_base={"REMOTE_ADDR": "203.0.113.7"}).status_code == 200
    app = make_app(tmp_path)
    with app.test_request_context("/ready", environ_base={"REMOTE_ADDR": "203.0.113.7"}):
        guard()  # the readiness probe is exempt by name, wherever it is defined
    with app.test_request_context("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.7"}), \
            pytest.raises(Forbidden):
        guard()


def test_with_a_token_remote_clients_need_it(tmp_path: Path) -> None:
    client = make_app(tmp_path, OPS_TOKEN=TOKEN).test_client()
    remote = {"REMOTE_ADDR": "203.0.113.7"}
    assert client.get("/metrics", environ_base=remote).status_code == 401
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 401  # local too
    assert client.get("/metrics", environ_base=remote, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_every_route_but_the_open_ones_is_guarded(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    routes = {rule.rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith("ops.")}
    assert routes - OPEN_PATHS >= set(PROTECTED)
    client = app.test_client()
    for path in routes - OPEN_PATHS:
        assert client.get(path, environ_base={"REMOTE_ADDR": "203.0.113.7"}).status_code == 403, path
