"""The lean WSGI path answers proxied requests exactly as the Flask blueprint does: same bytes, logs and stats."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import run_wsgi_app

import blueprints.proxy
import blueprints.proxy_wsgi
from app import create_app
from gateway import errors
from gateway.messages import ProxyCall, ProxyResponse

DEAD = "http://127.0.0.1:9"  # nothing is ever sent: forward_request is replaced below


class Records(logging.Handler):
    """Keeps the gateway's log records (their presence also sends access lines through logging)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Streamed:
    """A streamed engine body that notes when the server closed it."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def __iter__(self) -> Iterator[bytes]:
        yield b"part-1,"
        yield b"part-2"

    def close(self) -> None:
        self.events.append("body closed")


@pytest.fixture
def app() -> Iterator[tuple[Flask, Records, list[tuple[Any, ...]]]]:
    application = create_app({"ORDER_SERVICE_URL": DEAD, "HEALTH_CHECK_INTERVAL": 0, "LOG_LEVEL": "INFO"})
    records = Records()
    logging.getLogger("gateway").addHandler(records)
    counted: list[tuple[Any, ...]] = []
    application.extensions["gateway.stats"].record_request = lambda *args: counted.append(args)
    yield application, records, counted
    logging.getLogger("gateway").removeHandler(records)


def environ(method: str, target: str, **headers: str) -> dict[str, Any]:
    path, _, query = target.partition("?")
    env = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "RAW_URI": target,
           "SERVER_NAME": "gw.example", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
           "HTTP_HOST": "gw.example", "REMOTE_ADDR": "10.0.0.7", "wsgi.url_scheme": "http",
           "wsgi.input": io.BytesIO(b""), "wsgi.errors": io.StringIO(), "HTTP_X_REQUEST_ID": "same-id"}
    env.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    return env


def serve(wsgi: Any, env: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    iterable, status, headers = run_wsgi_app(wsgi, env, buffered=True)
    body = b"".join(iterable)
    return status, list(headers), body


def both(app: tuple[Flask, Records, list[tuple[Any, ...]]], monkeypatch: pytest.MonkeyPatch, answer: Any,
         method: str = "GET", target: str = "/orders/1", **headers: str) -> tuple[Any, Any]:
    """Serve one request on the lean path and on the Flask path; return what each sent, logged and counted."""
    application, records, counted = app
    events: list[str] = []

    def fake_forward(call: ProxyCall, engine: Any) -> ProxyResponse:
        if isinstance(answer, Exception):
            raise answer
        result = answer(events)
        result.on_close.append(lambda: events.append("on_close"))
        return result

    monkeypatch.setattr(blueprints.proxy_wsgi, "forward_request", fake_forward)
    monkeypatch.setattr(blueprints.proxy, "forward_request", fake_forward)
    outcomes = []
    lean = application.wsgi_app
    assert isinstance(lean, blueprints.proxy_wsgi.ProxyWSGI)
    for wsgi in (lean, lean.wsgi_app):  # lean path, then Flask's own dispatch (the blueprint)
        events.clear()
        before_records, before_counted = len(records.records), len(counted)
        sent = serve(wsgi, environ(method, target, **headers))
        access = [{k: getattr(r, k, None) for k in ("request_id", "method", "path", "status", "service", "cache",
                                                   "breaker", "upstream_ms", "client_ip")} | {"level": r.levelname}
                  for r in records.records[before_records:] if r.getMessage() == "request"]
        stats = [args[:4] for args in counted[before_counted:]]
        outcomes.append((sent, list(events), access, stats))
    return outcomes[0], outcomes[1]


def stored(events: list[str]) -> ProxyResponse:
    return ProxyResponse(status=200, headers=[("Content-Type", "application/json"), ("Set-Cookie", "a=1"),
                                              ("Set-Cookie", "b=2"), ("Location", "/orders/ü x"),
                                              ("Content-Location", "/orders/1?q=ü"), ("X-Cache", "upstream's")],
                         body=b'{"id": 1}', cache="HIT", cache_source="memory")


def not_modified(events: list[str]) -> ProxyResponse:
    return ProxyResponse(status=304, headers=[("ETag", '"v1"'), ("Content-Type", "application/json"),
                                              ("Content-Length", "9"), ("Expires", "0"), ("Age", "3")],
                         body=b"", cache="HIT", cache_source="Redis")


def no_content(events: list[str]) -> ProxyResponse:
    return ProxyResponse(status=204, headers=[("Content-Length", "0")], body=b"", cache="BYPASS")


def streamed(events: list[str]) -> ProxyResponse:
    return ProxyResponse(status=200, headers=[("Content-Type", "text/plain")], body=Streamed(events),
                         cache=None, upstream_ms=1.5)


def newline(events: list[str]) -> ProxyResponse:
    return ProxyResponse(status=200, headers=[("X-Bad", "a\r\nInjected: 1")], body=b"x", cache="MISS")


@pytest.mark.parametrize("answer", [stored, not_modified, no_content, streamed, newline,
                                    errors.CircuitOpen(service="order-service", retry_after=7),
                                    errors.BadGateway(service="order-service"), errors.OnlyIfCached()],
                         ids=lambda a: getattr(a, "__name__", type(a).__name__))
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_lean_path_matches_the_blueprint(app: Any, monkeypatch: pytest.MonkeyPatch, answer: Any,
                                         method: str) -> None:
    lean, flask = both(app, monkeypatch, answer, method)
    assert lean == flask
    (status, headers, body), events, access, stats = lean
    assert ("X-Request-ID", "same-id") in headers
    assert len(access) == 1 and access[0]["service"] == "order-service"
    assert len(stats) == 1 and stats[0][:2] == ("order-service", method)
    if answer is streamed:
        assert events == ["body closed", "on_close"]  # the engine's body is closed even for HEAD
        assert body == (b"" if method == "HEAD" else b"part-1,part-2")


@pytest.mark.parametrize("target", ["/orders/a%2Fb", "/orders/%2e%2e/admin", "/orders/x?y=1"])
def test_rejected_and_odd_targets_match(app: Any, monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    lean, flask = both(app, monkeypatch, stored, "GET", target)
    assert lean == flask


def test_invalid_json_and_oversized_bodies_match(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    application = app[0]
    for body, content_type in ((b"{nope", "application/json"), (b"x" * (2 << 20), "text/plain")):
        sent = []
        for wsgi in (application.wsgi_app, application.wsgi_app.wsgi_app):
            env = environ("POST", "/orders/1")
            env.update({"wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": content_type})
            sent.append(serve(wsgi, env))
        assert sent[0] == sent[1]
        assert sent[0][0].startswith(("400", "413"))


def test_everything_else_is_left_to_flask(app: Any) -> None:
    application = app[0]
    lean = application.wsgi_app
    for method, target, status in (("GET", "/ordersX", "404"), ("TRACE", "/orders/1", "405"),
                                   ("GET", "/health", "200")):
        sent = serve(lean, environ(method, target))
        assert sent[0].startswith(status), (method, target, sent)
    assert lean.service_for("/orders") is not None and lean.service_for("/orders/1/2") is not None
    assert lean.service_for("/ordersX") is None and lean.service_for("/") is None


def test_nested_prefixes_are_left_to_werkzeug(tmp_path: Any) -> None:
    config = tmp_path / "services.json"
    config.write_text('{"services": {"menu": {"prefix": "/orders/menu", "url": "http://127.0.0.1:9"}}}')
    application = create_app({"GATEWAY_CONFIG": str(config), "HEALTH_CHECK_INTERVAL": 0})
    lean = application.wsgi_app
    assert lean.service_for("/orders/menu/1") is None and lean.service_for("/orders/1") is None
    assert lean.service_for("/restaurants/1") is not None
