"""RFC 9111 rules of the shared cache, table-driven: each directive both ways, Expires, Age, Vary, credentials."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from gateway import cache_policy as policy

T0 = 1_700_000_000.0
DATE = formatdate(T0, usegmt=True)


def h(*pairs: str) -> list[tuple[str, str]]:
    """Headers from "Name: value" strings."""
    return [tuple(p.split(": ", 1)) for p in pairs]  # type: ignore[misc]


@pytest.mark.parametrize("lines, expected", [
    (["max-age=60"], {"max-age": "60"}),
    (["public, max-age=60, s-maxage=30"], {"public": None, "max-age": "60", "s-maxage": "30"}),
    (["No-Cache", "MAX-AGE=5"], {"no-cache": None, "max-age": "5"}),
    (['private="Set-Cookie, X-A", max-age=1'], {"private": "Set-Cookie, X-A", "max-age": "1"}),
    (["max-age=1, max-age=9"], {"max-age": "1"}),
    ([" , ,no-store"], {"no-store": None}),
    ([], {}),
])
def test_parse_cache_control(lines: list[str], expected: dict) -> None:
    assert policy.parse_cache_control([("Cache-Control", line) for line in lines]) == expected


@pytest.mark.parametrize("status, headers, expected", [
    (200, h("Cache-Control: s-maxage=10, max-age=60"), (10.0, False)),   # s-maxage beats max-age
    (200, h("Cache-Control: max-age=60", "Expires: " + formatdate(T0 + 999, usegmt=True), "Date: " + DATE),
     (60.0, False)),                                                     # max-age beats Expires
    (200, h("Expires: " + formatdate(T0 + 120, usegmt=True), "Date: " + DATE), (120.0, False)),
    (200, h("Expires: 0", "Date: " + DATE), (0.0, False)),              # invalid Expires: already expired
    (200, h("Expires: " + formatdate(T0 + 120, usegmt=True)), (0.0, False)),  # no Date to subtract from
    (200, h("Cache-Control: max-age=abc"), (0.0, False)),              # malformed: stale
    (200, [], (300.0, True)),                                           # heuristic TTL
    (200, h("Cache-Control: public"), (300.0, True)),
    (203, [], (300.0, True)),
    (300, [], (300.0, True)),
    (301, [], (300.0, True)),
    (308, [], (300.0, True)),
    (302, [], None),
    (404, [], None),
    (404, h("Cache-Control: max-age=30"), (30.0, False)),
    (410, [], None),
])
def test_freshness_lifetime(status: int, headers: list, expected: tuple | None) -> None:
    assert policy.freshness_lifetime(status, headers, 300.0) == expected


@pytest.mark.parametrize("headers, request_time, response_time, expected", [
    ([], T0, T0, 0.0),
    (h("Age: 30"), T0, T0, 30.0),
    (h("Age: 30"), T0, T0 + 2, 32.0),                         # plus the response delay
    (h("Date: " + formatdate(T0 - 50, usegmt=True)), T0, T0, 50.0),  # apparent age from Date
    (h("Age: junk"), T0, T0, 0.0),
])
def test_initial_age(headers: list, request_time: float, response_time: float, expected: float) -> None:
    assert policy.initial_age(headers, request_time, response_time) == pytest.approx(expected, abs=1)


CREDS = h("Authorization: Bearer a")
COOKIE = h("Cookie: s=1")


@pytest.mark.parametrize("method, req, status, resp, reason", [
    ("GET", [], 200, [], None),
    ("HEAD", [], 200, [], "method"),
    ("POST", [], 200, h("Cache-Control: max-age=60"), "method"),
    ("GET", [], 200, h("Cache-Control: no-store"), "no-store"),
    ("GET", h("Cache-Control: no-store"), 200, [], "no-store"),
    ("GET", [], 200, h("Cache-Control: private"), "private"),
    ("GET", [], 200, h("Cache-Control: private, max-age=60"), "private"),
    ("GET", [], 200, h("Vary: *"), "vary-star"),
    ("GET", [], 200, h("Vary: Accept, *"), "vary-star"),
    ("GET", [], 200, h("Vary: Accept"), None),
    ("GET", [], 200, h("Set-Cookie: a=1"), "set-cookie"),
    ("GET", [], 206, h("Cache-Control: max-age=60"), "status"),
    ("GET", [], 304, [], "status"),
    ("GET", [], 500, h("Cache-Control: max-age=60"), "status"),
    ("GET", [], 200, h("Content-Type: text/event-stream; charset=utf-8"), "event-stream"),
    ("GET", CREDS, 200, [], "credentials"),
    ("GET", COOKIE, 200, h("Cache-Control: max-age=60"), "credentials"),
    ("GET", CREDS, 200, h("Cache-Control: public"), None),
    ("GET", CREDS, 200, h("Cache-Control: s-maxage=60"), None),
    ("GET", COOKIE, 200, h("Cache-Control: must-revalidate"), None),
    ("GET", [], 404, [], "no-freshness"),
    ("GET", [], 404, h("Cache-Control: max-age=5"), None),
    ("GET", [], 200, h("Cache-Control: max-age=0"), "no-freshness"),        # stale and no validator
    ("GET", [], 200, h("Cache-Control: max-age=0", 'ETag: "x"'), None),    # stale but revalidatable
    ("GET", [], 200, h("Cache-Control: no-cache"), None),                 # stored, revalidated each time
])
def test_not_storable_reason(method: str, req: list, status: int, resp: list, reason: str | None) -> None:
    assert policy.not_storable_reason(method, req, status, resp, 300.0) == reason


def test_zero_heuristic_ttl_stores_nothing() -> None:
    assert policy.not_storable_reason("GET", [], 200, [], 0.0) == "no-freshness"


@pytest.mark.parametrize("req, resp, age, lifetime, expected", [
    ("", "", 10, 60, "fresh"),
    ("", "", 60, 60, "stale"),
    ("", "", 61, 60, "stale"),
    ("no-cache", "", 0, 60, "stale"),
    ("", "no-cache", 0, 60, "stale"),
    ("max-age=5", "", 10, 60, "stale"),
    ("max-age=20", "", 10, 60, "fresh"),
    ("min-fresh=55", "", 10, 60, "stale"),
    ("min-fresh=40", "", 10, 60, "fresh"),
    ("max-stale", "", 600, 60, "stale-ok"),
    ("max-stale=10", "", 65, 60, "stale-ok"),
    ("max-stale=10", "", 75, 60, "stale"),
    ("max-stale", "must-revalidate", 65, 60, "stale"),
    ("max-stale", "proxy-revalidate", 65, 60, "stale"),
    ("max-stale", "s-maxage=60", 65, 60, "stale"),
    ("only-if-cached", "", 10, 60, "fresh"),
])
def test_reuse_state(req: str, resp: str, age: float, lifetime: float, expected: str) -> None:
    req_cc = policy.parse_cache_control([("Cache-Control", req)] if req else [])
    resp_cc = policy.parse_cache_control([("Cache-Control", resp)] if resp else [])
    assert policy.reuse_state(req_cc, resp_cc, age, lifetime) == expected


def test_pragma_no_cache_only_without_cache_control() -> None:
    assert "no-cache" in policy.request_cache_control(h("Pragma: no-cache"))
    assert "no-cache" not in policy.request_cache_control(h("Pragma: no-cache", "Cache-Control: max-age=9"))


@pytest.mark.parametrize("resp, grace, error_window, swr_window", [
    ("max-age=60", 300, 300, 0),
    ("max-age=60, stale-if-error=900", 300, 900, 0),
    ("max-age=60, stale-if-error=10", 0, 10, 0),
    ("max-age=60, stale-while-revalidate=30", 300, 300, 30),
    ("max-age=60, must-revalidate, stale-if-error=900", 300, 0, 0),
    ("max-age=60, proxy-revalidate", 300, 0, 0),
    ("no-cache, stale-while-revalidate=30", 300, 0, 0),
    ("s-maxage=60, stale-if-error=900", 300, 0, 0),
])
def test_stale_windows(resp: str, grace: float, error_window: float, swr_window: float) -> None:
    cc = policy.parse_cache_control([("Cache-Control", resp)])
    assert policy.stale_if_error_window(cc, grace) == error_window
    assert policy.stale_while_revalidate_window(cc) == swr_window


@pytest.mark.parametrize("resp, req, expected", [
    (h("Vary: Accept-Encoding"), h("Accept-Encoding: gzip"), ["gzip"]),
    (h("Vary: accept-encoding, Accept"), h("Accept-Encoding: gzip"), [None, "gzip"]),  # sorted names
    (h("Vary: Accept"), [], [None]),                                                 # absent stays absent
    (h("Vary: Accept"), h("Accept: text/html,   application/json"), ["text/html, application/json"]),
])
def test_vary_values(resp: list, req: list, expected: list) -> None:
    assert policy.vary_values(req, policy.vary_names(resp)) == expected


def test_absent_vary_header_matches_only_absent() -> None:
    names = policy.vary_names(h("Vary: Accept-Language"))
    assert policy.vary_values([], names) != policy.vary_values(h("Accept-Language: "), names)


def test_credential_digest_differs_per_user() -> None:
    a = policy.credential_digest(h("Authorization: Bearer a"))
    assert a != policy.credential_digest(h("Authorization: Bearer b"))
    assert a != policy.credential_digest(h("Cookie: Bearer a"))
    assert a == policy.credential_digest(h("Authorization: Bearer a"))


@pytest.mark.parametrize("req, stored, expected", [
    (h('If-None-Match: "v1"'), h('ETag: "v1"'), True),
    (h('If-None-Match: W/"v1"'), h('ETag: "v1"'), True),           # weak comparison
    (h('If-None-Match: "v0", "v1"'), h('ETag: W/"v1"'), True),
    (h('If-None-Match: "v2"'), h('ETag: "v1"'), False),
    (h("If-None-Match: *"), h('ETag: "v1"'), True),
    (h('If-None-Match: "v1"'), [], False),
    # If-None-Match wins over If-Modified-Since
    (h('If-None-Match: "v2"', "If-Modified-Since: " + DATE), h('ETag: "v1"', "Last-Modified: " + DATE), False),
    (h("If-Modified-Since: " + DATE), h("Last-Modified: " + formatdate(T0 - 10, usegmt=True)), True),
    (h("If-Modified-Since: " + DATE), h("Last-Modified: " + formatdate(T0 + 10, usegmt=True)), False),
    (h("If-Modified-Since: " + DATE), h("Date: " + formatdate(T0 - 10, usegmt=True)), True),
    (h("If-Modified-Since: garbage"), h("Last-Modified: " + DATE), False),
    ([], h('ETag: "v1"'), False),
])
def test_not_modified(req: list, stored: list, expected: bool) -> None:
    assert policy.not_modified(req, stored) is expected


def test_validators_and_refresh() -> None:
    stored = h('ETag: "v1"', "Last-Modified: " + DATE, "Content-Length: 5", "Cache-Control: max-age=1", "X-A: 1")
    assert policy.validators(stored) == h('If-None-Match: "v1"', "If-Modified-Since: " + DATE)
    merged = policy.refresh_headers(stored, h("Cache-Control: max-age=99", "Content-Length: 0"))
    assert ("Cache-Control", "max-age=99") in merged and ("Content-Length", "5") in merged
    assert ("X-A", "1") in merged and ("Cache-Control", "max-age=1") not in merged
