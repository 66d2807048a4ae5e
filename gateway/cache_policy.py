"""RFC 9111 rules for a shared cache, as pure functions of headers, statuses and times.

Nothing here touches a store or a clock: callers pass ``now`` and the stored timestamps, so every
rule is tested table-driven without sleeping.
"""

from __future__ import annotations

import hashlib
from email.utils import parsedate_to_datetime

from gateway.messages import Headers, header_value, header_values

HEURISTIC_STATUSES = frozenset({200, 203, 300, 301, 308})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Directives that forbid serving a stale response without revalidating it first; they win over
# stale-if-error, stale-while-revalidate and the gateway's own stale grace.
STALE_FORBIDDING = ("must-revalidate", "proxy-revalidate", "no-cache", "s-maxage")
# Directives with which a response to a request carrying credentials may be stored (RFC 9111 §3.5).
SHARED_PERMISSION = ("public", "s-maxage", "must-revalidate")

CacheControl = dict[str, str | None]


def parse_cache_control(headers: Headers) -> CacheControl:
    """Parse every ``Cache-Control`` line into ``{directive: value or None}`` (names lower-cased)."""
    directives: CacheControl = {}
    for line in header_values(headers, "Cache-Control"):
        for part in _split_list(line):
            name, sep, value = part.partition("=")
            name = name.strip().lower()
            if not name:
                continue
            text = value.strip()
            if len(text) >= 2 and text[0] == text[-1] == '"':
                text = text[1:-1]
            # The first occurrence wins: a duplicated directive is a sender error (RFC 9111 §4.2.1).
            directives.setdefault(name, text if sep else None)
    return directives


def _split_list(line: str) -> list[str]:
    """Split a comma list, keeping commas inside quoted strings (``no-cache="a, b"``)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def seconds(cc: CacheControl, name: str) -> float | None:
    """Return a delta-seconds directive's value, or None when absent or malformed."""
    value = cc.get(name)
    if value is None or not value.isdigit():
        return None
    return float(value)


def http_date(value: str | None) -> float | None:
    """Parse an HTTP date into epoch seconds, or None when absent or invalid."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def request_cache_control(headers: Headers) -> CacheControl:
    """The request's directives; ``Pragma: no-cache`` counts as ``no-cache`` when there is no Cache-Control."""
    cc = parse_cache_control(headers)
    if not header_values(headers, "Cache-Control"):
        pragma = ",".join(header_values(headers, "Pragma")).lower()
        if "no-cache" in pragma:
            cc["no-cache"] = None
    return cc


def has_credentials(headers: Headers) -> bool:
    """True when the request carries ``Authorization`` or ``Cookie``."""
    return bool(header_values(headers, "Authorization") or header_values(headers, "Cookie"))


def credential_digest(headers: Headers) -> str:
    """A digest of the request's credentials, so one user's entries never reach another."""
    material = "\0".join(header_values(headers, "Authorization")) + "\1" + "\0".join(header_values(headers, "Cookie"))
    return hashlib.sha256(material.encode("utf-8", "surrogateescape")).hexdigest()


def explicit_lifetime(headers: Headers, cc: CacheControl) -> float | None:
    """``s-maxage``, then ``max-age``, then ``Expires`` minus ``Date``; None when the response gives none."""
    for name in ("s-maxage", "max-age"):
        if name in cc:
            value = seconds(cc, name)
            return 0.0 if value is None else value  # a malformed value means stale (RFC 9111 §4.2.1)
    expires_raw = header_value(headers, "Expires")
    if expires_raw is not None:
        expires = http_date(expires_raw)
        date = http_date(header_value(headers, "Date"))
        if expires is None or date is None:
            return 0.0  # an invalid Expires means "already expired"
        return max(0.0, expires - date)
    return None


def freshness_lifetime(status: int, headers: Headers, heuristic_ttl: float) -> tuple[float, bool] | None:
    """Return ``(lifetime, heuristic)`` for a response, or None when it may not be stored for lack of freshness."""
    cc = parse_cache_control(headers)
    explicit = explicit_lifetime(headers, cc)
    if explicit is not None:
        return explicit, False
    if status in HEURISTIC_STATUSES:
        return heuristic_ttl, True
    return None


def initial_age(headers: Headers, request_time: float, response_time: float) -> float:
    """The response's age when it arrived: upstream ``Age`` and ``Date`` corrected for the round trip (§4.2.3)."""
    age_raw = header_value(headers, "Age")
    age_value = float(age_raw) if age_raw and age_raw.strip().isdigit() else 0.0
    date = http_date(header_value(headers, "Date"))
    apparent = max(0.0, response_time - date) if date is not None else 0.0
    corrected = age_value + max(0.0, response_time - request_time)
    return max(apparent, corrected)


