"""The proxied routes: one blueprint per configured service, all made by one factory.

Each blueprint's view forwards to the engine and shapes its answer; the blueprint's ``after_request``
hook adds ``X-Cache`` and ``X-Cache-Source``. Every step is the envelope's (``blueprints.envelope``),
the same ones the fast entrance (``ProxyWSGI``) runs for these paths.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, request
from werkzeug.datastructures import Headers
from werkzeug.routing import PathConverter

from blueprints.envelope import FORWARDED_METHODS, Envelope, EnvelopeResponse, add_cache_headers
from gateway.config.settings import ServiceConfig
from gateway.http.inbound import build_call


class RestConverter(PathConverter):
    """Everything after the prefix, including empty and leading-slash rests (``/orders//x``)."""

    regex = ".*"
    part_isolating = False  # may span slashes; werkzeug would otherwise match one segment only


def make_service_blueprint(service: ServiceConfig, envelope: Envelope) -> Blueprint:
    """Build the blueprint that forwards ``<prefix>`` and ``<prefix>/…`` to ``service``."""
    blueprint = Blueprint(f"service:{service.name}".replace(".", "_"), __name__)

    def proxy(rest: str | None = None) -> Response:
        """Forward the request (the engine decides cache, breaker and upstream) and shape the answer."""
        call = g.call = build_call(request.environ, service, envelope.settings, g.request_id)
        answer = g.answer = envelope.forward(call)
        return EnvelopeResponse.of(answer)

    @blueprint.after_request
    def x_cache(response: Response) -> Response:
        """``X-Cache`` (HIT, MISS, STALE, REVALIDATED, BYPASS) and ``X-Cache-Source`` on every engine answer."""
        if isinstance(response, EnvelopeResponse) and response.answer is not None:
            headers = response.headers.to_wsgi_list()
            add_cache_headers(headers, response.answer)  # the envelope's step, on its own list of headers
            response.headers = Headers(headers)
        return response

    for rule in (service.prefix, service.prefix + "/<rest:rest>"):
        blueprint.add_url_rule(rule, endpoint="proxy", view_func=proxy, methods=FORWARDED_METHODS,
                               provide_automatic_options=False, strict_slashes=False)
    return blueprint
