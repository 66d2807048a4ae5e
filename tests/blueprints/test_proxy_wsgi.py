"""The two entrances are one envelope: for every kind of request they call the same steps, in the same order,
and send the same bytes, access line and stats."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Callable, Iterator
from types import CodeType, FrameType
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import run_wsgi_app

import blueprints.envelope as envelope
from app import create_app
from blueprints.envelope import Envelope, gateway_of
from blueprints.proxy_wsgi import ProxyWSGI
from gateway import errors
from gateway.http.inbound import build_call
from gateway.messages import ProxyCall, ProxyResponse
from gateway.observe.request_log import RequestLog

DEAD = "http://127.0.0.1:9"  # nothing is ever sent: forward_request is replaced below
NESTED = {"menu": {"prefix": "/orders/menu", "url": DEAD}}  # a prefix under another one

# The envelope's steps both entrances must run (each entrance also has glue of its own: Flask's hooks and
# response class, the fast entrance's route and refusal checks).
STEPS: dict[CodeType, str] = {fn.__code__: name for name, fn in {
    "open": Envelope.open, "not_allowed": envelope.not_allowed, "upgrade_refused": envelope.upgrade_refused,
    "build_call": build_call, "forward": Envelope.forward, "answer_headers": envelope.answer_headers,
    "add_cache_headers": envelope.add_cache_headers, "unexpected": Envelope.unexpected,
    "error_answer": errors.error_answer, "closer": RequestLog.closer, "finish_headers": envelope.finish_headers,
}.items()}
STEPS.update({code: "logged" for code in RequestLog.closer.__code__.co_consts
              if isinstance(code, CodeType) and code.co_name == "on_close"})


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
    application = create_app({"ORDER_SERVICE_URL": DEAD, "HEALTH_CHECK_INTERVAL": 0, "LOG_LEVEL": "INFO",
                              "services": NESTED})
    records = Records()
    logging.getLogger("gateway").addHandler(records)
    counted: list[tuple[Any, ...]] = []
    gateway_of(application).stats.record_request = lambda *args: counted.append(args)  # type: ignore[method-assign]
    yield application, records, counted
    logging.getLogger("gateway").removeHandler(records)
    gateway_of(application).stop()  # the first request started the stats flusher


def environ(method: str, target: str, **headers: str) -> dict[str, Any]:
    path, _, query = target.partition("?")
    env = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "RAW_URI": target,
           "SERVER_NAME": "gw.example", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
           "HTTP_HOST": "gw.example", "REMOTE_ADDR": "10.0.0.7", "wsgi.url_scheme": "http",
           "wsgi.input": io.BytesIO(b""), "wsgi.errors": io.StringIO(), "HTTP_X_REQUEST_ID": "same-id"}
    env.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    return env


def served(wsgi: Any, env: dict[str, Any]) -> tuple[tuple[str, list[tuple[str, str]], bytes], list[str]]:
    """What ``wsgi`` sent for ``env``, and the envelope steps it ran on the way (in order)."""
    steps: list[str] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code in STEPS:
            steps.append(STEPS[frame.f_code])

    sys.setprofile(profile)
    try:
        iterable, status, headers = run_wsgi_app(wsgi, env, buffered=True)
        body = b"".join(iterable)
    finally:
        sys.setprofile(None)
    return (status, list(headers), body), steps


def both(app: tuple[Flask, Records, list[tuple[Any, ...]]], monkeypatch: pytest.MonkeyPatch, answer: Any,
         env: Callable[[], dict[str, Any]]) -> tuple[Any, Any]:
    """Serve one request through each entrance; return what each sent, ran, logged and counted."""
    application, records, counted = app
    events: list[str] = []

    def fake_forward(call: ProxyCall, gw: Any) -> ProxyResponse:
        events.append(f"forwarded to {call.service.name}")
        if isinstance(answer, Exception):
            raise answer
        result: ProxyResponse = answer(events)
        result.on_close.append(lambda: events.append("on_close"))
        return result

    monkeypatch.setattr(envelope, "forward_request", fake_forward)
    fast = application.wsgi_app
    assert isinstance(fast, ProxyWSGI)
    outcomes = []
    for wsgi in (fast, fast.flask):  # the fast entrance, then Flask's own dispatch (the service blueprints)
        events.clear()
        before_records, before_counted = len(records.records), len(counted)
        sent, steps = served(wsgi, env())
        access = [{k: getattr(r, k, None) for k in ("request_id", "method", "path", "status", "service", "cache",
                                                   "breaker", "upstream_ms", "client_ip")} | {"level": r.levelname}
                  for r in records.records[before_records:] if r.getMessage() == "request"]
        outcomes.append((sent, steps, list(events), access, [args[:4] for args in counted[before_counted:]]))
        assert gateway_of(application).metrics.in_flight.value == 0  # every forwarded call left the count
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
    return ProxyResponse(status=204, headers=[("Content-Length", "0"), ("Via", "1.0 upstream")], body=b"",
                         cache="BYPASS")


def streamed(events: list[str]) -> ProxyResponse:
    return ProxyResponse(status=200, headers=[("Content-Type", "text/plain")], body=Streamed(events),
                         cache=None, upstream_ms=1.5)


def newline(events: list[str]) -> ProxyResponse:
    return ProxyResponse(status=200, headers=[("X-Bad", "a\r\nInjected: 1")], body=Streamed(events), cache="MISS")


ANSWERED = ["open", "build_call", "forward", "answer_headers", "add_cache_headers", "closer", "finish_headers",
            "logged"]


@pytest.mark.parametrize("answer", [stored, not_modified, no_content, streamed, newline,
                                    errors.CircuitOpen(service="order-service", retry_after=7),
                                    errors.BadGateway(service="order-service"), errors.OnlyIfCached()],
                         ids=lambda a: getattr(a, "__name__", type(a).__name__))
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_every_kind_of_answer_is_the_same_through_both_entrances(app: Any, monkeypatch: pytest.MonkeyPatch,
                                                                 answer: Any, method: str) -> None:
    fast, flask = both(app, monkeypatch, answer, lambda: environ(method, "/orders/1"))
    assert fast == flask
    (status, headers, body), steps, events, access, stats = fast
    assert ("X-Request-ID", "same-id") in headers
    assert len(access) == 1 and access[0]["service"] == "order-service"
    assert len(stats) == 1 and stats[0][:2] == ("order-service", method)
    if answer is newline:  # a bug's 500: logged, and the engine's body still closed
        assert steps == ["open", "build_call", "forward", "answer_headers", "unexpected", "error_answer",
                         "closer", "finish_headers", "logged"]
        assert status.startswith("500") and "body closed" in events
    elif isinstance(answer, Exception):
        assert steps == ["open", "build_call", "forward", "error_answer", "closer", "finish_headers", "logged"]
    else:
        assert steps == ANSWERED
    if answer is streamed:
        assert events[1:] == ["body closed", "on_close"]  # the engine's body is closed even for HEAD
        assert body == (b"" if method == "HEAD" else b"part-1,part-2")


@pytest.mark.parametrize(("method", "target", "headers", "status"), [
    ("GET", "/orders/a%2Fb", {}, "400"),  # refused by build_call
    ("GET", "/orders/%2e%2e/admin", {}, "400"),
    ("GET", "/orders/x?y=1", {}, "200"),
    ("get", "/orders/1", {}, "200"),  # routed as Werkzeug routes it: upper-cased
    ("TRACE", "/orders/1", {}, "405"),
    ("PROPFIND", "/orders", {"Connection": "Upgrade", "Upgrade": "websocket"}, "405"),  # 405 comes first
    ("GET", "/orders/1", {"Connection": "keep-alive, Upgrade", "Upgrade": "WebSocket"}, "501"),
    ("GET", "/orders/1", {"Upgrade": "websocket"}, "501"),  # no Connection: upgrade, so build_call refuses it
    ("GET", "/orders/1", {"Connection": "Upgrade", "Upgrade": "h2c"}, "200"),  # not a WebSocket: forwarded
    ("GET", "/orders/menu/1", {}, "200"),  # the nested prefix wins
    ("GET", "/orders/menux", {}, "200"),  # ... only on a segment boundary
])
def test_refusals_odd_targets_and_nested_prefixes_are_the_same(app: Any, monkeypatch: pytest.MonkeyPatch,
                                                               method: str, target: str, headers: dict[str, str],
                                                               status: str) -> None:
    fast, flask = both(app, monkeypatch, stored, lambda: environ(method, target, **headers))
    assert fast == flask
    (sent_status, _, _), steps, events, _, _ = fast
    assert sent_status.startswith(status), (sent_status, target)
    assert steps[0] == "open" and steps[-3:] == ["closer", "finish_headers", "logged"]
    if status == "405":
        assert steps[1:3] == ["not_allowed", "error_answer"]
    if status == "200":
        assert events[0] == ("forwarded to menu" if target.startswith("/orders/menu/") else
                             "forwarded to order-service")


def test_invalid_json_and_oversized_bodies_are_the_same(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for body, content_type in ((b"{nope", "application/json"), (b"x" * (2 << 20), "text/plain")):
        def env(body: bytes = body, content_type: str = content_type) -> dict[str, Any]:
            request = environ("POST", "/orders/1")
            request.update({"wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
                            "CONTENT_TYPE": content_type})
            return request

        fast, flask = both(app, monkeypatch, stored, env)
        assert fast == flask
        assert fast[0][0].startswith(("400", "413")) and "error_answer" in fast[1]


def test_everything_else_is_flask_s(app: Any) -> None:
    fast = app[0].wsgi_app
    for method, target, status in (("GET", "/ordersX", "404"), ("GET", "/health", "200"),
                                   ("POST", "/health", "405")):
        (sent, _, body), steps = served(fast, environ(method, target))
        assert sent.startswith(status), (method, target, sent, body)
        assert "build_call" not in steps and steps[0] == "open"
