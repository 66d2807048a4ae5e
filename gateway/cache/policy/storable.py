"""The "never stored" rules (RFC 9111 §3): which responses may go into a shared cache at all."""

from __future__ import annotations

from gateway.cache.policy.directives import request_cache_control, response_cache_control
from gateway.cache.policy.freshness import freshness_lifetime
from gateway.cache.policy.keys import has_credentials, vary_names
from gateway.cache.policy.ranges import content_range
from gateway.cache.policy.validators import has_validator
from gateway.messages import Headers, header_value, header_values

# Final statuses RFC 9110 defines: a ``must-understand`` response with one of them may be stored
# even with ``no-store`` (RFC 9111 §5.2.2.3). 206 and 304 are not stored in any case.
UNDERSTOOD_STATUSES = frozenset({200, 201, 202, 203, 204, 205, 300, 301, 302, 303, 307, 308, 400, 401, 402,
                                 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417,
                                 421, 422, 426, 500, 501, 502, 503, 504, 505})
# Directives with which a response to a request carrying credentials may be stored (RFC 9111 §3.5).
SHARED_PERMISSION = ("public", "s-maxage", "must-revalidate")
# Request headers some frameworks obey to rewrite the URL or the method. The answer to such a request
# may not be what its key promises, so storing it would let one client poison the entry for all.
OVERRIDE_HEADERS = ("X-Original-URL", "X-Rewrite-URL", "X-HTTP-Method-Override", "X-HTTP-Method",
                    "X-Method-Override")


def not_storable_reason(method: str, request_headers: Headers, status: int, headers: Headers,
                        heuristic_ttl: float, received: float | None = None) -> str | None:
    """Why a response may not be stored (None when it may); the "never stored" rules.

    ``received`` is when the response arrived (stands in for a missing or invalid ``Date``). A 206
    may be stored (as a partial entry) only with one ``Content-Range`` of a known complete length.
    """
    if method != "GET":
        return "method"
    if any(header_values(request_headers, name) for name in OVERRIDE_HEADERS):
        return "override-header"
    if status == 206 and content_range(headers) is None:
        return "status"
    if status == 304 or status < 200 or status > 599:
        return "status"
    req_cc = request_cache_control(request_headers)
    cc, _ = response_cache_control(headers)
    if "must-understand" in cc and status not in UNDERSTOOD_STATUSES:
        return "status"
    if "no-store" in req_cc or ("no-store" in cc and "must-understand" not in cc):
        return "no-store"
    if "private" in cc:
        return "private"
    if "*" in vary_names(headers):
        return "vary-star"
    if header_values(headers, "Set-Cookie"):
        return "set-cookie"
    content_type = (header_value(headers, "Content-Type") or "").lower()
    if content_type.split(";")[0].strip() == "text/event-stream":
        return "event-stream"
    if has_credentials(request_headers) and not any(name in cc for name in SHARED_PERMISSION):
        return "credentials"
    lifetime = freshness_lifetime(status, headers, heuristic_ttl, received)
    if lifetime is None:
        return "no-freshness"
    if lifetime[0] <= 0 and not has_validator(headers) and "no-cache" not in cc:
        return "no-freshness"  # stale from birth and impossible to revalidate: nothing to reuse
    return None
