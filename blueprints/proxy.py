"""The proxied routes: one blueprint per configured service, all made by one factory."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, request
from werkzeug.routing import PathConverter

from gateway.config.settings import ServiceConfig
from gateway.forwarder import forward_request
from gateway.http.inbound import VIA, build_call
from gateway.messages import Headers, ProxyResponse, header_value, set_header

FORWARDED_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class RestConverter(PathConverter):
    """Everything after the prefix, including empty and leading-slash rests (``/orders//x``)."""

    regex = ".*"
    part_isolating = False  # may span slashes; werkzeug would otherwise match one segment only


class ProxiedResponse(Response):
    """An upstream answer passed through: no default Content-Type invented for it."""

    default_mimetype = None


def make_service_blueprint(service: ServiceConfig) -> Blueprint:
    """Build the blueprint that forwards ``<prefix>`` and ``<prefix>/…`` to ``service``."""
    blueprint = Blueprint(f"service:{service.name}".replace(".", "_"), __name__)

    def proxy(rest: str | None = None) -> Response:
        settings = current_app.config["GATEWAY_SETTINGS"]
        call = build_call(request.environ, service, settings, g.request_id)
        g.call = call
        in_flight = getattr(current_app.extensions.get("gateway.metrics"), "in_flight", None)
        if in_flight is None:
            return to_response(forward_request(call, current_app.extensions["gateway.engine"]))
        in_flight.inc()
        try:
            response = to_response(forward_request(call, current_app.extensions["gateway.engine"]))
        except BaseException:
            in_flight.dec()
            raise
        response.call_on_close(in_flight.dec)
        return response

    for rule in (service.prefix, service.prefix + "/<rest:rest>"):
        blueprint.add_url_rule(rule, endpoint="proxy", view_func=proxy, methods=FORWARDED_METHODS,
                               provide_automatic_options=False, strict_slashes=False)
    return blueprint


def proxy_headers(result: ProxyResponse) -> Headers:
    """The client's headers for an engine answer: the engine's as given, then Content-Length and X-Cache."""
    headers: Headers = []
    via = VIA
    for name, value in result.headers:
        if "\n" in value or "\r" in value:
            raise ValueError("Header values must not contain newline characters.")  # as Werkzeug refuses them
        if name.lower() == "via":
            via = f"{value}, {VIA}"  # the gateway is the last hop on the way back
            continue
        headers.append((name, value))
    headers.append(("Via", via))
    if (isinstance(result.body, bytes) and result.status not in (204, 304)
            and header_value(headers, "Content-Length") is None):
        headers.append(("Content-Length", str(len(result.body))))
    if result.cache is not None:
        set_header(headers, "X-Cache", result.cache)
        if result.cache_source is not None:
            set_header(headers, "X-Cache-Source", result.cache_source)
    return headers


def to_response(result: ProxyResponse) -> Response:
    """Shape the engine's answer as a Flask response, headers exactly as the engine gives them."""
    response = ProxiedResponse(result.body, status=result.status)
    response.headers.clear()
    for name, value in proxy_headers(result):
        response.headers.add(name, value)
    g.cache_result = result.cache
    for callback in result.on_close:
        response.call_on_close(callback)
    return response
