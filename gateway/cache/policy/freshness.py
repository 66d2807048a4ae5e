"""Freshness (RFC 9111 §4.2): lifetimes, ages, when a stored answer may be reused, the stale windows, the TTL kept."""

from __future__ import annotations

from email.utils import formatdate
from typing import Literal

from gateway.cache.policy.dates import single_date
from gateway.cache.policy.directives import CacheControl, response_cache_control, seconds
from gateway.cache.policy.validators import has_validator
from gateway.messages import Headers, IndexedHeaders, header_value, header_values

# Statuses the gateway's own TTL (``CACHE_TTL``) applies to when a response says nothing at all.
TTL_STATUSES = frozenset({200, 203, 300, 301, 308})
# Statuses that are heuristically cacheable (RFC 9110 §15.1): with a Last-Modified and no explicit
# freshness they live a tenth of the time since that modification (RFC 9111 §4.2.2). 206 is left
# out: partial content is never stored.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
HEURISTIC_FRACTION = 0.1
HEURISTIC_MAX_S = 86400.0  # a day at most, however old the Last-Modified
# Directives that forbid serving a stale response without revalidating it first; they win over
# stale-if-error, stale-while-revalidate and the gateway's own stale grace.
STALE_FORBIDDING = ("must-revalidate", "proxy-revalidate", "no-cache", "s-maxage")
REVALIDATE_KEEP_S = 300.0  # an expired entry with a validator is kept this long to be revalidated (a 304)

Reuse = Literal["fresh", "stale-ok", "stale"]


def explicit_lifetime(headers: Headers, cc: CacheControl, targeted: bool = False,
                      received: float | None = None) -> float | None:
    """``s-maxage``, then ``max-age``, then ``Expires`` minus ``Date``; None when the response gives none.

    ``Expires`` must be exactly one valid HTTP-date, else the response is already stale (RFC 9111
    §5.3). Without a valid ``Date`` the time the response was ``received`` stands in for it.
    """
    for name in ("s-maxage", "max-age"):
        if name in cc:
            value = seconds(cc, name)
            return 0.0 if value is None else value  # a malformed value means stale (RFC 9111 §4.2.1)
    if targeted:
        return None  # a targeted field's silence is not an invitation to read Expires
    if header_values(headers, "Expires"):
        expires = single_date(headers, "Expires", received)
        date = single_date(headers, "Date", received)
        if date is None:
            date = received
        if expires is None or date is None:
            return 0.0  # an invalid Expires means "already expired"
        return max(0.0, expires - date)
    return None


def freshness_lifetime(status: int, headers: Headers, heuristic_ttl: float,
                       received: float | None = None) -> tuple[float, bool] | None:
    """Return ``(lifetime, heuristic)`` for a response, or None when it may not be stored for lack of freshness.

    Explicit freshness applies to any status. Without it: a heuristically cacheable status (any
    final one with ``public``) with a ``Last-Modified`` lives a tenth of the time since then (at
    most a day); failing that, the gateway's TTL applies to the statuses in ``TTL_STATUSES``
    (``heuristic`` True only then).
    """
    cc, targeted = response_cache_control(headers)
    explicit = explicit_lifetime(headers, cc, targeted, received)
    if explicit is not None:
        return explicit, False
    # ``public`` makes heuristic freshness apply to any final status (RFC 9111 §4.2.2).
    if status in HEURISTIC_STATUSES or ("public" in cc and 200 <= status <= 599):
        modified = single_date(headers, "Last-Modified", received)
        date = single_date(headers, "Date", received)
        if date is None:
            date = received
        if modified is not None and date is not None and date > modified:
            return min(HEURISTIC_MAX_S, (date - modified) * HEURISTIC_FRACTION), False
    if status in TTL_STATUSES:
        return heuristic_ttl, True  # 0 when the service's TTL is off: stored only to be revalidated
    return None


def dated(headers: Headers, now: float) -> Headers:
    """The headers with a ``Date``: their own, or ``now``, when the response arrived (RFC 9110 §6.6.1)."""
    if header_value(headers, "Date") is not None:
        return IndexedHeaders(headers)
    return IndexedHeaders([*headers, ("Date", formatdate(now, usegmt=True))])


