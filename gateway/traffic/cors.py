"""CORS per service: preflights answered by the gateway, CORS headers added to every answer on its way out.

The cache stores a service's answer as the service gave it; the CORS headers are worked out per
request, for its ``Origin``, after the lookup (hit or miss), so one stored entry serves every origin
right. The gateway owns CORS for a service that configures it: the service's own
``Access-Control-*`` response headers are dropped.

* A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) never goes upstream:
  204 with the allowed origin, methods, headers, credentials and max-age; or, when the origin, the
  method or a requested header is not allowed, 403 ``cors_forbidden`` naming which, with no CORS
  headers (the browser refuses the call either way; the JSON tells a developer why).
* Any other request from an allowed origin gets ``Access-Control-Allow-Origin`` (its origin, or ``*``
  when every origin is allowed without credentials), ``-Allow-Credentials`` and ``-Expose-Headers``;
  from any other origin, or with no ``Origin``, no CORS headers. The request is forwarded either way:
  CORS tells browsers what they may read, it is not access control.
* ``Vary: Origin`` is added to every answer whose CORS headers depend on the origin (all but ``*``),
  so browser and shared caches downstream keep one copy per origin.
"""

from __future__ import annotations

from gateway.config.traffic import CorsSettings
from gateway.errors import CorsForbidden
from gateway.messages import Headers, ProxyCall, ProxyResponse, header_values

PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


def is_preflight(call: ProxyCall) -> bool:
    """``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``: the browser asking first."""
    return (call.method == "OPTIONS" and call.header("Origin") is not None
            and call.header("Access-Control-Request-Method") is not None)


def _allow_origin(cors: CorsSettings, origin: str) -> str:
    return "*" if cors.any_origin and not cors.credentials else origin


def preflight(cors: CorsSettings, call: ProxyCall) -> ProxyResponse:
    """The gateway's own answer to a preflight; raises :class:`CorsForbidden` when it is not allowed."""
    origin = call.header("Origin") or ""
    method = (call.header("Access-Control-Request-Method") or "").strip()
    requested = [h.strip() for value in header_values(call.headers, "Access-Control-Request-Headers")
                 for h in value.split(",") if h.strip()]
    vary = [("Vary", PREFLIGHT_VARY)]
    if not cors.allows(origin):
        raise CorsForbidden(f"The origin {origin!r} may not call this service from a browser.",
                            service=call.service.name, headers=vary)
    if not (cors.any_method or method.upper() in cors.methods):
        raise CorsForbidden(f"The method {method!r} is not allowed from other origins; allowed: "
                            f"{', '.join(cors.methods)}.", service=call.service.name, headers=vary)
    if not cors.any_header:
        refused = [h for h in requested if h.lower() not in cors.headers]
        if refused:
            raise CorsForbidden(f"The request header {refused[0]!r} is not allowed from other origins.",
                                service=call.service.name, headers=vary)
    headers: Headers = [
        ("Access-Control-Allow-Origin", _allow_origin(cors, origin)),
        ("Access-Control-Allow-Methods", method.upper() if cors.any_method else ", ".join(cors.methods)),
    ]
    if requested:
        headers.append(("Access-Control-Allow-Headers", ", ".join(requested)))
    if cors.credentials:
        headers.append(("Access-Control-Allow-Credentials", "true"))
    if cors.max_age is not None:
        headers.append(("Access-Control-Max-Age", str(cors.max_age)))
    headers += vary
    return ProxyResponse(status=204, headers=headers, body=b"")


def response_headers(cors: CorsSettings, origin: str | None) -> Headers:
    """The CORS headers an actual (not preflight) request's answer gets for ``origin``."""
    if cors.any_origin and not cors.credentials:
        headers: Headers = [("Access-Control-Allow-Origin", "*")]
    elif origin is not None and cors.allows(origin):
        headers = [("Access-Control-Allow-Origin", origin)]
        if cors.credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
    else:
        return []
    if cors.expose_headers:
        headers.append(("Access-Control-Expose-Headers", ", ".join(cors.expose_headers)))
    return headers


def with_cors(cors: CorsSettings, origin: str | None, headers: Headers, extra: Headers | None = None) -> Headers:
    """``headers`` less the service's own CORS headers, plus ``extra`` and this origin's CORS headers and Vary."""
    out: Headers = []
    vary: list[str] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered.startswith("access-control-"):
            continue
        if lowered == "vary":
            vary += [token.strip() for token in value.split(",") if token.strip()]
            continue
        out.append((name, value))
    if extra:
        out += extra
    out += response_headers(cors, origin)
    varies = not (cors.any_origin and not cors.credentials)
    if varies and "*" not in vary and "origin" not in {token.lower() for token in vary}:
        vary.append("Origin")
    if vary:
        out.append(("Vary", ", ".join(vary)))
    return out
