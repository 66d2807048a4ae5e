"""The proxied routes as plain WSGI: what the service blueprints do, without Flask's per-request dispatch.

``create_app`` wraps ``app.wsgi_app`` in :class:`ProxyWSGI`. A request with a forwarded method whose
path is under a service prefix is answered here with the blueprints' own pieces: ``request_id_from``,
``build_call``, ``forward_request``, ``proxy_headers``, ``error_answer`` and the shared
:class:`~gateway.observe.request_log.RequestLog`. Everything else — ops, admin, unknown prefixes, other
methods (405), upgrade requests, services whose prefixes nest — goes to Flask, where the service
blueprints stay the registered routes and answer the same requests the same way.

Flask's dispatch (request context, routing, hooks, a Werkzeug response object) costs more than the
whole cache hit it wraps; the final header rules Werkzeug applies (``get_wsgi_headers``) are
applied here by :func:`finish_headers` so both paths send the same bytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Flask, Response
from werkzeug.http import remove_entity_headers
from werkzeug.urls import iri_to_uri

from blueprints.proxy import FORWARDED_METHODS, proxy_headers
from gateway.config.settings import ServiceConfig, Settings
from gateway.errors import GatewayError, error_answer
from gateway.forwarder import Engine, forward_request
from gateway.http.inbound import build_call, request_id_from
from gateway.messages import Headers, ProxyCall, set_header, without_headers
from gateway.observe.request_log import RequestLog

log = logging.getLogger("gateway")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
FORWARDED = frozenset(FORWARDED_METHODS)
_STATUS_LINES: dict[int, str] = {}


def status_line(status: int) -> str:
    """The status line Werkzeug sends for ``status`` (``503 SERVICE UNAVAILABLE``)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = Response(status=status).status
    return line


def finish_headers(status: int, headers: Headers, body: bytes | None) -> Headers:
    """Werkzeug's last touches (``Response.get_wsgi_headers``); ``body`` is None for a streamed one."""
    location = content_location = content_length = None
    for key, value in headers:
        lowered = key.lower()
        if lowered == "location":
            location = value
        elif lowered == "content-location":
            content_location = value
        elif lowered == "content-length":
            content_length = value
    if location is not None:
        set_header(headers, "Location", iri_to_uri(location))
    if content_location is not None:
        set_header(headers, "Content-Location", iri_to_uri(content_location))
    informational = 100 <= status < 200
    if informational or status == 204:
        headers = without_headers(headers, "Content-Length")
    elif status == 304:
        remove_entity_headers(headers)
    if body is not None and content_length is None and status not in (204, 304) and not informational:
        headers.append(("Content-Length", str(len(body))))
    return headers


def route_path(environ: dict[str, Any]) -> str:
    """The path as Flask routes and logs it (``request.path``): decoded, one leading slash."""
    path = environ.get("PATH_INFO") or ""
    if not path.isascii():
        path = path.encode("latin-1").decode(errors="replace")
    return "/" + path.lstrip("/")


class Answer:
    """The body handed to the server; closing it closes the engine's body, then runs the callbacks."""

    __slots__ = ("_body", "_callbacks", "_chunks")

    def __init__(self, chunks: Iterable[bytes], body: Any, callbacks: list[Callable[[], None]]) -> None:
        self._chunks = chunks
        self._body = body
        self._callbacks = callbacks

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)

    def close(self) -> None:
        """Called by the server once the client has the body (or has gone away)."""
        close = getattr(self._body, "close", None)
        if close is not None:
            close()
        for callback in self._callbacks:
            callback()


class ProxyWSGI:
    """WSGI middleware: serves proxied requests itself and hands every other request to Flask."""

    def __init__(self, app: Flask, wsgi_app: WSGIApp, engine: Engine, settings: Settings,
                 requests: RequestLog) -> None:
        self.flask = app
        self.wsgi_app = wsgi_app
        self.engine = engine
        self.settings = settings
        self.requests = requests
        self.health_started = False
        prefixes = [s.prefix for s in settings.services.values()]
        # Nested prefixes (/menus and /menus/v2) are left to Werkzeug's rule ordering.
        nested = {p for p in prefixes for q in prefixes if p != q and (q.startswith(p + "/") or p.startswith(q + "/"))}
        self.routes = [(s.prefix, s.prefix + "/", s) for s in settings.services.values() if s.prefix not in nested]
        metrics = app.extensions.get("gateway.metrics")
        self.in_flight = getattr(metrics, "in_flight", None)  # a gauge: one inc and one dec a request

    def service_for(self, path: str) -> ServiceConfig | None:
        """The service whose prefix ``path`` is under, if this path serves it."""
        for prefix, head, service in self.routes:
            if path.startswith(head) or path == prefix:
                return service
        return None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method in FORWARDED and "HTTP_UPGRADE" not in environ:
            path = route_path(environ)
            service = self.service_for(path)
            if service is not None:
                return self.serve(environ, start_response, method, path, service)
        return self.wsgi_app(environ, start_response)

    def serve(self, environ: dict[str, Any], start_response: Callable[..., Any], method: str, path: str,
              service: ServiceConfig) -> Iterable[bytes]:
        """Answer one proxied request: the blueprint view, its error handlers and the app's hooks, in one go."""
        started = time.perf_counter()
        request_id = request_id_from(environ)
        if not self.health_started:
            health = self.flask.extensions.get("gateway.health")
            if health is None or not self.flask.testing:
                if health is not None:
                    health.start()  # what HealthMonitor's before_request hook does
                self.health_started = True
        call: ProxyCall | None = None
        cache: str | None = None
        callbacks: list[Callable[[], None]] = []
        body: Any = None
        in_flight = self.in_flight
        if in_flight is not None:
            in_flight.inc()
        try:
            call = build_call(environ, service, self.settings, request_id)
            result = forward_request(call, self.engine)
            body = result.body
            headers = proxy_headers(result)
            status, cache, callbacks = result.status, result.cache, list(result.on_close)
        except GatewayError as error:
            status, headers, body = error_answer(error, request_id)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            close = getattr(body, "close", None)
            if close is not None:
                close()  # an engine body that will not be sent still frees its connection
            status, headers, body = error_answer(GatewayError(), request_id)
        set_header(headers, "X-Request-ID", request_id)
        payload = body if isinstance(body, bytes) else None
        headers = finish_headers(status, headers, payload)
        callbacks.append(self.requests.closer(started, request_id, method, path, status, call, cache,
                                              environ.get("REMOTE_ADDR")))
        if in_flight is not None:
            callbacks.append(in_flight.dec)
        start_response(status_line(status), headers)
        if method == "HEAD" or 100 <= status < 200 or status in (204, 304):
            chunks: Iterable[bytes] = ()
        elif payload is not None:
            chunks = (payload,)
        else:
            chunks = body
        return Answer(chunks, body, callbacks)
