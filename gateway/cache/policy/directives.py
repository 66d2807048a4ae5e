"""What a request or a response asks of a cache: ``Cache-Control``, ``Pragma`` and the targeted fields (RFC 9213)."""

from __future__ import annotations

import re

from gateway.messages import Headers, header_values

# Targeted cache-control fields (RFC 9213), first valid one wins over Cache-Control and Expires:
# the gateway's own (removed before the answer goes downstream), then the one for CDNs (forwarded,
# so a CDN in front of the gateway obeys it too).
GATEWAY_TARGETED = "Gateway-Cache-Control"
TARGETED_FIELDS = (GATEWAY_TARGETED, "CDN-Cache-Control")

CacheControl = dict[str, str | None]


def parse_cache_control(headers: Headers) -> CacheControl:
    """Parse every ``Cache-Control`` line into ``{directive: value or None}`` (names lower-cased)."""
    directives: CacheControl = {}
    for line in header_values(headers, "Cache-Control"):
        for part in split_list(line):
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


def split_list(line: str) -> list[str]:
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


def request_cache_control(headers: Headers) -> CacheControl:
    """The request's directives; ``Pragma: no-cache`` counts as ``no-cache`` when there is no Cache-Control."""
    cc = parse_cache_control(headers)
    if not header_values(headers, "Cache-Control"):
        pragma = ",".join(header_values(headers, "Pragma")).lower()
        if "no-cache" in pragma:
            cc["no-cache"] = None
    return cc


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
    return [(k, v) for k, v in headers if k.lower() != GATEWAY_TARGETED.lower()]
