"""RFC 9111 rules for a shared cache, as pure functions of headers, statuses and times.

Nothing here touches a store or a clock: callers pass ``now`` and the stored timestamps, so every
rule is tested table-driven without sleeping.
"""

from __future__ import annotations

import calendar
import hashlib
import re
import time

from gateway.messages import Headers, header_value, header_values

# Statuses the gateway's own TTL (``CACHE_TTL``) applies to when a response says nothing at all.
TTL_STATUSES = frozenset({200, 203, 300, 301, 308})
# Statuses that are heuristically cacheable (RFC 9110 §15.1): with a Last-Modified and no explicit
# freshness they live a tenth of the time since that modification (RFC 9111 §4.2.2). 206 is left
# out: partial content is never stored.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
HEURISTIC_FRACTION = 0.1
HEURISTIC_MAX_S = 86400.0  # a day at most, however old the Last-Modified
# Final statuses RFC 9110 defines: a ``must-understand`` response with one of them may be stored
# even with ``no-store`` (RFC 9111 §5.2.2.3). 206 and 304 are not stored in any case.
UNDERSTOOD_STATUSES = frozenset({200, 201, 202, 203, 204, 205, 300, 301, 302, 303, 307, 308, 400, 401, 402,
                                 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417,
                                 421, 422, 426, 500, 501, 502, 503, 504, 505})
# Targeted cache-control fields (RFC 9213), first valid one wins over Cache-Control and Expires:
# the gateway's own (removed before the answer goes downstream), then the one for CDNs (forwarded,
# so a CDN in front of the gateway obeys it too).
GATEWAY_TARGETED = "Gateway-Cache-Control"
TARGETED_FIELDS = (GATEWAY_TARGETED, "CDN-Cache-Control")
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


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY = r"(?:mon|tue|wed|thu|fri|sat|sun)"
_MONTH = r"(?P<month>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
_TIME = r"(?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)"
# The three forms of RFC 9110 §5.6.7, exactly (names in any case): IMF-fixdate, then the obsolete
# RFC 850 and asctime forms recipients must still accept. Anything else is not a date.
_DATE_FORMS = (
    re.compile(rf"{_DAY}, (?P<d>\d\d) {_MONTH} (?P<y>\d{{4}}) {_TIME} gmt", re.IGNORECASE),
    re.compile(r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday), "
               rf"(?P<d>\d\d)-{_MONTH}-(?P<yy>\d\d) {_TIME} gmt", re.IGNORECASE),
    re.compile(rf"{_DAY} {_MONTH} (?P<d>[ \d]\d) {_TIME} (?P<y>\d{{4}})", re.IGNORECASE),
)


def http_date(value: str | None, now: float | None = None) -> float | None:
    """Parse an HTTP-date (RFC 9110 §5.6.7) into epoch seconds; None when absent or not exactly one.

    A two-digit RFC 850 year more than 50 years ahead of ``now`` is taken to be in the past.
    """
    if not value:
        return None
    for form in _DATE_FORMS:
        match = form.fullmatch(value.strip(" \t"))
        if match is None:
            continue
        parts = match.groupdict()
        if parts.get("yy") is not None:
            current = time_year(now)
            year = current - current % 100 + int(parts["yy"])
            if year > current + 50:
                year -= 100
        else:
            year = int(parts["y"])
        fields = (year, _MONTHS.index(parts["month"].lower()) + 1, int(parts["d"]),
                  int(parts["h"]), int(parts["m"]), int(parts["s"]))
        if not (1 <= fields[2] <= 31 and fields[3] <= 23 and fields[4] <= 59 and fields[5] <= 60):
            return None
        return float(calendar.timegm((*fields, 0, 0, 0)))
    return None


def time_year(now: float | None) -> int:
    """The UTC year at ``now`` (the current time when None)."""
    return time.gmtime(now).tm_year


def single_date(headers: Headers, name: str, now: float | None = None) -> float | None:
    """The date in header ``name``; None when absent, invalid or given more than once."""
    lines = header_values(headers, name)
    if len(lines) != 1:
        return None
    return http_date(lines[0], now)


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


def targeted_cache_control(headers: Headers) -> CacheControl | None:
    """The directives of the first valid targeted field (RFC 9213), or None when there is none.

    A targeted field is a structured-field Dictionary (RFC 8941): lower-case keys, and ``max-age`` /
    ``s-maxage`` non-negative integers. A field that does not parse so is ignored as if absent.
    """
    for name in TARGETED_FIELDS:
        lines = header_values(headers, name)
        if not lines:
            continue
        directives = _sf_dictionary(",".join(lines))
        if directives:
            return directives
    return None


