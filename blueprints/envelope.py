"""The request envelope: everything around the engine's answer, written once for both entrances.

Two entrances serve the gateway. :class:`~blueprints.proxy_wsgi.ProxyWSGI`, in front of Flask,
answers every request under a service prefix: Flask's dispatch costs more than the cache hit it
would wrap. Flask answers the rest (ops, admin, unknown paths) and keeps the design card's surface,
one blueprint per service (``blueprints.proxy``) whose ``after_request`` hook adds ``X-Cache``.
Both run the same steps, in this order, and send the same bytes::

    Envelope.open         the request id (the client's when well-formed); the first request starts the engine
    Envelope.route        the service with the longest prefix (/menus/v2 before /menus); Werkzeug's rules in Flask
    not_allowed           405 with Allow for a method not forwarded; upgrade_refused: 501 for a WebSocket upgrade
    build_call ─► Envelope.forward (forward_request, counted in flight)
    answer_headers        the engine's headers, Via, Content-Length
    add_cache_headers     X-Cache and X-Cache-Source
      any GatewayError ─► error_answer (``gateway.errors``); anything else ─► Envelope.unexpected first
    X-Request-ID ─► finish_headers (Werkzeug's last rules) ─► status_line
    RequestLog.closer     when the body is done: the access line, the stats, out of the in-flight count

Flask runs them from its hooks (:func:`install`) and the service blueprints; ``ProxyWSGI`` in one
function. Flask's own routing picks the same service as :meth:`Envelope.route` and refuses the same
requests (:func:`routing_error` maps its refusals, :func:`refusal` is the fast entrance's check), and
its answers are finished by :class:`EnvelopeResponse` with the same :func:`finish_headers`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flask import Flask, Response, current_app, g, request
from werkzeug.datastructures import Headers as WerkzeugHeaders
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.http import remove_entity_headers
from werkzeug.routing import WebsocketMismatch
from werkzeug.urls import iri_to_uri

from gateway import errors
from gateway.config.settings import ServiceConfig
from gateway.engine import Gateway
from gateway.forwarder import forward_request
from gateway.http.inbound import VIA, request_id_from
from gateway.messages import Headers, ProxyCall, ProxyResponse, header_value, set_header, without_headers

log = logging.getLogger("gateway")

FORWARDED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
FORWARDED = frozenset(FORWARDED_METHODS)
EXTENSION = "gateway"  # where create_app keeps the Gateway in ``app.extensions``: read by gateway_of only


def gateway_of(app: Flask) -> Gateway:
    """The Gateway ``create_app`` built for ``app``: the one typed way from Flask to the engine."""
    gateway: Gateway = app.extensions[EXTENSION]
    return gateway


def current_gateway() -> Gateway:
    """The Gateway of the app answering the current request (the ops and admin blueprints use it)."""
    return gateway_of(current_app)


class Envelope:
    """The steps of the envelope that need the gateway: open, route, forward, unexpected."""

    def __init__(self, gw: Gateway, start: Callable[[], None]) -> None:
        self.gw = gw
        self.settings = gw.settings
        self.requests = gw.requests
        self.in_flight = gw.metrics.in_flight
        # A nested prefix has more segments than the one it is under: deepest first finds the longest
        # match, and services of one depth keep their configured order.
        deepest_first = sorted(gw.settings.services.values(), key=lambda s: -s.prefix.count("/"))
        self.routes = [(s.prefix, s.prefix + "/", s) for s in deepest_first]
        self._start = start  # the engine's background work, started with the first request
        self.opened = False

    def open(self, environ: Mapping[str, Any]) -> str:
        """Every request's first step: its id; the first request of the worker also starts the engine."""
        if not self.opened:
            self.opened = True
            self._start()
        return request_id_from(environ)

    def route(self, path: str) -> ServiceConfig | None:
        """The service whose prefix ``path`` is under, the longest prefix first (``/orders`` takes ``/orders/1``)."""
        for prefix, head, service in self.routes:
            if path.startswith(head) or path == prefix:
                return service
        return None

    def forward(self, call: ProxyCall) -> ProxyResponse:
        """The engine's answer to ``call``; from here the request counts in flight (``RequestLog.closer`` ends it)."""
        self.in_flight.inc()
        return forward_request(call, self.gw)

    @staticmethod
    def unexpected(request_id: str | None, body: object = None) -> errors.GatewayError:
        """A bug answers the JSON 500, never a traceback: the traceback is logged, an unsent engine body closed."""
        log.exception("unhandled error", extra={"request_id": request_id})
        close = getattr(body, "close", None)
        if close is not None:
            close()  # it may hold an upstream connection
        return errors.GatewayError()


# -- refusals -------------------------------------------------------------------------------------


def not_allowed(allowed: Iterable[str]) -> errors.MethodNotAllowed:
    """The 405 for a method this path is not forwarded with."""
    return errors.MethodNotAllowed(headers=[("Allow", ", ".join(sorted(allowed)))])


def upgrade_refused() -> errors.NotImplementedFeature:
    """The 501 for a WebSocket upgrade: the gateway forwards none."""
    return errors.NotImplementedFeature()


def is_websocket(environ: Mapping[str, Any]) -> bool:
    """A WebSocket handshake, by Werkzeug's rule: ``Connection: upgrade`` with ``Upgrade: websocket``."""
    connection = str(environ.get("HTTP_CONNECTION", "")).lower().split(",")
    return (any(token.strip(" \t") == "upgrade" for token in connection)
            and str(environ.get("HTTP_UPGRADE", "")).lower() == "websocket")


def refusal(method: str, environ: Mapping[str, Any]) -> errors.GatewayError | None:
    """What routing refuses under a service prefix, as Werkzeug orders it: 405 first, then 501 for an upgrade."""
    if method not in FORWARDED:
        return not_allowed(FORWARDED_METHODS)
    if is_websocket(environ):
        return upgrade_refused()
    return None


