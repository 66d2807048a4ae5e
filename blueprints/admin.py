"""Operator endpoints: list the services, purge the cache, force a circuit breaker; bearer ``ADMIN_TOKEN`` only.

The blueprint parses and authenticates; the cache and the breakers do the work.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, jsonify, request

from blueprints.envelope import current_gateway
from gateway.breaker.core import ACTIONS
from gateway.errors import CacheUnavailable, Forbidden, NotFound, Unauthorized
from gateway.observe.inventory import describe_services
from gateway.redis.link import StoreUnavailable

admin = Blueprint("admin", __name__, url_prefix="/admin")


@admin.before_request
def require_admin_token() -> None:
    """Admit only ``Authorization: Bearer <ADMIN_TOKEN>``; with no token configured the endpoints are off."""
    token = current_gateway().settings.admin_token
    if not token:
        raise Forbidden("Admin endpoints are disabled: ADMIN_TOKEN is not set.")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest on bytes: constant time, and no TypeError on non-ASCII input.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized(headers=[("WWW-Authenticate", "Bearer")])


@admin.get("/services")
def list_services() -> Response:
    """Every service: prefix, upstream, cache, breaker and health-check settings (secrets redacted)."""
    gateway = current_gateway()
    listing = describe_services(gateway.settings, gateway.health, gateway.breakers)
    response = jsonify(listing)
    response.headers["Cache-Control"] = "no-store"
    return response


@admin.post("/circuit-breakers/<service>/<action>")
def force_breaker(service: str, action: str) -> Response:
    """Force a service's breaker open, closed, or reset it; answer its new statistics."""
    gateway = current_gateway()
    breakers = gateway.breakers
    if service not in breakers:
        raise NotFound(f"No service named {service!r}.", service=service)
    if action not in ACTIONS:
        raise NotFound(f"Unknown breaker action {action!r}; use open, close or reset.", service=service)
    snapshot = breakers.force(service, action)
    if action == "reset":
        gateway.stats.reset_breaker(service)  # /stats/circuit-breakers counts from listener events: clear them too
    return jsonify({"service": service, "action": action, **snapshot})


@admin.delete("/cache")
def purge_cache() -> Response:
    """Drop every cache entry, one path's (``?path=``) or a subtree's (``?prefix=``)."""
    try:
        summary = current_gateway().cache.purge(path=request.args.get("path"), prefix=request.args.get("prefix"))
    except StoreUnavailable:
        raise CacheUnavailable() from None
    return jsonify(summary)
