"""Hostile requests shared by the hostile-input suites: generated paths, queries, methods, headers and bodies.

Pieces that have broken proxies before (dot segments, encoded separators, bad escapes, NUL, unicode,
framing headers), and the check that an answer from the echo endpoint never left its service.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from hypothesis import strategies as st

MAX_BODY = 4096
ECHO = "/tracking/_debug/echo"

# Pieces of paths that have broken proxies: dot segments, encoded separators, bad escapes, NUL,
# unicode, parameters, doubled slashes.
SEGMENTS = st.sampled_from([
    "a", "x.json", "..", ".", "%2e", "%2E%2e", ".%2e", "%2e.", "%2f", "%2F", "%5c", "%5C", "\\", "%00", "%",
    "%zz", "%%", "%2", "é", "%c3%a9", "%ff", "~", "%7e", ";", ";x=..", "", "%252e%252e", "%u002e", "..;",
    "a%20b", "%0d%0aX-Injected:%201", "\u2025", "%e2%80%a5", "\uff0e\uff0e", "*", "@", ":", "%3f", "%23",
])
PATHS = st.builds(lambda prefix, parts: prefix + "/" + "/".join(parts),
                  st.sampled_from([ECHO, "/tracking", "/orders", "/nothing", "/admin", "/stats"]),
                  st.lists(SEGMENTS, max_size=6))
QUERIES = st.one_of(st.just(""), st.text(st.characters(codec="latin-1", exclude_characters="#\r\n "), max_size=30)
                    .map(lambda q: "?" + q.replace("status=", "")))
METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND",
                           "CONNECT", "get", "FOO"])
HEADER_NAMES = st.sampled_from([
    "Content-Type", "Transfer-Encoding", "Connection", "Upgrade", "Cookie", "Authorization", "X-Request-ID",
    "X-Forwarded-For", "X-Forwarded-Host", "X-Original-URL", "X-HTTP-Method-Override", "Cache-Control",
    "If-None-Match", "Range", "Expect", "Content-Encoding", "Via", "Host", "X-Custom",
])
HEADER_VALUES = st.one_of(
    st.sampled_from(["application/json", "application/x+json", "text/plain", "chunked", "close, X-Custom",
                     "websocket", "only-if-cached", "no-store, max-age=-1", "*", "bytes=0-0", "100-continue",
                     "gzip", "", " "]),
    st.text(st.characters(codec="latin-1", exclude_characters="\r\n\x00"), max_size=40),
)
BODIES = st.one_of(st.just(b""), st.binary(max_size=64), st.sampled_from([b"{", b'{"a": 1}', b"[1,", b"\xff\xfe",
                                                                         b"x" * (MAX_BODY + 1)]))



def assert_stays_in_service(target: str, answer: dict[str, Any]) -> None:
    """The upstream got a target under the service, without dot segments once decoded."""
    assert answer["service"] == "tracking-service"
    raw_path = answer["raw_target"].partition("?")[0]
    assert raw_path.startswith("/_debug/echo"), (target, raw_path)
    segments = unquote_to_bytes(raw_path).split(b"/")
    assert b".." not in segments and b"." not in segments, (target, raw_path)
    assert b"\\" not in unquote_to_bytes(raw_path)
