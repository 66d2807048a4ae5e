"""What ``GET /admin/services`` lists: every service with its route, upstream, cache, breaker and check settings.

Nothing secret leaves: tokens are never listed, and credentials in a URL (a Redis URL's password)
are replaced by ``***``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from gateway.config.settings import ServiceConfig, Settings
from gateway.observe.health import HealthMonitor
from gateway.observe.sources import Breakers


def redact_url(url: str | None) -> str | None:
    """``url`` with any user and password replaced by ``***``."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, "", parts.fragment))


def describe_service(service: ServiceConfig, health: HealthMonitor | None = None,
                     breakers: Breakers | None = None) -> dict[str, Any]:
    """One service's listing entry (``health``: the HealthMonitor, ``breakers``: the BreakerRegistry)."""
    state = None
    if breakers is not None and service.name in breakers:
        try:
            state = breakers[service.name].state
        except Exception:  # an unreadable shared breaker must not fail the listing
            state = None
    hc = service.health_check
    if health is not None:
        check = health.check_settings(service)
    else:  # no monitor to resolve the gateway-wide defaults: None stands for them
        check = {"path": hc.path, "interval_s": hc.interval, "timeout_s": hc.timeout,
                 "expected_status": list(hc.expected_status)} if hc.enabled else None
    return {
        "name": service.name,
        "prefix": service.prefix,
        "upstream": redact_url(service.url),
        "strip_prefix": service.strip_prefix,
        "rewrite_redirects": service.rewrite_redirects,
        "timeout_s": service.timeout,
        "cache": {"enabled": service.cache, "ttl_s": service.cache_ttl,
                  "share_public_across_users": service.share_public_across_users},
        "breaker": {**asdict(service.breaker), "state": state},
        "health_check": check,
        "rate_limit": describe_rate_limit(service),
        "cors": describe_cors(service),
    }


def describe_rate_limit(service: ServiceConfig) -> dict[str, Any] | None:
    """The service's ``rate_limit`` as it could be written back in ``GATEWAY_CONFIG`` (None: off)."""
    limit = service.rate_limit
    if limit is None:
        return None
    return {"key": f"header:{limit.header}" if limit.key == "header" else limit.key,
            "limits": [x.text for x in limit.rule.limits],
            "paths": {rule.path: [x.text for x in rule.limits] for rule in limit.paths},
            "redis_down": limit.redis_down}


def describe_cors(service: ServiceConfig) -> dict[str, Any] | None:
    """The service's ``cors`` settings (None: off)."""
    cors = service.cors
    if cors is None:
        return None
    origins = (["*"] if cors.any_origin else []) + sorted(cors.origins)
    origins += [f"{scheme}*{suffix}" for scheme, suffix in cors.wildcards]
    return {"origins": origins, "methods": (["*"] if cors.any_method else []) + list(cors.methods),
            "headers": (["*"] if cors.any_header else []) + sorted(cors.headers),
            "expose_headers": list(cors.expose_headers), "credentials": cors.credentials, "max_age": cors.max_age}


def describe_services(settings: Settings, health: HealthMonitor | None = None,
                      breakers: Breakers | None = None) -> dict[str, Any]:
    """The whole listing: the services in configuration order and the gateway-wide settings they share."""
    return {
        "services": [describe_service(s, health, breakers) for s in settings.services.values()],
        "gateway": {
            "redis": form.describe() if (form := settings.redis_sentinel or settings.redis_cluster)
            else redact_url(settings.redis_url),
            "cache_stale_grace_s": settings.cache_stale_grace,
            "cache_max_object_bytes": settings.cache_max_object_bytes,
            "cache_max_entries": settings.cache_max_entries,
            "cache_max_bytes": settings.cache_max_bytes,
            "max_body_bytes": settings.max_body_bytes,
        },
    }
