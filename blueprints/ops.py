"""Observability endpoints: health, readiness, service health, stats, Prometheus metrics, dashboard.

``/health`` and ``/ready`` are always open (load balancers and orchestrators call them). Every
other endpoint here is closed by default: with ``OPS_TOKEN`` set it needs the token, as a bearer
token or as the password of HTTP basic auth (so a browser can open the dashboard); without it, it
answers only clients on this host (a loopback address, after the ``FORWARDED_ALLOW_IPS`` rule, so a
proxy on this host forwarding a remote client does not count as local), and 403 to anyone else.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import time
from importlib import resources
from typing import Any

from flask import Blueprint, Response, jsonify, request

from blueprints.envelope import current_gateway
from gateway import __version__
from gateway.errors import Forbidden, Unauthorized
from gateway.http.inbound import client_ip_from, is_loopback

ops = Blueprint("ops", __name__)

# Only the Basic challenge: it is what makes a browser prompt, and bearer clients need none.
CHALLENGES = [("WWW-Authenticate", 'Basic realm="gateway", charset="UTF-8"')]
# The dashboard loads nothing from elsewhere; the policy makes that a promise.
DASHBOARD_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                 "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'")
OPEN_PATHS = frozenset({"/health", "/ready"})  # never behind the token or the loopback rule


def presented_token() -> str | None:
    """The token of the request: a bearer token, or the password of HTTP basic auth (any user)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer":
        return value
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


@ops.before_request
def guard() -> None:
    """Every endpoint of this blueprint but ``OPEN_PATHS`` is an ops endpoint (closed by default)."""
    if request.path not in OPEN_PATHS:
        require_ops_token()


def require_ops_token() -> None:
    """Raise 401 (with the Basic challenge) unless the request carries ``OPS_TOKEN``.

    Without ``OPS_TOKEN``, raise 403 unless the client is on this host.
    """
    settings = current_gateway().settings
    token = settings.ops_token
    if not token:
        client = client_ip_from(str(request.environ.get("REMOTE_ADDR") or ""),
                                request.environ.get("HTTP_X_FORWARDED_FOR"), settings.forwarded_allow_ips)
        if not is_loopback(client):
            raise Forbidden("Ops endpoints answer only clients on this host while OPS_TOKEN is unset; "
                            "set OPS_TOKEN and send it as a bearer token (or the basic-auth password).")
        return
    given = presented_token()
    # compare_digest on bytes: constant time, and no TypeError on non-ASCII input.
    if given is None or not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthorized("A valid ops token is required (bearer, or the basic-auth password).",
                           headers=list(CHALLENGES))


def _json(payload: Any, status: int = 200) -> Response:
    response = jsonify(payload)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _redis_state() -> str:
    """``disabled`` without REDIS_URL, else ``up`` or ``down``."""
    link = current_gateway().link
    if link is None:
        return "disabled"
    # Skip the ping while the link is in its back-off period: the answer is known and fast.
    return "up" if link.is_up and link.ping() else "down"


@ops.get("/health")
def health() -> Response:
    """Liveness: 200 while the gateway can serve, 503 once it is draining after SIGTERM."""
    lifecycle = current_gateway().lifecycle
    if lifecycle.draining:
        return _json({"status": "draining"}, 503)
    return _json({"status": "ok", "redis": _redis_state(), "version": __version__,
                  "uptime_s": round(max(0.0, time.time() - lifecycle.started_at), 3)})


@ops.get("/ready")
def ready() -> Response:
    """Readiness for load balancers: 200 while this worker serves and is not draining, else 503.

    Redis being down does not make the gateway unready (it serves from memory and local breakers
    meanwhile); the answer says so, for the operator, without failing on it.
    """
    if current_gateway().lifecycle.draining:
        return _json({"status": "draining", "ready": False}, 503)
    return _json({"status": "ready", "ready": True, "redis": _redis_state(), "pid": os.getpid()})


@ops.get("/health/services")
def health_services() -> Response:
    """Active health check results of every service."""
    return _json(current_gateway().health.services())


@ops.get("/stats/circuit-breakers")
def breaker_stats() -> Response:
    """Circuit breaker statistics, gateway-wide."""
    gateway = current_gateway()
    return _json(gateway.stats.breaker_stats(gateway.breakers))


@ops.get("/stats/cache")
def cache_stats() -> Response:
    """Cache statistics of the last five minutes, gateway-wide."""
    return _json(current_gateway().stats.cache_stats())


@ops.get("/stats/rate-limits")
def rate_limit_stats() -> Response:
    """Each rate-limited service: its limits, and its 429s and Redis-down decisions since start, gateway-wide."""
    return _json(current_gateway().stats.rate_limit_stats())


@ops.get("/stats/upstreams")
def upstream_stats() -> Response:
    """Each service's targets (in rotation or ejected, attempts, failures) and its retries, gateway-wide."""
    return _json(current_gateway().stats.upstream_stats())


@ops.get("/stats/history")
def history_stats() -> Response:
    """Per service, the last 15 minutes of request rate, errors, p95, hit rate and breaker state."""
    return _json(current_gateway().history.report())


@ops.get("/metrics")
def metrics() -> Response:
    """Prometheus exposition of this instance: OpenMetrics when the scraper's Accept asks for it."""
    body, content_type = current_gateway().metrics.render(request.headers.get("Accept"))
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


@ops.get("/dashboard")
def dashboard() -> Response:
    """The live monitoring dashboard: one self-contained HTML page."""
    page = resources.files("blueprints").joinpath("templates/dashboard.html").read_bytes()
    return Response(page, content_type="text/html; charset=utf-8",
                    headers={"Cache-Control": "no-store", "Content-Security-Policy": DASHBOARD_CSP,
                             "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})
