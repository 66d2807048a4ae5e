"""CORS rules: origins (exact and wildcard), preflights, the headers added on the way out, settings."""

from __future__ import annotations

import pytest

from gateway.config.settings import ConfigError, ServiceConfig, load_settings
from gateway.config.traffic import parse_cors, parse_rate_limit
from gateway.errors import BadGateway, CorsForbidden, GatewayError
from gateway.messages import ProxyCall, ProxyResponse, header_value
from gateway.traffic import cors
from gateway.traffic.guard import TrafficGuard
from gateway.traffic.ratelimit import RateLimiter

CONFIG = {"origins": ["https://app.example.com", "https://*.example.org"], "methods": ["GET", "POST"],
          "headers": ["Content-Type", "X-Api-Key"], "expose_headers": ["X-Request-ID"], "credentials": True,
          "max_age": 600}


def service(raw: dict | None = None, **extra: object) -> ServiceConfig:
    return ServiceConfig(name="order-service", prefix="/orders", url="http://127.0.0.1:9",
                         cors=parse_cors("cors", CONFIG if raw is None else raw), **extra)  # type: ignore[arg-type]


def request(svc: ServiceConfig, method: str = "GET", **headers: str) -> ProxyCall:
    return ProxyCall(service=svc, method=method, target="/1", path="/orders/1", query="", host="gw",
                     headers=[(k.replace("_", "-"), v) for k, v in headers.items()], body=b"", request_id="r",
                     client_ip="10.0.0.1")


def test_origins_exact_and_wildcard_subdomains() -> None:
    settings = service().cors
    assert settings is not None
    assert settings.allows("https://app.example.com") and settings.allows("HTTPS://APP.EXAMPLE.COM")
    assert settings.allows("https://a.example.org") and settings.allows("https://a.b.example.org")
    for refused in ("https://example.org", "http://a.example.org", "https://evil-example.org",
                    "https://a.example.org.evil.com", "https://app.example.com:8443", "null", "",
                    "https://a b.example.org", "https://a@b.example.org", "https://.example.org",
                    "https://a..example.org", "https://a.example.org:8443"):
        assert not settings.allows(refused), refused


def test_settings_are_validated_with_the_setting_named() -> None:
    def error(raw: object) -> str:
        with pytest.raises(ConfigError) as caught:
            load_settings({}, {"services": {"order-service": {"cors": raw}}})
        return str(caught.value)

    assert "cors.origins" in error({"methods": ["GET"]})
    assert "cors.origins" in error({"origins": ["https://app.example.com/path"]})
    assert "cors.origins" in error({"origins": ["https://*.com"]})
    assert "cors.credentials" in error({"origins": ["*"], "credentials": True})
    assert "cors.methods" in error({"origins": ["*"], "methods": ["GET POST"]})
    assert "cors.max_age" in error({"origins": ["*"], "max_age": -1})
    assert "did you mean 'origins'" in error({"origin": ["*"]})
    assert load_settings({}, {"services": {"order-service": {"cors": {"origins": "*"}}}}).services[
        "order-service"].guarded


def test_preflight_allowed_is_answered_here() -> None:
    svc = service()
    answer = cors.preflight(svc.cors, request(svc, "OPTIONS", Origin="https://x.example.org",  # type: ignore[arg-type]
                                              Access_Control_Request_Method="POST",
                                              Access_Control_Request_Headers="content-type, x-api-key"))
    assert answer.status == 204 and answer.body == b""
    headers = dict(answer.headers)
    assert headers["Access-Control-Allow-Origin"] == "https://x.example.org"
    assert headers["Access-Control-Allow-Methods"] == "GET, POST"
    assert headers["Access-Control-Allow-Headers"] == "content-type, x-api-key"
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Access-Control-Max-Age"] == "600"
    assert "Origin" in headers["Vary"]


@pytest.mark.parametrize(("origin", "method", "asked", "says"), [
    ("https://evil.com", "GET", "", "origin"),
    ("https://app.example.com", "DELETE", "", "method"),
    ("https://app.example.com", "GET", "X-Secret", "header"),
])
def test_preflight_refused_is_a_json_403_without_cors_headers(origin: str, method: str, asked: str,
                                                              says: str) -> None:
    svc = service()
    with pytest.raises(CorsForbidden) as refused:
        cors.preflight(svc.cors, request(svc, "OPTIONS", Origin=origin,  # type: ignore[arg-type]
                                         Access_Control_Request_Method=method,
                                         Access_Control_Request_Headers=asked))
    assert refused.value.status == 403 and refused.value.code == "cors_forbidden" and says in refused.value.message
    assert not any(name.lower().startswith("access-control-") for name, _ in refused.value.headers)


