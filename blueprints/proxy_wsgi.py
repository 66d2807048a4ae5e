"""The fast entrance: every request under a service prefix answered as plain WSGI, in front of Flask.

``create_app`` wraps ``app.wsgi_app`` in :class:`ProxyWSGI`. A request whose path is under a service
prefix (the longest one, so nested prefixes too) is answered here with the envelope's steps
(``blueprints.envelope``), in the order the Flask entrance runs them; everything else — ops, admin,
unknown paths — goes to Flask. Flask's dispatch (request context, routing, hooks, a Werkzeug
response object) costs more than the whole cache hit it would wrap; this is the gateway's hot path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from blueprints.envelope import (
    FORWARDED,
    Envelope,
    add_cache_headers,
    answer_headers,
    finish_headers,
    refusal,
    route_path,
    status_line,
)
from gateway.config.settings import ServiceConfig
from gateway.errors import GatewayError, error_answer
from gateway.http.inbound import build_call
from gateway.messages import ProxyCall, ProxyResponse, set_header

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Answer:
    """The body handed to the server; closing it closes the engine's body, then runs the callbacks."""

    __slots__ = ("_body", "_chunks", "_closer", "_on_close")

    def __init__(self, chunks: Iterable[bytes], body: object, on_close: Iterable[Callable[[], None]],
                 closer: Callable[[], None]) -> None:
        self._chunks = chunks
        self._body = body
        self._on_close = on_close  # the engine answer's own callbacks (read, never changed: it may be the cache's)
        self._closer = closer  # the access line and the stats

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)

    def close(self) -> None:
        """Called by the server once the client has the body (or has gone away)."""
        close = getattr(self._body, "close", None)
        if close is not None:
            close()
        for callback in self._on_close:
            callback()
        self._closer()


class ProxyWSGI:
    """WSGI middleware: serves the requests under a service prefix itself and hands every other one to Flask."""

    def __init__(self, envelope: Envelope, flask: WSGIApp) -> None:
        self.envelope = envelope
        self.flask = flask
        self.settings = envelope.settings
        self.requests = envelope.requests

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = route_path(environ)
        service = self.envelope.route(path)
        if service is None:
            return self.flask(environ, start_response)
        return self.serve(environ, start_response, path, service)

    def serve(self, environ: dict[str, Any], start_response: Callable[..., Any], path: str,
              service: ServiceConfig) -> Iterable[bytes]:
        """Answer one request for ``service``: the envelope's steps, in the Flask entrance's order."""
        envelope = self.envelope
        started = time.perf_counter()
        request_id = envelope.open(environ)
        method = raw_method = environ.get("REQUEST_METHOD", "GET")
        call: ProxyCall | None = None
        cache: str | None = None
        on_close: Iterable[Callable[[], None]] = ()
        body: Any = None
        try:
            if method not in FORWARDED or "HTTP_UPGRADE" in environ:
                method = method.upper()  # as Werkzeug routes and logs it
                refused = refusal(method, environ)
                if refused is not None:
                    raise refused
            call = build_call(environ, service, self.settings, request_id)
            answer: ProxyResponse = envelope.forward(call)
            body = answer.body
            headers = answer_headers(answer)
            add_cache_headers(headers, answer)
            status, cache, on_close = answer.status, answer.cache, answer.on_close
        except GatewayError as error:
            status, headers, body = error_answer(error, request_id)
        except Exception:
            status, headers, body = error_answer(envelope.unexpected(request_id, body), request_id)
        set_header(headers, "X-Request-ID", request_id)
        closer = self.requests.closer(started, request_id, method, path, status, call, cache,
                                      environ.get("REMOTE_ADDR"))
        payload = body if isinstance(body, bytes) else None
        headers = finish_headers(status, headers, payload)
        start_response(status_line(status), headers)
        if raw_method == "HEAD" or 100 <= status < 200 or status in (204, 304):
            chunks: Iterable[bytes] = ()
        elif payload is not None:
            chunks = (payload,)
        else:
            chunks = body
        return Answer(chunks, body, on_close, closer)