# Request headers some frameworks obey to rewrite the URL or the method. The answer to such a request
# may not be what its key promises, so storing it would let one client poison the entry for all.
OVERRIDE_HEADERS = ("X-Original-URL", "X-Rewrite-URL", "X-HTTP-Method-Override", "X-HTTP-Method",
                    "X-Method-Override")


def not_storable_reason(method: str, request_headers: Headers, status: int, headers: Headers,
                        heuristic_ttl: float) -> str | None:
    """Why a response may not be stored (None when it may); the "never stored" rules."""
    if method != "GET":
        return "method"
    if any(header_values(request_headers, name) for name in OVERRIDE_HEADERS):
        return "override-header"
    if status in (206, 304) or status < 200 or status >= 500:
        return "status"
    req_cc = request_cache_control(request_headers)
    cc = parse_cache_control(headers)
    if "no-store" in req_cc or "no-store" in cc:
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
    lifetime = freshness_lifetime(status, headers, heuristic_ttl)
    if lifetime is None:
        return "no-freshness"
    if lifetime[0] <= 0 and not has_validator(headers) and "no-cache" not in cc:
        return "no-freshness"  # stale from birth and impossible to revalidate: nothing to reuse
    return None


def has_validator(headers: Headers) -> bool:
    """True when the response has an ``ETag`` or ``Last-Modified`` to revalidate with."""
    return header_value(headers, "ETag") is not None or header_value(headers, "Last-Modified") is not None


def vary_names(headers: Headers) -> list[str]:
    """The request header names the response varies on, lower-cased and sorted (``*`` kept)."""
    names: set[str] = set()
    for line in header_values(headers, "Vary"):
        names.update(part.strip().lower() for part in line.split(",") if part.strip())
    return sorted(names)


def vary_values(request_headers: Headers, names: list[str]) -> list[str | None]:
    """The request's values of the ``Vary`` headers, whitespace-normalised; None where absent."""
    values: list[str | None] = []
    for name in names:
        found = header_values(request_headers, name)
        values.append(", ".join(" ".join(v.split()) for v in found) if found else None)
    return values


def reuse_state(req_cc: CacheControl, resp_cc: CacheControl, age: float, lifetime: float) -> str:
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


def _etags(value: str) -> list[str]:
    return [tag.strip() for tag in _split_list(value)]


def _weak(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def not_modified(request_headers: Headers, stored_headers: Headers) -> bool:
    """True when the client's conditional GET/HEAD matches the stored response (answer 304)."""
    inm = header_values(request_headers, "If-None-Match")
    if inm:
        etag = header_value(stored_headers, "ETag")
        if etag is None:
            return False
        wanted = [t for line in inm for t in _etags(line)]
        return "*" in wanted or _weak(etag.strip()) in {_weak(t) for t in wanted}
    ims = http_date(header_value(request_headers, "If-Modified-Since"))
    if ims is None:
        return False
    modified = http_date(header_value(stored_headers, "Last-Modified"))
    if modified is None:
        modified = http_date(header_value(stored_headers, "Date"))
    return modified is not None and modified <= ims


def validators(stored_headers: Headers) -> Headers:
    """Conditional request headers that revalidate a stored response."""
    out: Headers = []
    etag = header_value(stored_headers, "ETag")
    if etag is not None:
        out.append(("If-None-Match", etag))
    last_modified = header_value(stored_headers, "Last-Modified")
    if last_modified is not None:
        out.append(("If-Modified-Since", last_modified))
    return out


# Headers a 304 must not overwrite in the stored response (RFC 9111 §3.2 and §4.3.4).
_KEEP_ON_304 = frozenset({"content-length", "content-encoding", "transfer-encoding", "content-range", "age"})


def refresh_headers(stored: Headers, fresh: Headers) -> Headers:
    """Merge a 304's headers into a stored response's headers."""
    replaced = {k.lower() for k, _ in fresh if k.lower() not in _KEEP_ON_304}
    kept = [(k, v) for k, v in stored if k.lower() not in replaced]
    return kept + [(k, v) for k, v in fresh if k.lower() in replaced]


# Headers sent with a 304 answer to a client's conditional request (RFC 9110 §15.4.5).
NOT_MODIFIED_HEADERS = frozenset({"cache-control", "content-location", "date", "etag", "expires", "vary",
                                  "last-modified"})