_SF_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_SF_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~:/0-9A-Za-z]*")


def _sf_dictionary(text: str) -> CacheControl | None:
    """A small RFC 8941 Dictionary reader for targeted cache-control fields; None when invalid."""
    directives: CacheControl = {}
    for member in text.split(","):
        member = member.strip(" \t")
        if not member:
            return None
        key, sep, value = member.partition("=")
        key = key.split(";", 1)[0]  # parameters are allowed and carry nothing a cache needs here
        if not _SF_KEY.fullmatch(key):
            return None
        item: str | None = None
        if sep:
            value = value.split(";", 1)[0]
            if re.fullmatch(r"-?\d{1,15}", value) or _SF_TOKEN.fullmatch(value) or value in ("?0", "?1"):
                item = value
            elif len(value) >= 2 and value[0] == value[-1] == '"':
                item = '"' + value[1:-1] + '"'  # a string; kept quoted so it is never taken for a number
            else:
                return None
        directives[key] = item  # the last one wins in a Dictionary
    for name in ("max-age", "s-maxage"):
        if name in directives and not (directives[name] or "").isdigit():
            return None
    return directives


def response_cache_control(headers: Headers) -> tuple[CacheControl, bool]:
    """The directives the gateway obeys for a response, and whether they came from a targeted field.

    A targeted field (RFC 9213) wins: then ``Cache-Control`` and ``Expires`` are ignored.
    """
    targeted = targeted_cache_control(headers)
    if targeted is not None:
        return targeted, True
    return parse_cache_control(headers), False


def downstream_headers(headers: Headers) -> Headers:
    """A response's headers as they go to the client: less the field targeted at the gateway alone."""
    return [(k, v) for k, v in headers if k.lower() != "gateway-cache-control"]


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
    """The request's values of the ``Vary`` headers, normalised; None where absent (RFC 9111 §4.1).

    Lines are combined and list members trimmed (``Foo: 1`` + ``Foo: 2`` equals ``Foo: 1,2``);
    ``Accept-Language`` is also compared without regard to case, spaces or the order of its members.
    """
    values: list[str | None] = []
    for name in names:
        found = header_values(request_headers, name)
        if not found:
            values.append(None)
            continue
        members = [" ".join(m.split()) for line in found for m in line.split(",")]
        members = [m for m in members if m]
        if name == "accept-language":
            members = sorted(m.lower().replace(" ", "") for m in members)
        values.append(", ".join(members))
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


def byte_range(request_headers: Headers, stored_headers: Headers, length: int) -> tuple[int, int] | str | None:
    """The one byte range a GET asks of a complete stored body: ``(first, last)``, ``"unsatisfiable"``, or None.

    None means answer the whole body (no ``Range``, a unit other than bytes, several ranges, a
    malformed one, or an ``If-Range`` that does not match the stored response) (RFC 9110 §14).
    """
    lines = header_values(request_headers, "Range")
    if len(lines) != 1:
        return None
    unit, _, spec = lines[0].strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    if_range = header_value(request_headers, "If-Range")
    if if_range is not None and not _if_range_matches(if_range.strip(), stored_headers):
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    if not dash or not (first_text.isdigit() or last_text.isdigit()):
        return None
    if not first_text:  # a suffix: the last N bytes
        suffix = int(last_text)
        if suffix == 0:
            return "unsatisfiable"
        return max(0, length - suffix), length - 1
    if last_text and not last_text.isdigit():
        return None
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # invalid: ignored
    last = int(last_text) if last_text else length - 1
    if first >= length:
        return "unsatisfiable"
    return first, min(last, length - 1)


def _if_range_matches(if_range: str, stored_headers: Headers) -> bool:
    """If-Range: a strong ETag equal to the stored one, or exactly the stored Last-Modified."""
    if if_range.startswith('"') or if_range.startswith("W/"):
        etag = header_value(stored_headers, "ETag")
        return etag is not None and not if_range.startswith("W/") and etag.strip() == if_range
    modified = header_value(stored_headers, "Last-Modified")
    return modified is not None and http_date(if_range) is not None and http_date(if_range) == http_date(modified)


def content_range(headers: Headers) -> tuple[int, int, int] | None:
    """A 206's one ``Content-Range: bytes first-last/length`` as numbers; None for anything else."""
    lines = header_values(headers, "Content-Range")
    if len(lines) != 1:
        return None
    match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", lines[0].strip())
    if match is None:
        return None
    first, last, length = (int(group) for group in match.groups())
    if not first <= last < length:
        return None
    return first, last, length
