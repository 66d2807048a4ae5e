"""The gateway's application factory; ``python app.py`` runs a development server."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.routing import WebsocketMismatch

from blueprints.admin import admin
from blueprints.ops import ops
from blueprints.proxy import RestConverter, make_service_blueprint
from blueprints.proxy_wsgi import ProxyWSGI
from gateway import errors
from gateway.breaker.registry import BreakerRegistry
from gateway.cache.responses import ResponseCache
from gateway.cache.tier import DEFAULT_BOUND as TIER_BOUND
from gateway.config.settings import Settings, load_settings
from gateway.forwarder import forward_request
from gateway.http.inbound import request_id_from
from gateway.http.upstream import UpstreamClient
from gateway.messages import ProxyCall
from gateway.observe.health import HealthMonitor
from gateway.observe.lifecycle import Lifecycle
from gateway.observe.request_log import AccessLog, RequestLog, configure_logging
from gateway.observe.stats import GatewayStats
from gateway.observe.stats_history import StatsHistory
from gateway.observe.upstreams import UpstreamEvents
from gateway.redis.link import RedisLink
from gateway.share.bus import InstanceBus
from gateway.traffic.guard import TrafficGuard, traffic_guard

log = logging.getLogger("gateway")


@dataclass
class Engine:
    """The engine parts the request flow uses, in one place."""

    cache: ResponseCache
    breakers: BreakerRegistry
    upstream: UpstreamClient
    traffic: TrafficGuard


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the gateway: settings from the environment (then ``test_config``), engine, blueprints."""
    settings: Settings = load_settings(overrides=test_config)
    app = Flask(__name__, static_folder=None)
    app.config["GATEWAY_SETTINGS"] = settings
    app.url_map.converters["rest"] = RestConverter
    app.url_map.merge_slashes = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    access_log = configure_logging(settings.log_level, settings.log_format)

    link = (RedisLink(settings.redis_url, settings.redis_key_prefix, sentinel=settings.redis_sentinel)
            if settings.redis_url or settings.redis_sentinel else None)
    app.extensions["gateway.redis"] = link
    Lifecycle().init_app(app)
    stats = GatewayStats(settings, link)
    stats.init_app(app)
    StatsHistory(app.extensions["gateway.metrics"], stats.run_dir, settings.stats_history_interval).init_app(app)
    # Several workers without Redis: invalidations and forced breaker states travel between them.
    run_dir = settings.run_dir
    bus = InstanceBus(run_dir) if link is None and run_dir and settings.web_concurrency > 1 else None
    breakers = BreakerRegistry(settings, link, listeners=[stats], bus=bus)
    breakers.init_app(app)
    # With Redis, hot entries are also kept per worker for at most half a second, dropped at once on
    # every invalidation or purge (pub/sub): a hit then costs no Redis round trip.
    cache = ResponseCache(settings, link, stats=stats, bus=bus, tier_seconds=TIER_BOUND)
    cache.init_app(app)
    upstream = UpstreamClient(settings)
    upstream.init_app(app)
    upstream.listeners.append(UpstreamEvents(stats))  # attempts, retries and ejections in stats and metrics
    health = HealthMonitor(settings, link=link)
    health.init_app(app)
    upstream.health = health.latest_check  # an ejected target the checks see failing stays out
    engine = Engine(cache=cache, breakers=breakers, upstream=upstream, traffic=traffic_guard(link, stats))
    app.extensions["gateway.engine"] = engine

    def refresh_in_background(call: ProxyCall) -> None:
        """Stale-while-revalidate: run the request flow for a stale entry and let the cache store it."""
        body = forward_request(call, engine, guard=False).body
        try:
            if not isinstance(body, bytes):
                for _ in body:
                    pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    cache.refresher = refresh_in_background

    requests = RequestLog(AccessLog(access_log), stats)
    # Proxied requests skip Flask's dispatch; everything else (and the blueprints' routes) stays Flask's.
    app.wsgi_app = ProxyWSGI(app, app.wsgi_app, engine, settings, requests)  # type: ignore[method-assign]

    app.register_blueprint(ops)
    app.register_blueprint(admin)
    for service in settings.services.values():
        app.register_blueprint(make_service_blueprint(service))

    @app.before_request
    def start_request() -> None:
        """Stamp the request with its id and start time before anything can fail."""
        g.started = time.perf_counter()
        g.request_id = request_id_from(request.environ)

    @app.after_request
    def finish_request(response: Response) -> Response:
        """Echo the request id and log (and count) the request once its body is done."""
        response.headers["X-Request-ID"] = g.get("request_id", "")
        response.call_on_close(requests.closer(
            g.get("started", time.perf_counter()), g.get("request_id"), request.method, request.path,
            response.status_code, g.get("call"), g.get("cache_result"), request.remote_addr))
        return response

    @app.errorhandler(errors.GatewayError)
    def gateway_error(error: errors.GatewayError) -> Response:
        """Every error the gateway makes is the JSON envelope."""
        return error_response(error)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        """Routing errors (unknown prefix, method) as the JSON envelope."""
        if isinstance(error, WebsocketMismatch):
            return error_response(errors.NotImplementedFeature())
        if isinstance(error, WerkzeugMethodNotAllowed):
            allow = ", ".join(sorted(error.valid_methods or []))
            return error_response(errors.MethodNotAllowed(headers=[("Allow", allow)]))
        if error.code == 404:
            return error_response(errors.NotFound())
        generic = errors.GatewayError(error.description)
        generic.status, generic.code = error.code or 400, (error.name or "error").lower().replace(" ", "_")
        return error_response(generic)

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Response:
        """A bug must still answer JSON, never a traceback; the traceback goes to the log."""
        log.exception("unhandled error", extra={"request_id": g.get("request_id")})
        return error_response(errors.GatewayError())

    return app


def error_response(error: errors.GatewayError) -> Response:
    """Render a gateway error as a JSON response with its extra headers."""
    status, headers, body = errors.error_answer(error, g.get("request_id"))
    return Response(body, status=status, headers=headers)


if __name__ == "__main__":
    create_app().run(host="127.0.0.1", port=int(os.environ.get("PORT", "3000")), threaded=True)