def test_answers_get_this_origins_headers_and_vary() -> None:
    svc = service()
    upstream = [("Content-Type", "application/json"), ("Vary", "Accept-Encoding"),
                ("Access-Control-Allow-Origin", "*")]
    allowed = cors.with_cors(svc.cors, "https://app.example.com", upstream)  # type: ignore[arg-type]
    assert header_value(allowed, "Access-Control-Allow-Origin") == "https://app.example.com"
    assert header_value(allowed, "Access-Control-Allow-Credentials") == "true"
    assert header_value(allowed, "Access-Control-Expose-Headers") == "X-Request-ID"
    assert header_value(allowed, "Vary") == "Accept-Encoding, Origin"
    for origin in ("https://evil.com", None):
        other = cors.with_cors(svc.cors, origin, upstream)  # type: ignore[arg-type]
        assert not any(name.lower().startswith("access-control-") for name, _ in other)  # the service's dropped
        assert header_value(other, "Vary") == "Accept-Encoding, Origin"
    assert upstream[2] == ("Access-Control-Allow-Origin", "*")  # the stored answer is left as it was
    star = service({"origins": ["*"]})
    assert cors.with_cors(star.cors, None, []) == [("Access-Control-Allow-Origin", "*")]  # type: ignore[arg-type]


class Engine:
    """Just enough engine for ``guarded_request``: the guard, and a flow that answers ``stored``."""

    def __init__(self, guard: TrafficGuard, stored: ProxyResponse) -> None:
        self.traffic, self.stored, self.calls = guard, stored, 0


def test_guard_adds_headers_to_answers_and_errors_and_never_limits_preflights(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import gateway.forwarder as forwarder

    svc = service(rate_limit=parse_rate_limit("rate_limit", {"limits": ["1/m"]}, "/orders"))
    stored = ProxyResponse(status=200, headers=[("Content-Type", "text/plain")], body=b"ok", cache="HIT")
    engine = Engine(TrafficGuard(RateLimiter(None)), stored)
    real = forwarder.forward_request

    def flow(call: ProxyCall, gw: Engine, guard: bool = True) -> ProxyResponse:
        if guard:
            return real(call, gw, guard)  # type: ignore[arg-type]
        gw.calls += 1
        if isinstance(gw.stored, Exception):
            raise gw.stored
        return gw.stored

    monkeypatch.setattr(forwarder, "forward_request", flow)
    answer = forwarder.forward_request(request(svc, Origin="https://app.example.com"), engine)  # type: ignore[arg-type]
    assert header_value(answer.headers, "Access-Control-Allow-Origin") == "https://app.example.com"
    assert header_value(answer.headers, "RateLimit") == '"per-minute";r=0;t=60'
    assert stored.headers == [("Content-Type", "text/plain")]  # the cache's answer object is not changed
    preflight = request(svc, "OPTIONS", Origin="https://app.example.com", Access_Control_Request_Method="GET")
    for _ in range(3):
        assert forwarder.forward_request(preflight, engine).status == 204  # type: ignore[arg-type]
    assert engine.calls == 1  # preflights never reach the flow
    with pytest.raises(GatewayError) as refused:
        forwarder.forward_request(request(svc, Origin="https://app.example.com"), engine)  # type: ignore[arg-type]
    assert refused.value.status == 429 and engine.calls == 1
    headers = dict(refused.value.headers)
    assert headers["Access-Control-Allow-Origin"] == "https://app.example.com" and headers["Retry-After"] == "60"
    engine.stored = BadGateway(service="order-service")  # type: ignore[assignment]
    with pytest.raises(BadGateway) as failed:
        forwarder.forward_request(request(svc, Origin="https://a.example.org"),  # type: ignore[arg-type]
                                  Engine(TrafficGuard(RateLimiter(None)), engine.stored))  # type: ignore[arg-type]
    headers = dict(failed.value.headers)
    assert headers["Access-Control-Allow-Origin"] == "https://a.example.org" and headers["Vary"] == "Origin"
    assert headers["RateLimit"] == '"per-minute";r=0;t=60'
