"""The traffic guard (gateway/traffic/guard.py): preflights, the limit, and headers on answers and errors."""

from __future__ import annotations

import pytest

from gateway.clock import FakeClock
from gateway.config.settings import ServiceConfig
from gateway.config.traffic import parse_cors, parse_rate_limit
from gateway.errors import BadGateway, CorsForbidden, RateLimited
from gateway.messages import ProxyCall, ProxyResponse, header_value
from gateway.traffic.guard import TrafficGuard, traffic_guard
from gateway.traffic.ratelimit import RateLimiter

ORIGIN = "https://app.example.com"


def service(cors: bool = True, limit: str | None = "2/m") -> ServiceConfig:
    return ServiceConfig(
        name="order-service", prefix="/orders", url="http://127.0.0.1:9",
        cors=parse_cors("cors", {"origins": [ORIGIN], "methods": ["GET"]}) if cors else None,
        rate_limit=parse_rate_limit("rate_limit", {"limits": [limit]}, "/orders") if limit else None)


def call(svc: ServiceConfig, method: str = "GET", **headers: str) -> ProxyCall:
    return ProxyCall(service=svc, method=method, target="/1", path="/orders/1", query="", host="gw",
                     headers=[(k.replace("_", "-"), v) for k, v in headers.items()], body=b"", request_id="r",
                     client_ip="10.0.0.1")


@pytest.fixture
def guard() -> TrafficGuard:
    return TrafficGuard(RateLimiter(None, FakeClock()))


def test_only_a_cors_preflight_is_answered_here(guard: TrafficGuard) -> None:
    svc = service()
    answer = guard.preflight(call(svc, "OPTIONS", Origin=ORIGIN, Access_Control_Request_Method="GET"))
    assert answer is not None and answer.status == 204
    assert header_value(answer.headers, "Access-Control-Allow-Origin") == ORIGIN
    assert guard.preflight(call(svc, "OPTIONS", Origin=ORIGIN)) is None  # a plain OPTIONS goes on
    assert guard.preflight(call(svc, Origin=ORIGIN)) is None
    no_cors = service(cors=False)
    assert guard.preflight(call(no_cors, "OPTIONS", Origin=ORIGIN, Access_Control_Request_Method="GET")) is None
    with pytest.raises(CorsForbidden):
        guard.preflight(call(svc, "OPTIONS", Origin="https://evil.example", Access_Control_Request_Method="GET"))


def test_the_limit_gives_its_headers_then_refuses_with_cors_headers(guard: TrafficGuard) -> None:
    svc = service()
    assert header_value(guard.limit(call(svc, Origin=ORIGIN)), "RateLimit") == '"per-minute";r=1;t=30'
    guard.limit(call(svc, Origin=ORIGIN))
    with pytest.raises(RateLimited) as refused:
        guard.limit(call(svc, Origin=ORIGIN))
    headers = dict(refused.value.headers)
    assert headers["Access-Control-Allow-Origin"] == ORIGIN and headers["Retry-After"] == "30"


def test_a_service_without_limits_is_never_limited(guard: TrafficGuard) -> None:
    svc = service(limit=None)
    for _ in range(5):
        assert guard.limit(call(svc)) == []


def test_answers_get_the_limit_and_cors_headers_on_a_copy(guard: TrafficGuard) -> None:
    stored = ProxyResponse(status=200, headers=[("Content-Type", "text/plain"), ("Access-Control-Allow-Origin", "*")],
                           body=b"ok", cache="HIT")
    limit = [("RateLimit", '"per-minute";r=1;t=30')]
    answer = guard.on_response(call(service(), Origin=ORIGIN), stored, limit)
    assert answer is not stored and answer.body == b"ok" and answer.cache == "HIT"
    assert header_value(answer.headers, "Access-Control-Allow-Origin") == ORIGIN  # the service's own is dropped
    assert header_value(answer.headers, "RateLimit") == '"per-minute";r=1;t=30'
    assert stored.headers[1] == ("Access-Control-Allow-Origin", "*")  # the cache's copy is left alone
    plain = guard.on_response(call(service(cors=False)), stored, limit)
    assert plain.headers == stored.headers + limit
    assert guard.on_response(call(service(cors=False)), stored, []) is stored  # nothing to add: no copy


def test_errors_the_gateway_answers_get_them_too(guard: TrafficGuard) -> None:
    error = BadGateway(service="order-service")
    guard.on_error(call(service(), Origin=ORIGIN), error, [("RateLimit", '"per-minute";r=0;t=60')])
    headers = dict(error.headers)
    assert headers["Access-Control-Allow-Origin"] == ORIGIN and headers["Vary"] == "Origin"
    assert headers["RateLimit"] == '"per-minute";r=0;t=60'


def test_the_engines_guard_limits_in_memory_without_redis() -> None:
    guard = traffic_guard(None)
    assert guard.limiter.link is None and guard.limiter.stats is None
