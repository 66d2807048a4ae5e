"""The envelope's steps one by one: routing, refusals, the gateway's headers and Werkzeug's last rules."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.exceptions import BadRequest, MethodNotAllowed, NotFound
from werkzeug.routing import WebsocketMismatch

from blueprints.envelope import (
    Envelope,
    EnvelopeResponse,
    add_cache_headers,
    answer_headers,
    finish_headers,
    is_websocket,
    refusal,
    route_path,
    routing_error,
    status_line,
)
from gateway import errors
from gateway.build import build_gateway
from gateway.config.settings import load_settings
from gateway.messages import ProxyResponse

NESTED = {"services": {"menu": {"prefix": "/menus", "url": "http://127.0.0.1:9"},
                       "menu-v2": {"prefix": "/menus/v2", "url": "http://127.0.0.1:9"}}}


STARTS: list[str] = []


@pytest.fixture
def envelope(tmp_path: Any) -> Envelope:
    STARTS.clear()
    return Envelope(build_gateway(load_settings({}, NESTED), run_dir=str(tmp_path)), lambda: STARTS.append("start"))


def test_the_longest_prefix_wins_on_a_segment_boundary(envelope: Envelope) -> None:
    def name(path: str) -> str | None:
        service = envelope.route(path)
        return service.name if service is not None else None

    assert [name(p) for p in ("/menus/v2", "/menus/v2/", "/menus/v2/1", "/menus/v2x", "/menus", "/menus//v2")] == [
        "menu-v2", "menu-v2", "menu-v2", "menu", "menu", "menu"]
    assert name("/orders") == "order-service" and name("/ordersX") is None and name("/") is None
    assert [prefix for prefix, _, _ in envelope.routes][:2] == ["/menus/v2", "/auth"]  # one depth: config order


def test_the_first_request_starts_the_engine_once(envelope: Envelope) -> None:
    ids = {envelope.open({"HTTP_X_REQUEST_ID": "given-1"}), envelope.open({"HTTP_X_REQUEST_ID": "bad id"})}
    assert "given-1" in ids and len(ids) == 2
    assert STARTS == ["start"]


def test_refusals_in_werkzeug_s_order() -> None:
    websocket = {"HTTP_CONNECTION": "keep-alive, Upgrade", "HTTP_UPGRADE": "websocket"}
    assert is_websocket(websocket) and not is_websocket({"HTTP_UPGRADE": "websocket"})
    assert not is_websocket({"HTTP_CONNECTION": "upgrade", "HTTP_UPGRADE": "h2c"})
    not_allowed = refusal("TRACE", websocket)
    assert isinstance(not_allowed, errors.MethodNotAllowed)
    assert not_allowed.headers == [("Allow", "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT")]
    assert isinstance(refusal("GET", websocket), errors.NotImplementedFeature)
    assert refusal("GET", {"HTTP_UPGRADE": "websocket"}) is None  # left to build_call


def test_routing_errors_become_the_gateway_s() -> None:
    assert isinstance(routing_error(WebsocketMismatch()), errors.NotImplementedFeature)
    allowed = routing_error(MethodNotAllowed(valid_methods=["POST", "GET"]))
    assert allowed.status == 405 and allowed.headers == [("Allow", "GET, POST")]
    assert isinstance(routing_error(NotFound()), errors.NotFound)
    generic = routing_error(BadRequest("nope"))
    assert (generic.status, generic.code, generic.message) == (400, "bad_request", "nope")


def test_answer_headers_add_via_and_a_length_and_refuse_newlines() -> None:
    answer = ProxyResponse(status=200, headers=[("Via", "1.0 upstream"), ("A", "1")], body=b"abc")
    assert answer_headers(answer) == [("A", "1"), ("Via", "1.0 upstream, 1.1 gateway"), ("Content-Length", "3")]
    assert answer_headers(ProxyResponse(status=304, headers=[], body=b"")) == [("Via", "1.1 gateway")]
    with pytest.raises(ValueError):
        answer_headers(ProxyResponse(status=200, headers=[("X", "a\nb")], body=b""))


def test_cache_headers_replace_the_service_s_own() -> None:
    headers = [("X-Cache", "theirs"), ("A", "1"), ("x-cache", "again")]
    add_cache_headers(headers, ProxyResponse(status=200, headers=[], body=b"", cache="HIT", cache_source="Redis"))
    assert headers == [("X-Cache", "HIT"), ("A", "1"), ("X-Cache-Source", "Redis")]
    plain: list[tuple[str, str]] = [("A", "1")]
    add_cache_headers(plain, ProxyResponse(status=200, headers=[], body=b"", cache="MISS"))
    assert plain == [("A", "1"), ("X-Cache", "MISS")]
    add_cache_headers(plain, ProxyResponse(status=200, headers=[], body=b""))  # not a cached route
    assert plain == [("A", "1"), ("X-Cache", "MISS")]


def test_finish_headers_apply_werkzeug_s_last_rules() -> None:
    assert finish_headers(200, [("Location", "/ü x")], b"ab") == [("Location", "/%C3%BC%20x"), ("Content-Length", "2")]
    assert finish_headers(204, [("Content-Length", "0"), ("A", "1")], b"") == [("A", "1")]
    assert finish_headers(304, [("ETag", "v"), ("Content-Type", "text/plain"), ("Expires", "0")], b"") == [
        ("ETag", "v"), ("Expires", "0")]
    assert finish_headers(200, [("A", "1")], None) == [("A", "1")]  # streamed: no length invented
    assert status_line(503) == "503 SERVICE UNAVAILABLE" and status_line(299) == "299 UNKNOWN"
    assert route_path({"PATH_INFO": "//orders/\xc3\xbc"}) == "/orders/ü" and route_path({}) == "/"


def test_flask_answers_are_finished_by_the_same_rules() -> None:
    response = EnvelopeResponse(b"ab", 200, [("Location", "/ü")])
    assert response.get_wsgi_headers({}).to_wsgi_list() == finish_headers(200, [("Location", "/ü")], b"ab")
    assert "Content-Type" not in response.headers  # nothing invented for an upstream answer
