"""The client's answer from a stored entry: a new ``Age``, a 304 for a matching conditional, a 206 for one range."""

from __future__ import annotations

from gateway.cache.entry import Entry
from gateway.cache.policy import freshness, ranges, validators
from gateway.cache.policy.directives import GATEWAY_TARGETED
from gateway.messages import Headers, ProxyCall, ProxyResponse, header_values

# Stored headers an answer does not carry: Age is recomputed; the field targeted at the gateway stays here.
NOT_SERVED = frozenset({"age", GATEWAY_TARGETED.lower()})
NOT_SERVED_PARTIAL = NOT_SERVED | {"content-range", "content-length"}  # set anew for the bytes served


def answer(call: ProxyCall, entry: Entry, label: str, now: float, source: str, *,
           conditional: bool = True) -> ProxyResponse:
    """Answer ``call`` from ``entry``: its headers as stored (``Date`` included) with a new ``Age``; a 304 when
    the client's own conditional matches (if ``conditional``); a 206 or 416 for one byte range."""
    headers = [(k, v) for k, v in entry.headers if k.lower() not in NOT_SERVED]
    headers += gateway_ttl_header(entry)
    headers.append(("Age", _age(entry, now)))
    if conditional and entry.status == 200 and validators.not_modified(call.headers, entry.headers):
        kept = [(k, v) for k, v in headers if k.lower() in validators.NOT_MODIFIED_HEADERS or k.lower() == "age"]
        return ProxyResponse(status=304, headers=kept, body=b"", cache=label, cache_source=source)
    method = call.method.upper()
    if method == "GET" and entry.status == 200 and header_values(call.headers, "Range"):
        cut = _range_of_whole(call, entry, headers, label, source)
        if cut is not None:
            return cut
    body = entry.body if method == "GET" else b""
    return ProxyResponse(status=entry.status, headers=headers, body=body, cache=label, cache_source=source)


def _range_of_whole(call: ProxyCall, entry: Entry, headers: Headers, label: str, source: str) -> ProxyResponse | None:
    """A 206 (or 416) cut from a complete stored body for a single-range GET; None: answer it whole."""
    length = len(entry.body)
    wanted = ranges.byte_range(call.headers, entry.headers, length)
    if wanted is None:
        return None
    headers = [(k, v) for k, v in headers if k.lower() not in ("content-length", "content-range")]
    if isinstance(wanted, str):  # unsatisfiable
        headers.append(("Content-Range", f"bytes */{length}"))
        return ProxyResponse(status=416, headers=headers, body=b"", cache=label, cache_source=source)
    cut = ranges.Cut(wanted[0], wanted[1], length, start=wanted[0])
    headers.append(("Content-Range", cut.content_range))
    return ProxyResponse(status=206, headers=headers, body=cut.of(entry.body), cache=label, cache_source=source)


def from_partial(entry: Entry, cut: ranges.Cut, now: float, source: str) -> ProxyResponse:
    """A ``HIT`` 206 with the bytes of ``cut`` from a stored partial answer."""
    headers = [(k, v) for k, v in entry.headers if k.lower() not in NOT_SERVED_PARTIAL]
    headers += [("Content-Range", cut.content_range), ("Age", _age(entry, now))]
    return ProxyResponse(status=206, headers=headers, body=cut.of(entry.body), cache="HIT", cache_source=source)


def gateway_ttl_header(entry: Entry) -> Headers:
    """The ``Cache-Control`` saying the gateway's TTL, where it applied to the entry (see ``freshness``)."""
    return freshness.gateway_ttl_header(entry.headers, entry.lifetime, entry.heuristic, entry.personal)


def _age(entry: Entry, now: float) -> str:
    return str(int(entry.age(now)))