def routing_error(error: HTTPException) -> errors.GatewayError:
    """A Werkzeug routing error (unknown path, method, upgrade) as the gateway's own error."""
    if isinstance(error, WebsocketMismatch):
        return upgrade_refused()
    if isinstance(error, WerkzeugMethodNotAllowed):
        return not_allowed(error.valid_methods or ())
    if error.code == 404:
        return errors.NotFound()
    generic = errors.GatewayError(error.description)
    generic.status, generic.code = error.code or 400, (error.name or "error").lower().replace(" ", "_")
    return generic


# -- headers --------------------------------------------------------------------------------------


def answer_headers(answer: ProxyResponse) -> Headers:
    """The client's headers for an engine answer: the engine's as given, the gateway's Via, Content-Length."""
    headers: Headers = []
    via = VIA
    for name, value in answer.headers:
        if "\n" in value or "\r" in value:
            raise ValueError("Header values must not contain newline characters.")  # as Werkzeug refuses them
        if name.lower() == "via":
            via = f"{value}, {VIA}"  # the gateway is the last hop on the way back
            continue
        headers.append((name, value))
    headers.append(("Via", via))
    if (isinstance(answer.body, bytes) and answer.status not in (204, 304)
            and header_value(headers, "Content-Length") is None):
        headers.append(("Content-Length", str(len(answer.body))))
    return headers


def add_cache_headers(headers: Headers, answer: ProxyResponse) -> None:
    """Set ``X-Cache`` and ``X-Cache-Source`` of an engine answer, in place of any the service sent."""
    cache = answer.cache
    if cache is None:
        return  # not a cached route
    source = answer.cache_source
    for name, _ in headers:
        lowered = name.lower()
        if lowered == "x-cache" or lowered == "x-cache-source":
            break
    else:  # the usual case, found in one pass: the service sent neither
        headers.append(("X-Cache", cache))
        if source is not None:
            headers.append(("X-Cache-Source", source))
        return
    set_header(headers, "X-Cache", cache)
    if source is not None:
        set_header(headers, "X-Cache-Source", source)


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


_STATUS_LINES: dict[int, str] = {}


def status_line(status: int) -> str:
    """The status line Werkzeug sends for ``status`` (``503 SERVICE UNAVAILABLE``)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = Response(status=status).status
    return line


def route_path(environ: Mapping[str, Any]) -> str:
    """The path as Flask routes and logs it (``request.path``): decoded, one leading slash."""
    path = environ.get("PATH_INFO") or ""
    if not path.isascii():
        path = path.encode("latin-1").decode(errors="replace")
    return "/" + path.lstrip("/")


# -- the Flask entrance ---------------------------------------------------------------------------


class EnvelopeResponse(Response):
    """An answer of the envelope (an engine answer, a gateway error) in Flask, finished by :func:`finish_headers`."""

    default_mimetype = None  # an upstream answer passed through gets no Content-Type invented for it

    def __init__(self, body: bytes | Iterable[bytes], status: int, headers: Headers,
                 answer: ProxyResponse | None = None) -> None:
        super().__init__(body, status=status)
        self.headers.clear()  # exactly the envelope's headers (Werkzeug would add its Content-Length)
        self.headers.extend(headers)
        self.answer = answer  # the engine's answer this response shapes (None for an error)
        if answer is not None:
            for callback in answer.on_close:
                self.call_on_close(callback)

    @classmethod
    def of(cls, answer: ProxyResponse) -> EnvelopeResponse:
        """An engine answer as Flask's response: its status, body and :func:`answer_headers`."""
        return cls(answer.body, answer.status, answer_headers(answer), answer)

    def get_wsgi_headers(self, environ: Mapping[str, Any]) -> WerkzeugHeaders:
        """The headers sent: :func:`finish_headers`, as the fast entrance applies it."""
        body = self.get_data() if self.is_sequence else None
        return WerkzeugHeaders(finish_headers(self.status_code, self.headers.to_wsgi_list(), body))


def error_response(error: errors.GatewayError) -> EnvelopeResponse:
    """A gateway error as the JSON envelope (``errors.error_answer``) with its extra headers."""
    status, headers, body = errors.error_answer(error, g.get("request_id"))
    return EnvelopeResponse(body, status, headers)


def install(app: Flask, envelope: Envelope) -> None:
    """Run the envelope around every Flask request: open, the access line, and every error as JSON."""

    @app.before_request
    def open_request() -> None:
        """Stamp the request with its start time and id before anything can fail."""
        g.started = time.perf_counter()
        g.request_id = envelope.open(request.environ)

    @app.after_request
    def close_request(response: Response) -> Response:
        """Echo the request id; log (and count) the request once its body is done."""
        response.headers["X-Request-ID"] = g.get("request_id", "")
        answer = response.answer if isinstance(response, EnvelopeResponse) else None
        response.call_on_close(envelope.requests.closer(
            g.get("started", time.perf_counter()), g.get("request_id"), request.method, request.path,
            response.status_code, g.get("call"), answer.cache if answer is not None else None,
            request.remote_addr))
        return response

    @app.errorhandler(errors.GatewayError)
    def gateway_error(error: errors.GatewayError) -> Response:
        """Every error the gateway makes is the JSON envelope."""
        return error_response(error)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        """Routing errors (unknown prefix, method, upgrade) as the JSON envelope."""
        return error_response(routing_error(error))

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Response:
        """A bug still answers JSON (:meth:`Envelope.unexpected`), closing the engine's answer if there was one."""
        answer = g.get("answer")
        return error_response(envelope.unexpected(g.get("request_id"), answer.body if answer is not None else None))