def gateway_ttl_header(headers: Headers, lifetime: float, heuristic: bool, personal: bool) -> Headers:
    """``Cache-Control: max-age=<TTL>`` (``private`` for a personal entry) where the gateway's TTL applied and
    the upstream said nothing; no header otherwise."""
    if not heuristic or header_values(headers, "Cache-Control"):
        return []
    ttl = int(lifetime)
    return [("Cache-Control", f"private, max-age={ttl}" if personal else f"max-age={ttl}")]


def age_value(headers: Headers) -> float:
    """The upstream ``Age`` in seconds: the first member of the first line, 0 when not a whole number.

    ``Age: 7200, 0`` is an age of 7200 (stale), ``Age: 0, 7200`` an age of 0; anything else
    (``abc``, ``-1``, ``1.5``) is ignored.
    """
    raw = header_value(headers, "Age")
    if raw is None:
        return 0.0
    first = raw.split(",", 1)[0].strip(" \t")
    return float(first) if first.isdigit() else 0.0


def initial_age(headers: Headers, request_time: float, response_time: float) -> float:
    """The response's age when it arrived: upstream ``Age`` and ``Date`` corrected for the round trip (§4.2.3)."""
    date = single_date(headers, "Date", response_time)
    apparent = max(0.0, response_time - date) if date is not None else 0.0
    corrected = age_value(headers) + max(0.0, response_time - request_time)
    return max(apparent, corrected)


def reuse_state(req_cc: CacheControl, resp_cc: CacheControl, age: float, lifetime: float) -> Reuse:
    """Decide how a stored response may answer: ``fresh``, ``stale-ok`` (the client accepts stale) or ``stale``."""
    if "no-cache" in req_cc or "no-cache" in resp_cc:
        return "stale"
    max_age = seconds(req_cc, "max-age")
    if max_age is not None and age > max_age:
        return "stale"
    min_fresh = seconds(req_cc, "min-fresh")
    if min_fresh is not None and lifetime - age < min_fresh:
        return "stale"
    if lifetime > age:
        return "fresh"
    if "max-stale" in req_cc and not stale_forbidden(resp_cc):
        limit = seconds(req_cc, "max-stale")
        if req_cc["max-stale"] is None or (limit is not None and age - lifetime <= limit):
            return "stale-ok"
    return "stale"


def stale_forbidden(resp_cc: CacheControl) -> bool:
    """True when the response forbids being served stale (these win over every stale allowance)."""
    return any(name in resp_cc for name in STALE_FORBIDDING)


def stale_if_error_window(resp_cc: CacheControl, grace: float) -> float:
    """Seconds past expiry a response may still answer when the upstream fails."""
    if stale_forbidden(resp_cc):
        return 0.0
    return max(grace, seconds(resp_cc, "stale-if-error") or 0.0)


def stale_while_revalidate_window(resp_cc: CacheControl) -> float:
    """Seconds past expiry a response may answer while one refresher fetches a new one."""
    if stale_forbidden(resp_cc):
        return 0.0
    return seconds(resp_cc, "stale-while-revalidate") or 0.0


def serves_while_revalidating(req_cc: CacheControl, resp_cc: CacheControl, age: float, lifetime: float) -> bool:
    """True when an expired response may answer now while a background refresh fetches a new one."""
    staleness = age - lifetime
    return 0 <= staleness <= stale_while_revalidate_window(resp_cc) and "no-cache" not in req_cc


def serves_on_error(resp_cc: CacheControl, age: float, lifetime: float, grace: float) -> bool:
    """True when a stored response may answer (``STALE``) because the upstream failed or its circuit is open."""
    return not stale_forbidden(resp_cc) and age - lifetime <= stale_if_error_window(resp_cc, grace)


def kept_for(headers: Headers, cc: CacheControl, lifetime: float, initial: float, grace: float) -> float:
    """Seconds a store keeps an entry: what is left of its freshness plus the longest stale window.

    An entry with a validator is kept at least ``REVALIDATE_KEEP_S`` past expiry, so a later
    request revalidates it (a 304) instead of fetching it again. ``initial`` is its age on arrival.
    """
    extra = max(grace, seconds(cc, "stale-if-error") or 0.0, seconds(cc, "stale-while-revalidate") or 0.0)
    if has_validator(headers):
        extra = max(extra, REVALIDATE_KEEP_S)
    return max(0.0, lifetime - initial) + extra
